//! Activation checkpointing of Rust regions through `trainer/native/activation_checkpoint.cpp`
//! (Chen et al. 2016; PyTorch's `torch.utils.checkpoint` with `use_reentrant=True`): a region's
//! forward keeps only its inputs, and the backward pass runs it again to get the activations it
//! needs. Less memory for a larger batch, at the price of a second forward of the region.

use std::ffi::{c_char, c_void, CString};
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use imagen_data::error::panic_message;
use tch::Tensor;

use super::check;
use crate::error::Result;

type RegionFn = unsafe extern "C" fn(
    closure: *mut c_void,
    inputs: *const *mut c_void,
    n: usize,
    out: *mut *mut c_void,
) -> *mut c_char;
type RegionDrop = unsafe extern "C" fn(closure: *mut c_void);

extern "C" {
    fn imagen_checkpoint(
        fn_: RegionFn,
        drop: RegionDrop,
        closure: *mut c_void,
        inputs: *const *mut c_void,
        n: usize,
        preserve_rng: bool,
        output: *mut *mut c_void,
    ) -> *mut c_char;
    fn imagen_checkpoint_recomputed() -> i64;
}

/// How many checkpointed regions backward passes have recomputed in this process so far.
pub fn checkpoint_recomputations() -> i64 {
    // SAFETY: reads an atomic counter.
    unsafe { imagen_checkpoint_recomputed() }
}

/// The region as the shim holds it (a thin pointer to the boxed closure).
type Region = Box<dyn Fn(&[Tensor]) -> Tensor + Send>;

/// A message the shim releases with `free`.
fn malloc_message(message: &str) -> *mut c_char {
    let text = CString::new(message.replace('\0', " ")).expect("NULs were replaced");
    // SAFETY: strdup copies a valid NUL-terminated string into malloc'd memory.
    unsafe { libc::strdup(text.as_ptr()) }
}

/// Called by the shim, in the forward and again in the backward pass. A panic is turned into an
/// error message: it must not unwind through C++.
unsafe extern "C" fn run_region(
    closure: *mut c_void,
    inputs: *const *mut c_void,
    n: usize,
    out: *mut *mut c_void,
) -> *mut c_char {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the shim passes the closure it was given and `n` valid tensor handles that it
        // keeps for the call; each is copied into a handle of our own, never freed here.
        let region = unsafe { &*(closure as *const Region) };
        let tensors: Vec<Tensor> = (0..n)
            .map(|i| {
                let borrowed = unsafe { Tensor::from_ptr((*inputs.add(i)).cast()) };
                ManuallyDrop::new(borrowed).shallow_clone()
            })
            .collect();
        region(&tensors)
    }));
    match result {
        Ok(mut output) => {
            // SAFETY: the handle is handed over to the shim, which deletes it.
            unsafe { *out = output.as_mut_ptr().cast() };
            std::mem::forget(output);
            std::ptr::null_mut()
        }
        Err(panic) => {
            malloc_message(&format!("in a checkpointed region: {}", panic_message(&*panic)))
        }
    }
}

unsafe extern "C" fn drop_region(closure: *mut c_void) {
    // SAFETY: the shim calls this once, with the pointer made by `Box::into_raw` below.
    drop(unsafe { Box::from_raw(closure as *mut Region) });
}

/// `region(inputs)`, checkpointed when grad mode is on and some input takes a gradient: the
/// forward keeps no activations inside the region, and the backward recomputes them under the
/// forward's autocast settings (and, with `preserve_rng`, its random state, for dropout).
/// Parameters that the region reads get their gradients as if it had not been checkpointed.
/// Without grad the region simply runs. The region must compute the same thing both times:
/// everything it depends on that changes between calls must be one of `inputs`.
///
/// Only a plain `backward()` may pass through the region (not `grad()` or `backward(inputs=...)`,
/// which would get gradients accumulated into the parameters as well; an error says so).
///
/// The region may be called on autograd's threads (CUDA's backward runs on a device thread),
/// hence `Send`; it is called by one thread at a time (the forward, then each backward pass
/// through it, which the caller runs one after another), and released with its graph.
pub fn checkpointed<F>(inputs: &[&Tensor], preserve_rng: bool, region: F) -> Result<Tensor>
where
    F: Fn(&[Tensor]) -> Tensor + Send + 'static,
{
    let boxed: Region = Box::new(region);
    let closure = Box::into_raw(Box::new(boxed)).cast::<c_void>();
    let handles: Vec<*mut c_void> = inputs.iter().map(|t| t.as_ptr() as *mut c_void).collect();
    let mut output: *mut c_void = std::ptr::null_mut();
    // SAFETY: the shim takes ownership of `closure` (and frees it through `drop_region`), reads
    // the handles during the call, and returns a new handle in `output` on success.
    check("activation checkpoint", unsafe {
        imagen_checkpoint(
            run_region,
            drop_region,
            closure,
            handles.as_ptr(),
            handles.len(),
            preserve_rng,
            &mut output,
        )
    })?;
    // SAFETY: on success `output` is a tensor handle allocated by the shim, now ours.
    Ok(unsafe { Tensor::from_ptr(output.cast()) })
}

/// `run(block, inputs)`, checkpointed when `enabled` (see [`checkpointed`]): how the U-Net and
/// the T5 encoder run each of their blocks. `what` names the block in the panic that a failing
/// region raises, as tch's own modules panic.
pub fn maybe_checkpointed<M, F>(
    enabled: bool,
    block: &Arc<M>,
    inputs: &[&Tensor],
    preserve_rng: bool,
    what: &str,
    run: F,
) -> Tensor
where
    M: Send + Sync + 'static,
    F: Fn(&M, &[&Tensor]) -> Tensor + Send + 'static,
{
    if !enabled {
        return run(block, inputs);
    }
    let block = Arc::clone(block);
    let region = move |t: &[Tensor]| run(&block, &t.iter().collect::<Vec<_>>());
    checkpointed(inputs, preserve_rng, region).unwrap_or_else(|e| panic!("{what}: {e}"))
}
