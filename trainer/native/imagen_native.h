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

// Deterministic algorithms (warn-only for ops without one) and deterministic cuDNN, with cuDNN's
// autotuning off; and whether both are on.
char* imagen_set_deterministic(bool deterministic);
bool imagen_deterministic(void);

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
char* imagen_store_delete(imagen_store* store, const char* key, bool* deleted);
// Bounds every later `get` (and waits inside collectives of the CPU backend).
char* imagen_store_set_timeout(imagen_store* store, int64_t timeout_ms);
uint16_t imagen_store_port(const imagen_store* store);
void imagen_store_free(imagen_store* store);

// CUDA caching-allocator bytes on `device`: currently allocated, peak allocated, reserved.
char* imagen_cuda_memory(int device, int64_t* allocated, int64_t* peak, int64_t* reserved);
char* imagen_cuda_reset_peak_memory(int device);

// Whether this build compiled c10d's ProcessGroupNCCL, and whether NCCL can run here (a CUDA
// device is present).
bool imagen_nccl_compiled(void);
char* imagen_nccl_version(int64_t* version);

// c10d::ProcessGroup over `store` (keys under `prefix`). NCCL binds the worker to CUDA device
// `device_index`; the CPU store backend exists for tests on machines without a GPU.
#define IMAGEN_BACKEND_NCCL 0
#define IMAGEN_BACKEND_CPU_STORE 1
typedef struct imagen_pg imagen_pg;
char* imagen_pg_new(imagen_store* store, const char* prefix, int rank, int size, int backend,
                    int64_t timeout_ms, int device_index, imagen_pg** out);
// Tensors are tch's `at::Tensor*` handles; reduced in place, one collective per tensor.
char* imagen_pg_allreduce(imagen_pg* pg, void* const* tensors, size_t n, bool average);
// In place from `root`, coalesced into buffers of `bucket_bytes` (c10d::broadcast_coalesced).
char* imagen_pg_broadcast(imagen_pg* pg, void* const* tensors, size_t n, int root,
                          int64_t bucket_bytes);
char* imagen_pg_barrier(imagen_pg* pg);
// `clean`: every rank finished, so the communicators are shut down gracefully; otherwise they
// are aborted (a graceful shutdown would wait for peers that are gone).
void imagen_pg_free(imagen_pg* pg, int clean);

// c10d::Reducer, DDP's gradient averaging: buckets of `bucket_bytes` (the first one
// `first_bucket_bytes`), all-reduced from autograd hooks while the backward pass runs.
typedef struct imagen_reducer imagen_reducer;
char* imagen_reducer_new(imagen_pg* pg, void* const* params, size_t n, int64_t bucket_bytes,
                         int64_t first_bucket_bytes, imagen_reducer** out, size_t* buckets);
// Call before a backward pass whose gradients must be averaged; backward passes without it
// (gradient-accumulation micro-steps) only accumulate locally.
char* imagen_reducer_prepare(imagen_reducer* reducer);
void imagen_reducer_free(imagen_reducer* reducer);

// A copy of host tensor `tensor` on CUDA device `device` through pinned memory, queued on the
// current stream without waiting for it (*out: a new at::Tensor*).
char* imagen_to_cuda_async(const void* tensor, int device, void** out);

// Activation checkpointing of a region written by the caller: `fn(closure, inputs, n, &out)`
// computes the region from borrowed `at::Tensor*` inputs and stores a new `at::Tensor*` in
// `out` (the shim takes it over); it returns NULL or a malloc'd error message. The shim owns
// `closure` from the call on and releases it with `drop` when the graph no longer needs it. With
// grad on, the forward keeps only the inputs and the backward runs the region again;
// `preserve_rng` replays the random state (dropout) that the forward saw.
typedef char* (*imagen_region_fn)(void* closure, void* const* inputs, size_t n, void** out);
typedef void (*imagen_region_drop)(void* closure);
char* imagen_checkpoint(imagen_region_fn fn, imagen_region_drop drop, void* closure,
                        void* const* inputs, size_t n, bool preserve_rng, void** output);
// How many regions backward passes have recomputed in this process.
int64_t imagen_checkpoint_recomputed(void);

#ifdef __cplusplus
}
#endif
