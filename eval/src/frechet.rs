//! The Fréchet distance between two Gaussians (Heusel et al. 2017, "GANs Trained by a Two
//! Time-Scale Update Rule Converge to a Local Nash Equilibrium", eq. 6):
//! `|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`.

use tch::{Kind, Tensor};

use crate::error::{EvalError, Result};
use crate::stats::ActivationStats;

/// FID between two sets of statistics, in f64.
///
/// pytorch-fid takes `scipy.linalg.sqrtm(S1 @ S2)`, which is not symmetric and can come out
/// complex or non-finite for near-singular covariances (it then retries with 1e-6 added to the
/// diagonals). Only the trace is needed, and for symmetric positive semi-definite S1, S2 the
/// eigenvalues of S1 S2 are those of the symmetric `A = S1^(1/2) S2 S1^(1/2)`, so
/// `tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(A))`: two symmetric eigendecompositions, with the
/// tiny negative eigenvalues of round-off clamped to zero. This matches scipy wherever scipy's
/// answer is real, and stays finite where it is not.
pub fn frechet_distance(a: &ActivationStats, b: &ActivationStats) -> Result<f64> {
    if a.dims != b.dims {
        return Err(EvalError::Invalid(format!(
            "statistics of different dimension: {} and {}",
            a.dims, b.dims
        )));
    }
    let _guard = tch::no_grad_guard();
    let diff: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let s1 = a.sigma_tensor();
    let s2 = b.sigma_tensor();
    let trace = |s: &Tensor| s.trace().double_value(&[]);
    let root1 = symmetric_sqrt(&s1)?;
    let inner = root1.matmul(&s2).matmul(&root1);
    let inner = (&inner + inner.transpose(0, 1)) * 0.5;
    let (eigenvalues, _) = inner.f_linalg_eigh("L")?;
    let tr_covmean = eigenvalues.clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[]);
    Ok(diff + trace(&s1) + trace(&s2) - 2.0 * tr_covmean)
}

/// The principal square root of a symmetric positive semi-definite matrix.
fn symmetric_sqrt(s: &Tensor) -> Result<Tensor> {
    let sym = (s + s.transpose(0, 1)) * 0.5;
    let (values, vectors) = sym.f_linalg_eigh("L")?;
    let roots = values.clamp_min(0.0).sqrt();
    Ok((&vectors * roots.unsqueeze(0)).matmul(&vectors.transpose(0, 1)))
}
