// The NCCL process group (torch 2.11.0's ProcessGroupNCCL, in
// libtorch_cuda), for CUDA tensors. Compiled whenever libtorch has CUDA and
// NCCL's header is at hand (the PyPI wheel carries both), so it builds on
// machines without a GPU.
#include "c10d.h"
#include "group.hpp"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

extern "C" char* rgpt_group_nccl_new(rgpt_store* store, int rank, int world_size,
                                     int64_t timeout_ms, int device, rgpt_group** out) {
  return rgpt_dist::run("NCCL process group", [&] {
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = std::chrono::milliseconds(timeout_ms);
    auto backend =
        c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, world_size, options);
    backend->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
    *out = new rgpt_group{backend, world_size, /*native_avg=*/true};
  });
}
