// Activation checkpointing as a libtorch autograd Function, restated from
// PyTorch's reentrant `torch.utils.checkpoint` (torch 2.11.0): the forward
// runs a segment without recording its graph and keeps only its input;
// the backward runs the segment again with the graph recorded, from that
// input, and back-propagates the incoming gradient through it (into the
// segment's parameters and its input). The segment is a Rust closure,
// reached through `run` and freed through `drop` when the graph is.
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <cstring>
#include <string>

extern "C" {
// Runs the segment on `input` (an at::Tensor* the callee owns) and returns a
// new at::Tensor*, or null after calling rgpt_autograd_fail(error, ...).
typedef void* (*rgpt_segment_run)(void* segment, void* input, void* error);
typedef void (*rgpt_segment_drop)(void* segment);

void rgpt_autograd_fail(void* error, const char* message, size_t len) {
  static_cast<std::string*>(error)->assign(message, len);
}
}

namespace {

struct Segment : torch::CustomClassHolder {
  Segment(void* data, rgpt_segment_run run, rgpt_segment_drop drop)
      : data(data), run(run), drop(drop) {}
  ~Segment() override { drop(data); }

  at::Tensor call(const at::Tensor& input) {
    std::string error;
    void* output = run(data, new at::Tensor(input), &error);
    if (output == nullptr) {
      throw std::runtime_error("checkpointed segment: " + error);
    }
    auto* tensor = static_cast<at::Tensor*>(output);
    at::Tensor result = *tensor;
    delete tensor;
    return result;
  }

  void* data;
  rgpt_segment_run run;
  rgpt_segment_drop drop;
};

struct Checkpoint : torch::autograd::Function<Checkpoint> {
  // Autograd runs a Function's forward with the graph off.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            c10::intrusive_ptr<Segment> segment, at::Tensor input) {
    ctx->saved_data["segment"] = c10::IValue::make_capsule(segment);
    ctx->save_for_backward({input});
    return segment->call(input);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto segment = c10::static_intrusive_pointer_cast<Segment>(
        ctx->saved_data["segment"].toCapsule());
    auto input = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor output;
    {
      at::AutoGradMode with_graph(true);
      output = segment->call(input);
    }
    torch::autograd::backward({output}, {grads[0]});
    return {at::Tensor(), input.grad()};
  }
};

char* message(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

}  // namespace

extern "C" {

void rgpt_autograd_free_error(char* error) { std::free(error); }

// Runs the segment on `input` (an at::Tensor*, borrowed): checkpointed when
// the graph is being recorded, plainly otherwise. On success `*output` is a
// new at::Tensor* and the result is null; otherwise a malloc'd message.
// The segment is freed (through `drop`) when nothing needs it any more.
char* rgpt_checkpoint(void* data, rgpt_segment_run run, rgpt_segment_drop drop, void* input,
                      void** output) {
  auto segment = c10::make_intrusive<Segment>(data, run, drop);
  try {
    at::Tensor x = *static_cast<at::Tensor*>(input);
    at::Tensor out;
    if (!at::GradMode::is_enabled()) {
      out = segment->call(x);
    } else {
      // Parameters inside the segment get gradients only if autograd
      // calls its backward, which it does only for an input that needs one.
      if (!x.requires_grad()) {
        x = x.detach().requires_grad_(true);
      }
      out = Checkpoint::apply(segment, x);
    }
    *output = new at::Tensor(out);
    return nullptr;
  } catch (const std::exception& e) {
    std::string text = e.what();
    return message(text.substr(0, text.find('\n')));
  }
}

}  // extern "C"
