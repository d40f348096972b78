//! Keeping the predicted x0 in the data range while sampling (Imagen §2.3).

use tch::{Kind, Tensor};

use super::config::Thresholding;

/// Clip to [-1, 1].
pub fn static_threshold(x0: &Tensor) -> Tensor {
    x0.clamp(-1.0, 1.0)
}

/// Imagen §2.3: per sample, s = the `percentile` of |x0|, at least 1; clip to [-s, s] and
/// divide by s, which pushes saturated pixels inwards instead of flattening them.
pub fn dynamic_threshold(x0: &Tensor, percentile: f64) -> Tensor {
    let b = x0.size()[0];
    let kind = if x0.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let flat = x0.reshape([b, -1]).abs().to_kind(kind);
    let q = Tensor::from(percentile / 100.0).to_kind(kind).to_device(x0.device());
    let s = flat.quantile(&q, 1, false, "linear").clamp_min(1.0);
    let shape: Vec<i64> = std::iter::once(b).chain(std::iter::repeat_n(1, x0.dim() - 1)).collect();
    let s = s.view(shape.as_slice()).to_kind(x0.kind());
    let neg = -&s;
    x0.clamp_tensor(Some(&neg), Some(&s)) / s
}

/// Applies the configured thresholding.
pub fn apply(kind: Thresholding, x0: &Tensor, percentile: f64) -> Tensor {
    match kind {
        Thresholding::None => x0.shallow_clone(),
        Thresholding::Static => static_threshold(x0),
        Thresholding::Dynamic => dynamic_threshold(x0, percentile),
    }
}
