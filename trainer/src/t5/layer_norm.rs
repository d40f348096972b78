//! T5's layer norm: RMS only, no mean subtraction and no bias (Zhang & Sennrich 2019).

use tch::{nn, Kind, Tensor};

use super::param::Params;

#[derive(Debug)]
pub struct T5LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl T5LayerNorm {
    pub(crate) fn new(path: nn::Path, dim: i64, eps: f64, p: Params) -> Self {
        Self { weight: p.add(&path, "weight", &[dim]), eps }
    }

    /// As Hugging Face: the variance in fp32 whatever the input dtype, then back to the weight's
    /// dtype when that is half precision.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let variance = x.to_kind(Kind::Float).square().mean_dim(-1, true, Kind::Float);
        let mut y = x * (variance + self.eps).rsqrt();
        let kind = self.weight.kind();
        if matches!(kind, Kind::BFloat16 | Kind::Half) {
            y = y.to_kind(kind);
        }
        &self.weight * y
    }
}
