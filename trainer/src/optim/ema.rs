//! Exponential moving average of the weights, kept in its own VarStore (it is never copied back
//! into the trained weights). Sampling and evaluation use it by default.

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, no_grad};

use crate::error::{Result, TrainerError};

/// `[train.ema]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    /// Decay, or the ceiling of the warm-up form. Default: 0.9999.
    pub decay: f64,
    /// When set, the decay warms up as `1 - (1 + step / gamma)^-power`, capped at `decay`
    /// (the form of Karras et al. / ema-pytorch). Default: none (constant decay).
    pub warmup_gamma: Option<f64>,
    /// Exponent of the warm-up form. Default: 0.6667 (2/3).
    pub warmup_power: f64,
    /// Update the average every this many optimizer steps. Default: 1.
    pub update_every: u64,
    /// Before this step the average is a plain copy of the weights. Default: 0.
    pub update_after_step: u64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            decay: 0.9999,
            warmup_gamma: None,
            warmup_power: 2.0 / 3.0,
            update_every: 1,
            update_after_step: 0,
        }
    }
}

impl EmaConfig {
    /// The decay used for the update at optimizer step `step` (1-based: after the first update).
    pub fn decay_at(&self, step: u64) -> f64 {
        match self.warmup_gamma {
            Some(gamma) => {
                let since = step.saturating_sub(self.update_after_step) as f64;
                let warm = 1.0 - (1.0 + since / gamma).powf(-self.warmup_power);
                warm.clamp(0.0, self.decay)
            }
            None => self.decay,
        }
    }
}

pub struct Ema {
    cfg: EmaConfig,
    /// Pairs of (trained variable, its average), matched by name.
    pairs: Vec<(tch::Tensor, tch::Tensor)>,
}

impl Ema {
    /// Starts the average of `model` in `ema` (same variable names): `ema` is set to a copy.
    pub fn new(cfg: &EmaConfig, model: &VarStore, ema: &VarStore) -> Result<Self> {
        let trained = model.variables();
        let averaged = ema.variables();
        let mut pairs = Vec::with_capacity(trained.len());
        let mut names: Vec<&String> = trained.keys().collect();
        names.sort();
        for name in names {
            let avg = averaged.get(name).ok_or_else(|| {
                TrainerError::Checkpoint(format!("EMA weights lack the variable `{name}`"))
            })?;
            pairs.push((trained[name].shallow_clone(), avg.shallow_clone()));
        }
        let ema = Self { cfg: cfg.clone(), pairs };
        ema.copy_from_model();
        Ok(ema)
    }

    fn copy_from_model(&self) {
        no_grad(|| {
            for (p, a) in &self.pairs {
                a.shallow_clone().copy_(p);
            }
        });
    }

    /// Call after optimizer step `step` (1-based).
    pub fn update(&self, step: u64) {
        if step <= self.cfg.update_after_step {
            self.copy_from_model();
            return;
        }
        if step % self.cfg.update_every.max(1) != 0 {
            return;
        }
        let weight = 1.0 - self.cfg.decay_at(step);
        no_grad(|| {
            for (p, a) in &self.pairs {
                // a <- decay * a + (1 - decay) * p
                let _ = a.shallow_clone().lerp_(&p.to_kind(a.kind()), weight);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn warmup_decay_closed_form() {
        let cfg = EmaConfig { warmup_gamma: Some(1.0), warmup_power: 0.75, ..Default::default() };
        assert!((cfg.decay_at(0) - 0.0).abs() < 1e-12);
        assert!((cfg.decay_at(15) - (1.0 - 16f64.powf(-0.75))).abs() < 1e-12);
        assert_eq!(cfg.decay_at(10_000_000_000), 0.9999);
    }

    #[test]
    fn average_follows_closed_form() {
        let model = VarStore::new(Device::Cpu);
        let ema_vs = VarStore::new(Device::Cpu);
        let w = model.root().zeros("w", &[3]);
        let _ = ema_vs.root().zeros("w", &[3]);
        no_grad(|| {
            let _ = w.shallow_clone().fill_(1.0);
        });
        let cfg = EmaConfig { decay: 0.5, update_every: 2, ..Default::default() };
        let ema = Ema::new(&cfg, &model, &ema_vs).unwrap();
        no_grad(|| {
            let _ = w.shallow_clone().fill_(3.0);
        });
        ema.update(1); // skipped: not a multiple of update_every
        ema.update(2); // 0.5 * 1 + 0.5 * 3
        let avg = ema_vs.variables()["w"].shallow_clone();
        assert!(avg.allclose(&Tensor::full([3], 2.0, (Kind::Float, Device::Cpu)), 0., 0., false));
        assert!(w.allclose(&Tensor::full([3], 3.0, (Kind::Float, Device::Cpu)), 0., 0., false));
    }
}
