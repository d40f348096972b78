//! T5's feed-forward block: ReLU (v1.0) or gated GELU (v1.1), no biases.

use tch::{nn, Tensor};

use super::config::{FeedForward, T5Config};
use super::param::Params;

#[derive(Debug)]
pub enum T5FeedForward {
    Relu { wi: Tensor, wo: Tensor },
    GatedGelu { wi_0: Tensor, wi_1: Tensor, wo: Tensor },
}

impl T5FeedForward {
    /// `path` is the `DenseReluDense` module (Hugging Face keeps that name for both variants).
    pub(crate) fn new(path: nn::Path, cfg: &T5Config, kind: FeedForward, p: Params) -> Self {
        let w = |name: &str, dims: &[i64]| p.add(&(&path / name), "weight", dims);
        let wo = w("wo", &[cfg.d_model, cfg.d_ff]);
        match kind {
            FeedForward::Relu => Self::Relu { wi: w("wi", &[cfg.d_ff, cfg.d_model]), wo },
            FeedForward::GatedGelu => Self::GatedGelu {
                wi_0: w("wi_0", &[cfg.d_ff, cfg.d_model]),
                wi_1: w("wi_1", &[cfg.d_ff, cfg.d_model]),
                wo,
            },
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Self::Relu { wi, wo } => {
                x.linear::<&Tensor>(wi, None).relu().linear::<&Tensor>(wo, None)
            }
            Self::GatedGelu { wi_0, wi_1, wo } => {
                // Hugging Face's "gelu_new" is the tanh approximation of GELU.
                let gate = x.linear::<&Tensor>(wi_0, None).gelu("tanh");
                (gate * x.linear::<&Tensor>(wi_1, None)).linear::<&Tensor>(wo, None)
            }
        }
    }
}
