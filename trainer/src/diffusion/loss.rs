//! Per-sample loss weighting.

use tch::Tensor;

use super::config::{LossWeighting, Objective};

/// Weight per sample for the MSE on `objective` at signal-to-noise ratio `snr` ([B]).
/// Min-SNR-gamma (Hang et al. 2023, eq. 8) weights the x0 error by min(SNR, gamma); expressed
/// on the eps target that is min(SNR, gamma) / SNR, on v it is min(SNR, gamma) / (SNR + 1).
pub fn loss_weight(
    weighting: LossWeighting,
    objective: Objective,
    snr: &Tensor,
    gamma: f64,
) -> Tensor {
    match weighting {
        LossWeighting::None => snr.ones_like(),
        LossWeighting::MinSnr => {
            let clipped = snr.clamp_max(gamma);
            match objective {
                Objective::Eps => clipped / snr,
                Objective::V => clipped / (snr + 1.0),
                Objective::X0 => clipped,
            }
        }
    }
}

/// Mean squared error over all but the batch dimension: [B, ...] -> [B].
pub fn per_sample_mse(pred: &Tensor, target: &Tensor) -> Tensor {
    let dims: Vec<i64> = (1..pred.dim() as i64).collect();
    (pred - target).square().mean_dim(dims.as_slice(), false, tch::Kind::Float)
}
