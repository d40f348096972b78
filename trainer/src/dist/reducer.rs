//! Gradient averaging for data parallelism: c10d's `Reducer`, the engine of PyTorch DDP. It
//! groups gradients into buckets and all-reduces each bucket from autograd hooks as soon as its
//! gradients exist, so communication overlaps the rest of the backward pass.

use tch::Tensor;

use super::process_group::{handles, ProcessGroup};
use crate::error::Result;
use crate::native::{self, check, ImagenReducer};

pub struct GradReducer {
    handle: *mut ImagenReducer,
    /// Number of all-reduce buckets.
    pub buckets: usize,
}

// SAFETY: used from the training thread only.
unsafe impl Send for GradReducer {}

impl GradReducer {
    /// Hooks `params` (every rank passes the same list, in the same order). Buckets hold
    /// `bucket_bytes`; the first one, reduced earliest, `first_bucket_bytes`.
    pub fn new(
        pg: &ProcessGroup,
        params: &[Tensor],
        bucket_bytes: usize,
        first_bucket_bytes: usize,
    ) -> Result<Self> {
        let refs: Vec<&Tensor> = params.iter().collect();
        let ptrs = handles(&refs);
        let mut handle = std::ptr::null_mut();
        let mut buckets = 0usize;
        // SAFETY: the tensor handles are live for the call (the reducer keeps its own references).
        check("gradient reducer", unsafe {
            native::imagen_reducer_new(
                pg.handle(),
                ptrs.as_ptr(),
                ptrs.len(),
                bucket_bytes as i64,
                first_bucket_bytes as i64,
                &mut handle,
                &mut buckets,
            )
        })?;
        Ok(Self { handle, buckets })
    }

    /// Arms the hooks for the next backward pass: its gradients leave it averaged over the
    /// group. Backward passes without this call (accumulation micro-steps) stay local.
    pub fn prepare_for_backward(&self) -> Result<()> {
        // SAFETY: the handle is live.
        check("gradient reducer", unsafe { native::imagen_reducer_prepare(self.handle) })
    }
}

impl Drop for GradReducer {
    fn drop(&mut self) {
        // SAFETY: created by imagen_reducer_new, released once.
        unsafe { native::imagen_reducer_free(self.handle) }
    }
}
