//! AdamW (Loshchilov & Hutter 2019) with its state held as named tensors, so that checkpoints
//! save and restore it exactly. The update matches `torch.optim.AdamW` (non-amsgrad): decoupled
//! weight decay, then bias-corrected first and second moments. The update runs either as a loop
//! of ATen ops per parameter or as libtorch's fused kernel (`train.optimizer_kernel`); both keep
//! the same state, so checkpoints do not depend on the kernel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{no_grad, Kind, Tensor};

use super::kernel::OptimizerKernel;
use crate::error::{Result, TrainerError};
use crate::native::{fused_adamw_step, FusedAdamWStep};

/// AdamW hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// First-moment decay. Default: 0.9.
    pub beta1: f64,
    /// Second-moment decay. Default: 0.999.
    pub beta2: f64,
    /// Added to the denominator for stability. Default: 1e-8.
    pub eps: f64,
    /// Decoupled weight decay, applied as p *= 1 - lr * weight_decay. Default: 0.0.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// One parameter and its moments.
struct Slot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    weight_decay: f64,
    lr_scale: f64,
}

/// A parameter group: parameters sharing a learning-rate multiplier and a weight decay (the
/// fine-tuned T5 has its own).
pub struct ParamGroup {
    pub params: Vec<(String, Tensor)>,
    pub lr_scale: f64,
    pub weight_decay: f64,
}

pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Number of updates applied so far (PyTorch's per-parameter `step`, shared here).
    steps: i64,
    /// Whether updates run through libtorch's `_fused_adamw_`.
    fused: bool,
}

impl AdamW {
    /// An optimizer over `params` (name, tensor) with the config's weight decay.
    pub fn new(cfg: &AdamWConfig, params: Vec<(String, Tensor)>) -> Self {
        Self::with_groups(
            cfg,
            vec![ParamGroup { params, lr_scale: 1.0, weight_decay: cfg.weight_decay }],
        )
    }

    pub fn with_groups(cfg: &AdamWConfig, groups: Vec<ParamGroup>) -> Self {
        let mut slots = Vec::new();
        for group in groups {
            for (name, param) in group.params {
                let exp_avg = param.zeros_like().detach();
                let exp_avg_sq = param.zeros_like().detach();
                slots.push(Slot {
                    name,
                    param,
                    exp_avg,
                    exp_avg_sq,
                    weight_decay: group.weight_decay,
                    lr_scale: group.lr_scale,
                });
            }
        }
        Self { cfg: cfg.clone(), slots, steps: 0, fused: false }
    }

    /// Chooses the update's implementation for the parameters' device (the loop until called).
    pub fn set_kernel(&mut self, kernel: OptimizerKernel) -> Result<()> {
        let device = self.slots.first().map_or(tch::Device::Cpu, |s| s.param.device());
        self.fused = kernel.use_fused(device)?;
        Ok(())
    }

