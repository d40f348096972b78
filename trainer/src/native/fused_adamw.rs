//! `at::_fused_adamw_` through `trainer/native/fused_adamw.cpp`: torch.optim.AdamW's fused
//! kernel, one call for a whole list of parameters.

use std::ffi::{c_char, c_int, c_void};

use tch::{Device, Tensor};

use super::check;
use crate::error::{Result, TrainerError};

extern "C" {
    fn imagen_fused_adamw_available(device_type: c_int, available: *mut bool) -> *mut c_char;
    fn imagen_fused_adamw_step(
        params: *const *const c_void,
        grads: *const *const c_void,
        exp_avgs: *const *const c_void,
        exp_avg_sqs: *const *const c_void,
        n: usize,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
}

/// AdamW's hyper-parameters for one fused update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdamWStep {
    /// 1-based count of this update (bias corrections use it).
    pub step: i64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// Whether this libtorch has a `_fused_adamw_` kernel for `device`.
pub fn fused_adamw_available(device: Device) -> bool {
    // c10::DeviceType: CPU 0, CUDA 1; the kernel exists for nothing else we run on.
    let device_type = match device {
        Device::Cpu => 0,
        Device::Cuda(_) => 1,
        _ => return false,
    };
    let mut available = false;
    // SAFETY: the out pointer is valid for the call.
    let ok = check("fused AdamW lookup", unsafe {
        imagen_fused_adamw_available(device_type, &mut available)
    });
    ok.is_ok() && available
}

/// Updates `params` (with their `grads` and moments, all the same length and device) in place.
pub fn fused_adamw_step(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    hp: &FusedAdamWStep,
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || exp_avgs.len() != n || exp_avg_sqs.len() != n {
        return Err(TrainerError::Native {
            what: "fused AdamW".into(),
            message: format!(
                "{n} params, {} grads, {} exp_avgs, {} exp_avg_sqs",
                grads.len(),
                exp_avgs.len(),
                exp_avg_sqs.len()
            ),
        });
    }
    let ptrs = |ts: &[Tensor]| -> Vec<*const c_void> {
        ts.iter().map(|t| t.as_ptr().cast::<c_void>()).collect()
    };
    let (p, g, m, v) = (ptrs(params), ptrs(grads), ptrs(exp_avgs), ptrs(exp_avg_sqs));
    // SAFETY: each array holds n live tch tensors (at::Tensor handles) for the whole call.
    check("fused AdamW", unsafe {
        imagen_fused_adamw_step(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            n,
            hp.step as f64,
            hp.lr,
            hp.beta1,
            hp.beta2,
            hp.weight_decay,
            hp.eps,
        )
    })
}
