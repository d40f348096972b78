// Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"), as
// torch.utils.checkpoint(use_reentrant=True) does it, for regions written in Rust: the forward
// runs without recording a graph and keeps only the region's inputs; the backward runs the region
// again with grad on, under the autocast settings and random-number state that the forward saw,
// and back-propagates through that copy. Parameters inside the region get their gradients from
// that inner backward pass, as in PyTorch.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/ivalue.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/engine.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "error.h"
#include "imagen_native.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Regions recomputed by backward passes so far (what tests and logs can observe).
std::atomic<int64_t> recomputed{0};

// The Rust closure that computes the region; released when the autograd node that owns it is.
struct Region : torch::CustomClassHolder {
  Region(imagen_region_fn fn, imagen_region_drop drop, void* closure)
      : fn(fn), drop(drop), closure(closure) {}
  ~Region() override { drop(closure); }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  at::Tensor run(const std::vector<at::Tensor>& inputs) const {
    std::vector<at::Tensor*> handles;
    handles.reserve(inputs.size());
    for (const auto& t : inputs) handles.push_back(new at::Tensor(t));
    void* output = nullptr;
    char* err = fn(closure, reinterpret_cast<void* const*>(handles.data()), handles.size(), &output);
    for (auto* h : handles) delete h;
    if (err != nullptr) {
      std::string message(err);
      free(err);
      TORCH_CHECK(false, message);
    }
    TORCH_CHECK(output != nullptr, "activation checkpoint: the region returned no tensor");
    auto* handle = static_cast<at::Tensor*>(output);
    at::Tensor result = std::move(*handle);
    delete handle;
    return result;
  }

  imagen_region_fn fn;
  imagen_region_drop drop;
  void* closure;
};

constexpr std::array<c10::DeviceType, 2> kAutocastDevices = {c10::DeviceType::CPU,
                                                             c10::DeviceType::CUDA};

// What the forward saw, restored for the recomputation.
struct ForwardState : torch::CustomClassHolder {
  std::array<bool, 2> autocast_enabled{};
  std::array<at::ScalarType, 2> autocast_dtype{};
  // (generator, state) pairs, filled only when the region draws random numbers (dropout).
  std::vector<std::pair<at::Generator, at::Tensor>> rng;
};

std::vector<at::Generator> generators_of(const std::vector<at::Tensor>& inputs) {
  std::vector<at::Generator> gens{at::globalContext().defaultGenerator(c10::DeviceType::CPU)};
  std::vector<c10::DeviceIndex> cuda;
  for (const auto& t : inputs) {
    if (t.defined() && t.is_cuda()) {
      auto index = t.device().index();
      if (std::find(cuda.begin(), cuda.end(), index) == cuda.end()) {
        cuda.push_back(index);
        gens.push_back(at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, index)));
      }
    }
  }
  return gens;
}

