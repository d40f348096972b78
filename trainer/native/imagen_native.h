// The C interface of imagen's native shim: the few libtorch features that tch does not bind.
// Every fallible function returns NULL on success or an error message allocated with malloc,
// which the caller releases with imagen_free.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void imagen_free(void* ptr);

// Autocast (at::autocast). device_type is a c10::DeviceType (0 = CPU, 1 = CUDA), dtype a
// c10::ScalarType (5 = Half, 6 = Float, 15 = BFloat16).
char* imagen_autocast_set_dtype(int device_type, int dtype);
char* imagen_autocast_get_dtype(int device_type, int* dtype);
char* imagen_autocast_set_enabled(int device_type, bool enabled);
char* imagen_autocast_is_enabled(int device_type, bool* enabled);
// Autocast caches casted weights while nested regions are open; PyTorch clears it when the
// outermost region exits.
int64_t imagen_autocast_increment_nesting(void);
int64_t imagen_autocast_decrement_nesting(void);
void imagen_autocast_clear_cache(void);

// c10d::TCPStore, the rendezvous store of torchrun and PyTorch DDP.
typedef struct imagen_store imagen_store;
// num_workers < 0 means "not known"; timeout_ms bounds connect and get.
char* imagen_store_new(const char* host, uint16_t port, bool is_server, int64_t num_workers,
                       bool wait_workers, int64_t timeout_ms, imagen_store** out);
char* imagen_store_set(imagen_store* store, const char* key, const uint8_t* data, size_t len);
// On success *data is a malloc'd buffer of *len bytes (release with imagen_free).
char* imagen_store_get(imagen_store* store, const char* key, uint8_t** data, size_t* len);
char* imagen_store_add(imagen_store* store, const char* key, int64_t delta, int64_t* out);
char* imagen_store_check(imagen_store* store, const char* key, bool* present);
uint16_t imagen_store_port(const imagen_store* store);
void imagen_store_free(imagen_store* store);

// CUDA caching-allocator bytes on `device`: currently allocated, peak allocated, reserved.
char* imagen_cuda_memory(int device, int64_t* allocated, int64_t* peak, int64_t* reserved);
char* imagen_cuda_reset_peak_memory(int device);

// Whether this build compiled c10d's ProcessGroupNCCL, and whether NCCL can run here (a CUDA
// device is present).
bool imagen_nccl_compiled(void);
char* imagen_nccl_version(int64_t* version);

#ifdef __cplusplus
}
#endif
