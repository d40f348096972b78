//! Learning-rate schedules: linear warm-up, then constant or cosine decay.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Hold the peak rate after warm-up (the Imagen paper's choice).
    Constant,
    /// Half-cosine from the peak rate down to `min_lr_ratio * lr` at `total_steps`.
    Cosine,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub warmup_steps: u64,
    pub kind: ScheduleKind,
    pub total_steps: u64,
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    /// The rate for the update that takes the step counter from `step` to `step + 1`.
    pub fn at(&self, step: u64) -> f64 {
        if self.warmup_steps > 0 && step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let min = self.lr * self.min_lr_ratio;
                min + 0.5 * (self.lr - min) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule {
            lr: 1.0,
            warmup_steps: 4,
            kind: ScheduleKind::Cosine,
            total_steps: 14,
            min_lr_ratio: 0.1,
        };
        assert_eq!(s.at(0), 0.25);
        assert_eq!(s.at(3), 1.0);
        assert!((s.at(4) - 1.0).abs() < 1e-12);
        // Halfway through the decay: the midpoint of peak and floor.
        assert!((s.at(9) - 0.55).abs() < 1e-12);
        assert!((s.at(14) - 0.1).abs() < 1e-12);
        assert!((s.at(100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn constant_after_warmup() {
        let s = LrSchedule {
            lr: 2e-4,
            warmup_steps: 0,
            kind: ScheduleKind::Constant,
            total_steps: 10,
            min_lr_ratio: 0.0,
        };
        assert_eq!(s.at(0), 2e-4);
        assert_eq!(s.at(1_000_000), 2e-4);
    }
}
