//! What the network predicts, and how to turn its output back into (x0, eps).

use tch::Tensor;

use super::config::Objective;

/// The regression target for x_t = alpha x0 + sigma eps.
pub fn target(
    objective: Objective,
    x0: &Tensor,
    eps: &Tensor,
    alpha: &Tensor,
    sigma: &Tensor,
) -> Tensor {
    match objective {
        Objective::Eps => eps.shallow_clone(),
        Objective::X0 => x0.shallow_clone(),
        // Salimans & Ho 2022, §4: v = alpha eps - sigma x0.
        Objective::V => alpha * eps - sigma * x0,
    }
}

/// (x0, eps) implied by the network output `pred` at x_t. alpha and sigma broadcast to x_t.
pub fn x0_and_eps(
    objective: Objective,
    pred: &Tensor,
    x_t: &Tensor,
    alpha: &Tensor,
    sigma: &Tensor,
) -> (Tensor, Tensor) {
    match objective {
        Objective::Eps => ((x_t - sigma * pred) / alpha, pred.shallow_clone()),
        Objective::X0 => (pred.shallow_clone(), (x_t - alpha * pred) / sigma),
        // With alpha^2 + sigma^2 = 1: x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v.
        Objective::V => (alpha * x_t - sigma * pred, sigma * x_t + alpha * pred),
    }
}
