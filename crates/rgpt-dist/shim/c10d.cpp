// PyTorch's c10d for Rust: a TCPStore for rendezvous and a process group
// (Gloo here, NCCL in nccl.cpp) running collectives on tch's tensors.
// Restated from c10d's public headers (torch 2.11.0's
// torch/csrc/distributed/c10d); the Rust side is src/group.rs.
#include "c10d.h"
#include "group.hpp"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

using rgpt_dist::run;
using std::chrono::milliseconds;

namespace {

void wait(const c10::intrusive_ptr<c10d::Work>& work, int64_t timeout_ms) {
  if (!work->wait(milliseconds(timeout_ms))) {
    throw std::runtime_error("timed out after " + std::to_string(timeout_ms) + " ms");
  }
}

c10d::ReduceOp reduce_op(rgpt_group* group, int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      // Gloo has no average: it sums, and finish_avg divides.
      return group->native_avg ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
    case 4:
      return c10d::ReduceOp::MAX;
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

void finish_avg(rgpt_group* group, int op, at::Tensor& tensor) {
  if (op == 1 && !group->native_avg) {
    tensor.div_(group->world_size);
  }
}

}  // namespace

extern "C" {

void rgpt_dist_free_error(char* message) { std::free(message); }
void rgpt_dist_free_bytes(uint8_t* value) { std::free(value); }

char* rgpt_store_new(const char* host, uint16_t port, int is_server, int world_size,
                     int64_t timeout_ms, rgpt_store** out) {
  return run("TCPStore", [&] {
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = is_server != 0;
    options.numWorkers = world_size;
    options.waitWorkers = false;
    options.timeout = milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(host, options);
    *out = new rgpt_store{store};
  });
}

char* rgpt_store_set(rgpt_store* store, const char* key, const uint8_t* value, size_t len) {
  return run("store set", [&] {
    store->store->set(key, std::vector<uint8_t>(value, value + len));
  });
}

char* rgpt_store_get(rgpt_store* store, const char* key, uint8_t** value, size_t* len) {
  return run("store get", [&] {
    auto bytes = store->store->get(key);
    *len = bytes.size();
    *value = static_cast<uint8_t*>(std::malloc(bytes.size() + 1));
    std::memcpy(*value, bytes.data(), bytes.size());
  });
}

void rgpt_store_free(rgpt_store* store) { delete store; }

char* rgpt_group_gloo_new(rgpt_store* store, int rank, int world_size, int64_t timeout_ms,
                          const char* hostname, rgpt_group** out) {
  return run("Gloo process group", [&] {
    auto options = c10d::ProcessGroupGloo::Options::create(milliseconds(timeout_ms));
    if (hostname != nullptr && hostname[0] != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, world_size,
                                                               options);
    *out = new rgpt_group{backend, world_size, /*native_avg=*/false};
  });
}

void rgpt_group_free(rgpt_group* group) { delete group; }

char* rgpt_all_reduce(rgpt_group* group, void* tensor, int op, int64_t timeout_ms) {
  return run("all_reduce", [&] {
    auto& t = *static_cast<at::Tensor*>(tensor);
    std::vector<at::Tensor> tensors{t};
    c10d::AllreduceOptions options;
    options.reduceOp = reduce_op(group, op);
    options.timeout = milliseconds(timeout_ms);
    wait(group->backend->allreduce(tensors, options), timeout_ms);
    finish_avg(group, op, t);
  });
}

char* rgpt_broadcast(rgpt_group* group, void* tensor, int root, int64_t timeout_ms) {
  return run("broadcast", [&] {
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = milliseconds(timeout_ms);
    wait(group->backend->broadcast(tensors, options), timeout_ms);
  });
}

char* rgpt_all_gather(rgpt_group* group, void* output, void* input, int64_t timeout_ms) {
  return run("all_gather", [&] {
    auto& out = *static_cast<at::Tensor*>(output);
    std::vector<at::Tensor> inputs{*static_cast<at::Tensor*>(input)};
    std::vector<std::vector<at::Tensor>> outputs{out.unbind(0)};
    c10d::AllgatherOptions options;
    options.timeout = milliseconds(timeout_ms);
    wait(group->backend->allgather(outputs, inputs, options), timeout_ms);
  });
}

char* rgpt_reduce_scatter(rgpt_group* group, void* output, void* input, int op,
                          int64_t timeout_ms) {
  return run("reduce_scatter", [&] {
    auto& out = *static_cast<at::Tensor*>(output);
    std::vector<at::Tensor> outputs{out};
    std::vector<std::vector<at::Tensor>> inputs{
        static_cast<at::Tensor*>(input)->chunk(group->world_size)};
    c10d::ReduceScatterOptions options;
    options.reduceOp = reduce_op(group, op);
    options.timeout = milliseconds(timeout_ms);
    wait(group->backend->reduce_scatter(outputs, inputs, options), timeout_ms);
    finish_avg(group, op, out);
  });
}

char* rgpt_barrier(rgpt_group* group, int64_t timeout_ms) {
  return run("barrier", [&] {
    c10d::BarrierOptions options;
    options.timeout = milliseconds(timeout_ms);
    wait(group->backend->barrier(options), timeout_ms);
  });
}

}  // extern "C"
