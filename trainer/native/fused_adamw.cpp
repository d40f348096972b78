// at::_fused_adamw_, the kernel behind torch.optim.AdamW(fused=True), which tch does not bind.
// One call updates a whole list of parameters (CPU: a vectorised loop; CUDA: multi-tensor
// launches), instead of about eight ATen ops per parameter.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <vector>

#include "error.h"

namespace {
std::vector<at::Tensor> gather(at::Tensor* const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(tensors[i] != nullptr && tensors[i]->defined(), "fused AdamW: tensor ", i,
                " is undefined");
    out.push_back(*tensors[i]);
  }
  return out;
}
}  // namespace

extern "C" {

// Whether libtorch registers a _fused_adamw_ kernel for device_type (a c10::DeviceType).
char* imagen_fused_adamw_available(int device_type, bool* available) {
  return imagen_guard([&] {
    *available = false;
    c10::DispatchKey key;
    switch (static_cast<c10::DeviceType>(device_type)) {
      case c10::DeviceType::CPU:
        key = c10::DispatchKey::CPU;
        break;
      case c10::DeviceType::CUDA:
        key = c10::DispatchKey::CUDA;
        break;
      default:
        return;
    }
    auto op = c10::Dispatcher::singleton().findSchema({"aten::_fused_adamw_", ""});
    *available = op.has_value() && op->hasKernelForDispatchKey(key);
  });
}

// One AdamW update (decoupled weight decay, non-amsgrad) of n parameters in place. `step` is
// the update's 1-based count, after the increment (as torch.optim.AdamW passes it).
char* imagen_fused_adamw_step(at::Tensor* const* params, at::Tensor* const* grads,
                              at::Tensor* const* exp_avgs, at::Tensor* const* exp_avg_sqs,
                              size_t n, double step, double lr, double beta1, double beta2,
                              double weight_decay, double eps) {
  return imagen_guard([&] {
    if (n == 0) {
      return;
    }
    c10::AutoGradMode no_grad(false);
    auto p = gather(params, n);
    auto g = gather(grads, n);
    auto m = gather(exp_avgs, n);
    auto v = gather(exp_avg_sqs, n);
    // The kernel reads one fp32 step counter per parameter; they all share this one.
    auto counter = at::full({}, step, at::TensorOptions().dtype(at::kFloat).device(p[0].device()));
    std::vector<at::Tensor> steps(n, counter);
    at::_fused_adamw_(p, g, m, v, {}, steps, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  });
}

}  // extern "C"