    /// Whether updates run through the fused kernel.
    pub fn is_fused(&self) -> bool {
        self.fused
    }

    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The trained parameters, in optimizer order.
    pub fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.slots.iter().map(|s| &s.param)
    }

    /// Applies one update with learning rate `lr` to every parameter that has a gradient.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.steps += 1;
        if self.fused {
            self.step_fused(lr)
        } else {
            self.step_loop(lr);
            Ok(())
        }
    }

    fn step_loop(&mut self, lr: f64) {
        let t = self.steps as f64;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bias1 = 1.0 - b1.powf(t);
        let bias2_sqrt = (1.0 - b2.powf(t)).sqrt();
        no_grad(|| {
            for slot in &mut self.slots {
                let grad = slot.param.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lr * slot.lr_scale;
                if slot.weight_decay != 0.0 {
                    let _ = slot.param.g_mul_scalar_(1.0 - lr * slot.weight_decay);
                }
                let _ = slot.exp_avg.lerp_(&grad, 1.0 - b1);
                let _ = slot.exp_avg_sq.g_mul_scalar_(b2);
                let _ = slot.exp_avg_sq.addcmul_(&(&grad * (1.0 - b2)), &grad);
                let denom = (slot.exp_avg_sq.sqrt() / bias2_sqrt) + self.cfg.eps;
                let update = slot.exp_avg.divide(&denom) * (lr / bias1);
                let _ = slot.param.g_sub_(&update);
            }
        });
    }

    /// One kernel call per run of consecutive parameters that share a learning-rate scale and a
    /// weight decay (the kernel takes one of each), a dtype and a device (CUDA's kernel refuses
    /// lists that mix them, as torch's `_group_tensors_by_device_and_dtype` knows; the CPU's
    /// loops over the parameters and would not tell).
    fn step_fused(&mut self, lr: f64) -> Result<()> {
        let with_grad: Vec<(&Slot, Tensor)> =
            self.slots.iter().map(|s| (s, s.param.grad())).filter(|(_, g)| g.defined()).collect();
        let together = |a: &Slot, b: &Slot| {
            a.lr_scale == b.lr_scale
                && a.weight_decay == b.weight_decay
                && a.param.kind() == b.param.kind()
                && a.param.device() == b.param.device()
        };
        for run in with_grad.chunk_by(|(a, _), (b, _)| together(a, b)) {
            let hp = FusedAdamWStep {
                step: self.steps,
                lr: lr * run[0].0.lr_scale,
                beta1: self.cfg.beta1,
                beta2: self.cfg.beta2,
                weight_decay: run[0].0.weight_decay,
                eps: self.cfg.eps,
            };
            let handles = |f: fn(&Slot) -> &Tensor| -> Vec<Tensor> {
                run.iter().map(|(s, _)| f(s).shallow_clone()).collect()
            };
            let grads: Vec<Tensor> = run.iter().map(|(_, g)| g.shallow_clone()).collect();
            fused_adamw_step(
                &handles(|s| &s.param),
                &grads,
                &handles(|s| &s.exp_avg),
                &handles(|s| &s.exp_avg_sq),
                &hp,
            )?;
        }
        Ok(())
    }

    pub fn zero_grad(&mut self) {
        for slot in &mut self.slots {
            let mut grad = slot.param.grad();
            if grad.defined() {
                let _ = grad.detach_();
                let _ = grad.zero_();
            }
        }
    }

    /// The optimizer state as named tensors: `<param>.exp_avg`, `<param>.exp_avg_sq` and `step`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len() + 1);
        for slot in &self.slots {
            out.push((format!("{}.exp_avg", slot.name), slot.exp_avg.shallow_clone()));
            out.push((format!("{}.exp_avg_sq", slot.name), slot.exp_avg_sq.shallow_clone()));
        }
        out.push(("step".to_owned(), Tensor::from_slice(&[self.steps])));
        out
    }

    /// The moment tensors themselves (not copies), two per parameter in the parameters' order:
    /// what a collective fills in place to give every rank one rank's state.
    pub fn moments(&self) -> Vec<&Tensor> {
        self.slots.iter().flat_map(|s| [&s.exp_avg, &s.exp_avg_sq]).collect()
    }

    /// Sets the number of steps taken (the bias corrections' exponent), as a restored state does.
    pub fn set_steps(&mut self, steps: i64) {
        self.steps = steps;
    }

    /// Restores the state written by [`AdamW::state_tensors`]; every entry must be present with
    /// the parameter's shape.
    pub fn load_state_tensors(&mut self, tensors: Vec<(String, Tensor)>) -> Result<()> {
        let mut by_name: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        let steps = by_name.remove("step").ok_or_else(|| state_error("missing `step`"))?;
        no_grad(|| -> Result<()> {
            for slot in &mut self.slots {
                for (suffix, dst) in
                    [("exp_avg", &mut slot.exp_avg), ("exp_avg_sq", &mut slot.exp_avg_sq)]
                {
                    let key = format!("{}.{suffix}", slot.name);
                    let src = by_name
                        .remove(&key)
                        .ok_or_else(|| state_error(&format!("missing `{key}`")))?;
                    if src.size() != dst.size() {
                        return Err(state_error(&format!(
                            "`{key}` has shape {:?}, the parameter has {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.copy_(&src.to_kind(dst.kind()));
                }
            }
            Ok(())
        })?;
        if let Some(extra) = by_name.keys().next() {
            return Err(state_error(&format!("unexpected entry `{extra}`")));
        }
        self.steps = steps.to_kind(Kind::Int64).int64_value(&[0]);
        Ok(())
    }
}

fn state_error(message: &str) -> TrainerError {
    TrainerError::Checkpoint(format!("optimizer state: {message}"))
}
