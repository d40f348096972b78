// Compiling c10d's ProcessGroupNCCL header here proves that the CUDA and NCCL include dirs are
// complete on every machine, GPU or not; the distributed trainer builds on it.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "error.h"
#include "imagen_native.h"

extern "C" {

bool imagen_nccl_compiled(void) {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

char* imagen_nccl_version(int64_t* version) {
  // NCCL_VERSION_CODE is the version of the headers this shim was compiled against.
  return imagen_guard([&] { *version = NCCL_VERSION_CODE; });
}

}  // extern "C"
