//! Declarations matching `trainer/native/imagen_native.h`.

use std::ffi::{c_char, c_int, c_void};

/// Opaque handle to a `c10d::TCPStore`.
#[repr(C)]
pub struct ImagenStore {
    _private: [u8; 0],
}

/// Opaque c10d::ProcessGroup handle.
#[repr(C)]
pub struct ImagenPg {
    _private: [u8; 0],
}

/// Opaque c10d::Reducer handle.
#[repr(C)]
pub struct ImagenReducer {
    _private: [u8; 0],
}

/// `IMAGEN_BACKEND_*` of imagen_native.h.
pub const BACKEND_NCCL: c_int = 0;
pub const BACKEND_CPU_STORE: c_int = 1;

extern "C" {
    pub fn imagen_free(ptr: *mut c_void);

    pub fn imagen_autocast_set_dtype(device_type: c_int, dtype: c_int) -> *mut c_char;
    pub fn imagen_autocast_get_dtype(device_type: c_int, dtype: *mut c_int) -> *mut c_char;
    pub fn imagen_autocast_set_enabled(device_type: c_int, enabled: bool) -> *mut c_char;
    pub fn imagen_autocast_is_enabled(device_type: c_int, enabled: *mut bool) -> *mut c_char;
    pub fn imagen_autocast_increment_nesting() -> i64;
    pub fn imagen_autocast_decrement_nesting() -> i64;
    pub fn imagen_autocast_clear_cache();

    pub fn imagen_set_deterministic(deterministic: bool) -> *mut c_char;
    pub fn imagen_deterministic() -> bool;

    pub fn imagen_store_new(
        host: *const c_char,
        port: u16,
        is_server: bool,
        num_workers: i64,
        wait_workers: bool,
        timeout_ms: i64,
        out: *mut *mut ImagenStore,
    ) -> *mut c_char;
    pub fn imagen_store_set(
        store: *mut ImagenStore,
        key: *const c_char,
        data: *const u8,
        len: usize,
    ) -> *mut c_char;
    pub fn imagen_store_get(
        store: *mut ImagenStore,
        key: *const c_char,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;
    pub fn imagen_store_add(
        store: *mut ImagenStore,
        key: *const c_char,
        delta: i64,
        out: *mut i64,
    ) -> *mut c_char;
    pub fn imagen_store_check(
        store: *mut ImagenStore,
        key: *const c_char,
        present: *mut bool,
    ) -> *mut c_char;
    pub fn imagen_store_delete(
        store: *mut ImagenStore,
        key: *const c_char,
        deleted: *mut bool,
    ) -> *mut c_char;
    pub fn imagen_store_set_timeout(store: *mut ImagenStore, timeout_ms: i64) -> *mut c_char;
    pub fn imagen_store_port(store: *const ImagenStore) -> u16;
    pub fn imagen_store_free(store: *mut ImagenStore);

    pub fn imagen_cuda_memory(
        device: c_int,
        allocated: *mut i64,
        peak: *mut i64,
        reserved: *mut i64,
    ) -> *mut c_char;
    pub fn imagen_cuda_reset_peak_memory(device: c_int) -> *mut c_char;

    pub fn imagen_nccl_compiled() -> bool;
    pub fn imagen_nccl_version(version: *mut i64) -> *mut c_char;

    pub fn imagen_pg_new(
        store: *mut ImagenStore,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        backend: c_int,
        timeout_ms: i64,
        device_index: c_int,
        out: *mut *mut ImagenPg,
    ) -> *mut c_char;
    pub fn imagen_pg_allreduce(
        pg: *mut ImagenPg,
        tensors: *const *mut c_void,
        n: usize,
        average: bool,
    ) -> *mut c_char;
    pub fn imagen_pg_broadcast(
        pg: *mut ImagenPg,
        tensors: *const *mut c_void,
        n: usize,
        root: c_int,
        bucket_bytes: i64,
    ) -> *mut c_char;
    pub fn imagen_pg_barrier(pg: *mut ImagenPg) -> *mut c_char;
    pub fn imagen_pg_free(pg: *mut ImagenPg, clean: c_int);

    pub fn imagen_reducer_new(
        pg: *mut ImagenPg,
        params: *const *mut c_void,
        n: usize,
        bucket_bytes: i64,
        first_bucket_bytes: i64,
        out: *mut *mut ImagenReducer,
        buckets: *mut usize,
    ) -> *mut c_char;
    pub fn imagen_reducer_prepare(reducer: *mut ImagenReducer) -> *mut c_char;
    pub fn imagen_reducer_free(reducer: *mut ImagenReducer);
}
