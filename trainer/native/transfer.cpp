// Host-to-GPU copies that do not stall the host: CUDA copies from ordinary (pageable) memory
// wait for the stream to drain first, so each one would hold the next step's kernels back until
// the GPU has finished the last. From pinned memory the copy is queued like a kernel, and the
// caching host allocator keeps the pinned block until the copy has run.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "error.h"
#include "imagen_native.h"

extern "C" char* imagen_to_cuda_async(const void* tensor, int device, void** out) {
  return imagen_guard([&] {
    const auto* t = static_cast<const at::Tensor*>(tensor);
    TORCH_CHECK(t != nullptr && t->defined() && t->is_cpu(), "async copy: expected a host tensor");
    at::Tensor pinned = t->is_pinned() ? *t : t->pin_memory();
    auto options = pinned.options().device(c10::Device(c10::kCUDA, device));
    *out = new at::Tensor(pinned.to(options, /*non_blocking=*/true));
  });
}