at::Tensor get_state(at::Generator& gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_state(at::Generator& gen, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

c10::intrusive_ptr<ForwardState> capture(const std::vector<at::Tensor>& inputs, bool rng) {
  auto state = c10::make_intrusive<ForwardState>();
  for (size_t i = 0; i < kAutocastDevices.size(); ++i) {
    state->autocast_enabled[i] = at::autocast::is_autocast_enabled(kAutocastDevices[i]);
    state->autocast_dtype[i] = at::autocast::get_autocast_dtype(kAutocastDevices[i]);
  }
  if (rng) {
    for (auto& gen : generators_of(inputs)) state->rng.emplace_back(gen, get_state(gen));
  }
  return state;
}

// Puts the forward's autocast settings and random state in place for the recomputation and
// takes them back afterwards (torch.utils.checkpoint's autocast context and fork_rng).
class Replay {
 public:
  explicit Replay(const ForwardState& seen) {
    for (size_t i = 0; i < kAutocastDevices.size(); ++i) {
      enabled_[i] = at::autocast::is_autocast_enabled(kAutocastDevices[i]);
      dtype_[i] = at::autocast::get_autocast_dtype(kAutocastDevices[i]);
      at::autocast::set_autocast_dtype(kAutocastDevices[i], seen.autocast_dtype[i]);
      at::autocast::set_autocast_enabled(kAutocastDevices[i], seen.autocast_enabled[i]);
    }
    at::autocast::increment_nesting();
    for (const auto& [gen, state] : seen.rng) {
      at::Generator g = gen;
      rng_.emplace_back(g, get_state(g));
      set_state(g, state);
    }
  }
  ~Replay() {
    for (auto& [gen, state] : rng_) set_state(gen, state);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    for (size_t i = 0; i < kAutocastDevices.size(); ++i) {
      at::autocast::set_autocast_enabled(kAutocastDevices[i], enabled_[i]);
      at::autocast::set_autocast_dtype(kAutocastDevices[i], dtype_[i]);
    }
  }
  Replay(const Replay&) = delete;
  Replay& operator=(const Replay&) = delete;

 private:
  std::array<bool, 2> enabled_{};
  std::array<at::ScalarType, 2> dtype_{};
  std::vector<std::pair<at::Generator, at::Tensor>> rng_;
};

struct Checkpoint : public torch::autograd::Function<Checkpoint> {
  static at::Tensor forward(AutogradContext* ctx, at::TensorList inputs,
                            c10::intrusive_ptr<Region> region,
                            c10::intrusive_ptr<ForwardState> seen) {
    // Function::apply runs this with grad off, so no graph is kept inside the region.
    ctx->save_for_backward(inputs.vec());
    ctx->saved_data["region"] = c10::IValue::make_capsule(region);
    ctx->saved_data["seen"] = c10::IValue::make_capsule(seen);
    return region->run(inputs.vec());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    // The inner pass accumulates into every parameter it reaches, which is right for
    // `backward()` and wrong for `grad()` or `backward(inputs=...)`: refuse those, as PyTorch's
    // reentrant checkpoint does.
    TORCH_CHECK(torch::autograd::Engine::get_default_engine().is_checkpoint_valid(),
                "activation checkpoint: only a plain backward() can pass through a checkpointed "
                "region (not grad() or backward(inputs=...))");
    // The engine runs a backward function with grad on exactly when the outer pass builds a
    // graph of its own (create_graph): the inner pass must then build one too.
    const bool create_graph = c10::GradMode::is_enabled();
    auto* region = static_cast<Region*>(ctx->saved_data["region"].toCapsule().get());
    auto* seen = static_cast<ForwardState*>(ctx->saved_data["seen"].toCapsule().get());
    std::vector<at::Tensor> inputs;
    for (const auto& saved : ctx->get_saved_variables()) {
      auto leaf = saved.detach();
      if (saved.requires_grad()) leaf.requires_grad_(true);
      inputs.push_back(leaf);
    }
    at::Tensor output;
    {
      Replay replay(*seen);
      at::AutoGradMode grad(true);
      output = region->run(inputs);
    }
    recomputed.fetch_add(1, std::memory_order_relaxed);
    TORCH_CHECK(output.requires_grad(),
                "activation checkpoint: the recomputed region does not depend on anything "
                "that takes a gradient");
    torch::autograd::backward({output}, {grad_outputs[0]}, std::nullopt, create_graph);
    variable_list grads;
    for (const auto& leaf : inputs) grads.push_back(leaf.requires_grad() ? leaf.grad() : at::Tensor());
    // The two non-tensor arguments of forward take no gradient.
    grads.emplace_back();
    grads.emplace_back();
    return grads;
  }
};

}  // namespace

extern "C" char* imagen_checkpoint(imagen_region_fn fn, imagen_region_drop drop, void* closure,
                                   void* const* inputs, size_t n, bool preserve_rng,
                                   void** output) {
  // The region owns the closure from here on, whatever happens.
  auto region = c10::make_intrusive<Region>(fn, drop, closure);
  return imagen_guard([&] {
    std::vector<at::Tensor> tensors;
    tensors.reserve(n);
    bool any_grad = false;
    for (size_t i = 0; i < n; ++i) {
      const auto* t = static_cast<const at::Tensor*>(inputs[i]);
      TORCH_CHECK(t != nullptr && t->defined(), "activation checkpoint: input ", i,
                  " is undefined");
      any_grad = any_grad || t->requires_grad();
      tensors.push_back(*t);
    }
    at::Tensor result;
    // Under no_grad there is no graph to save memory on. When no input takes a gradient,
    // recomputing would leave the region's parameters without theirs (the pitfall of PyTorch's
    // reentrant checkpoint), so the region runs as it is and keeps its graph.
    if (!c10::GradMode::is_enabled() || !any_grad) {
      result = region->run(tensors);
    } else {
      auto seen = capture(tensors, preserve_rng);
      result = Checkpoint::apply(at::TensorList(tensors), region, seen);
    }
    *output = new at::Tensor(std::move(result));
  });
}

extern "C" int64_t imagen_checkpoint_recomputed(void) {
  return recomputed.load(std::memory_order_relaxed);
}
