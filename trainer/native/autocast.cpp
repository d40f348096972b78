// tch's `autocast` turns CUDA autocast on with its default dtype, fp16; imagen trains in bf16,
// so the dtype is set here.
#include <ATen/autocast_mode.h>
#include <c10/util/Exception.h>

#include "error.h"
#include "imagen_native.h"

namespace {
c10::DeviceType device_of(int device_type) {
  auto device = static_cast<c10::DeviceType>(device_type);
  TORCH_CHECK(device == c10::DeviceType::CPU || device == c10::DeviceType::CUDA,
              "autocast: unsupported device type ", device_type);
  return device;
}
}  // namespace

extern "C" {

char* imagen_autocast_set_dtype(int device_type, int dtype) {
  return imagen_guard([&] {
    auto scalar = static_cast<at::ScalarType>(dtype);
    TORCH_CHECK(scalar == at::kHalf || scalar == at::kBFloat16 || scalar == at::kFloat,
                "autocast: unsupported dtype ", dtype);
    at::autocast::set_autocast_dtype(device_of(device_type), scalar);
  });
}

char* imagen_autocast_get_dtype(int device_type, int* dtype) {
  return imagen_guard([&] {
    *dtype = static_cast<int>(at::autocast::get_autocast_dtype(device_of(device_type)));
  });
}

char* imagen_autocast_set_enabled(int device_type, bool enabled) {
  return imagen_guard([&] { at::autocast::set_autocast_enabled(device_of(device_type), enabled); });
}

char* imagen_autocast_is_enabled(int device_type, bool* enabled) {
  return imagen_guard(
      [&] { *enabled = at::autocast::is_autocast_enabled(device_of(device_type)); });
}

int64_t imagen_autocast_increment_nesting(void) { return at::autocast::increment_nesting(); }

int64_t imagen_autocast_decrement_nesting(void) { return at::autocast::decrement_nesting(); }

void imagen_autocast_clear_cache(void) { at::autocast::clear_cache(); }

}  // extern "C"
