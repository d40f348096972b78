//! A c10d `ProcessGroup` (NCCL on GPUs, the CPU store backend in tests) through the native shim.

use std::ffi::c_void;
use std::time::Duration;

use tch::Tensor;

use super::store::{c_string, duration_ms, TcpStore};
use crate::error::Result;
use crate::native::{self, check, ImagenPg};

/// The wire under a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// c10d's ProcessGroupNCCL; each worker owns one CUDA device.
    Nccl,
    /// Tensors through the rendezvous TCPStore, for CPU tests (not a performance path).
    CpuStore,
}

pub struct ProcessGroup {
    handle: *mut ImagenPg,
    pub rank: usize,
    pub world_size: usize,
    pub backend: Backend,
    /// Every rank finished its run: the group is shut down gracefully, not aborted.
    finished: bool,
}

// SAFETY: c10d process groups are used from one thread at a time here, and are thread-safe anyway.
unsafe impl Send for ProcessGroup {}

pub(crate) fn handles(tensors: &[&Tensor]) -> Vec<*mut c_void> {
    tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

impl ProcessGroup {
    /// Joins the group of `world_size` workers whose keys live under `prefix` in `store`.
    /// `device_index` is the CUDA device NCCL binds this worker to.
    pub fn new(
        store: &TcpStore,
        prefix: &str,
        rank: usize,
        world_size: usize,
        backend: Backend,
        timeout: Duration,
        device_index: usize,
    ) -> Result<Self> {
        let prefix = c_string("process group prefix", &format!("{}{prefix}", store.key_prefix()))?;
        let code = match backend {
            Backend::Nccl => native::BACKEND_NCCL,
            Backend::CpuStore => native::BACKEND_CPU_STORE,
        };
        let mut handle = std::ptr::null_mut();
        // SAFETY: pointers are valid for the call; the handle is owned by the returned value.
        check(&format!("{backend:?} process group (rank {rank} of {world_size})"), unsafe {
            native::imagen_pg_new(
                store.handle(),
                prefix.as_ptr(),
                rank as i32,
                world_size as i32,
                code,
                duration_ms(timeout),
                device_index as i32,
                &mut handle,
            )
        })?;
        Ok(Self { handle, rank, world_size, backend, finished: false })
    }

    /// Every rank finished: on drop the group is shut down gracefully instead of aborted.
    pub fn set_finished(&mut self) {
        self.finished = true;
    }

    pub(crate) fn handle(&self) -> *mut ImagenPg {
        self.handle
    }

    /// Sums (or averages) each tensor across the group, in place; returns when done.
    pub fn all_reduce(&self, tensors: &[&Tensor], average: bool) -> Result<()> {
        let ptrs = handles(tensors);
        // SAFETY: the handles are live tch tensors for the duration of the call.
        check("all-reduce", unsafe {
            native::imagen_pg_allreduce(self.handle, ptrs.as_ptr(), ptrs.len(), average)
        })
    }

    /// Overwrites every rank's tensors with rank `root`'s, in coalesced buffers of
    /// `bucket_bytes` (c10d's `broadcast_coalesced`, as DDP's start-up sync).
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize, bucket_bytes: usize) -> Result<()> {
        let ptrs = handles(tensors);
        // SAFETY: as in all_reduce.
        check("broadcast", unsafe {
            native::imagen_pg_broadcast(
                self.handle,
                ptrs.as_ptr(),
                ptrs.len(),
                root as i32,
                bucket_bytes as i64,
            )
        })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: the handle is live.
        check("barrier", unsafe { native::imagen_pg_barrier(self.handle) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by imagen_pg_new, released once.
        unsafe { native::imagen_pg_free(self.handle, self.finished.into()) }
    }
}
