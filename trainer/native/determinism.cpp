// PyTorch's determinism switches (torch.use_deterministic_algorithms and
// torch.backends.cudnn.deterministic), which tch does not bind.
#include <ATen/Context.h>

#include "error.h"
#include "imagen_native.h"

extern "C" {

char* imagen_set_deterministic(bool deterministic) {
  return imagen_guard([&] {
    // warn_only: an op with no deterministic kernel warns (once) instead of stopping a run.
    at::globalContext().setDeterministicAlgorithms(deterministic, /*warn_only=*/true);
    at::globalContext().setDeterministicCuDNN(deterministic);
    if (deterministic) {
      at::globalContext().setBenchmarkCuDNN(false);
    }
  });
}

bool imagen_deterministic(void) {
  return at::globalContext().deterministicAlgorithms() &&
         at::globalContext().deterministicCuDNN();
}

}  // extern "C"
