//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_` does it.

use tch::{no_grad, Kind, Tensor};

/// Scales all gradients so that their global L2 norm is at most `max_norm` (when `max_norm` is
/// positive) and returns the norm before clipping, as a 0-d f32 tensor on the parameters'
/// device: reading it is the caller's choice, so no host synchronisation happens here.
pub fn clip_grad_norm<'a>(params: impl Iterator<Item = &'a Tensor>, max_norm: f64) -> Tensor {
    let grads: Vec<Tensor> = params.map(|p| p.grad()).filter(|g| g.defined()).collect();
    no_grad(|| {
        let Some(first) = grads.first() else {
            return Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        };
        let squares: Vec<Tensor> =
            grads.iter().map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float)).collect();
        let total = Tensor::stack(&squares, 0).sum(Kind::Float).sqrt().to_device(first.device());
        if max_norm > 0.0 {
            // Same epsilon as PyTorch; clamp instead of a branch keeps it on the device.
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_(&coef.to_kind(g.kind()));
            }
        }
        total
    })
}
