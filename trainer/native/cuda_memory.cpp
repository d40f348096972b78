// CUDA caching-allocator statistics (what torch.cuda.memory_allocated and
// max_memory_allocated report), for the training logs and benchmarks.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

#include "error.h"
#include "imagen_native.h"

extern "C" char* imagen_cuda_memory(int device, int64_t* allocated, int64_t* peak,
                                    int64_t* reserved) {
  return imagen_guard([&] {
    TORCH_CHECK(device >= 0 && device < c10::cuda::device_count(), "no CUDA device ", device);
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
    constexpr auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[all].current;
    *peak = stats.allocated_bytes[all].peak;
    *reserved = stats.reserved_bytes[all].current;
  });
}

extern "C" char* imagen_cuda_reset_peak_memory(int device) {
  return imagen_guard([&] {
    TORCH_CHECK(device >= 0 && device < c10::cuda::device_count(), "no CUDA device ", device);
    c10::cuda::CUDACachingAllocator::resetPeakStats(device);
  });
}
