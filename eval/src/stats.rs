//! Activation statistics (mean and covariance, f64) and pytorch-fid's `.npz` layout for them.

use std::path::Path;

use ndarray::{Array1, Array2};
use ndarray_npy::{NpzReader, NpzWriter};
use tch::{Kind, Tensor};

use crate::error::{EvalError, Result};

/// The Gaussian FID fits to a set of activations: `mu` (d) and `sigma` (d x d, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationStats {
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub dims: usize,
}

impl ActivationStats {
    /// Mean and unbiased covariance (`np.cov(act, rowvar=False)`, ddof 1) of activations
    /// `[N, d]`, computed in f64 as pytorch-fid does. Needs N >= 2.
    pub fn from_activations(activations: &Tensor) -> Result<Self> {
        let (n, d) = activations.size2()?;
        if n < 2 {
            return Err(EvalError::Invalid(format!("statistics need at least 2 images, got {n}")));
        }
        let x = activations.to_device(tch::Device::Cpu).to_kind(Kind::Double);
        let mu = x.mean_dim(0, false, Kind::Double);
        let centred = &x - &mu;
        let sigma = centred.transpose(0, 1).matmul(&centred) / (n - 1) as f64;
        Ok(Self {
            mu: Vec::<f64>::try_from(&mu)?,
            sigma: Vec::<f64>::try_from(&sigma.flatten(0, -1))?,
            dims: d as usize,
        })
    }

    /// Reads pytorch-fid's statistics file: an `.npz` with float arrays `mu` (d) and `sigma`
    /// (d x d), compressed or not.
    pub fn read_npz(path: &Path) -> Result<Self> {
        let err = |message: String| EvalError::Stats { path: path.to_path_buf(), message };
        let file = std::fs::File::open(path)
            .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
        let mut npz = NpzReader::new(file).map_err(|e| err(format!("not an .npz file: {e}")))?;
        let mu: Array1<f64> = read_f64(&mut npz, "mu").map_err(err)?;
        let sigma: Array2<f64> = read_f64(&mut npz, "sigma").map_err(err)?;
        let d = mu.len();
        if sigma.dim() != (d, d) {
            return Err(err(format!(
                "sigma has shape {:?}, expected ({d}, {d}) to match mu",
                sigma.dim()
            )));
        }
        // A NaN here would come out as "FID: NaN" rather than as the damaged file it is.
        for (name, finite) in [
            ("mu", mu.iter().all(|v| v.is_finite())),
            ("sigma", sigma.iter().all(|v| v.is_finite())),
        ] {
            if !finite {
                return Err(err(format!(
                    "{name} holds a value that is not finite (NaN or infinity)"
                )));
            }
        }
        Ok(Self { mu: mu.to_vec(), sigma: sigma.iter().copied().collect(), dims: d })
    }

    /// Writes `mu` and `sigma` as float64 arrays in a compressed `.npz`, as pytorch-fid's
    /// `--save-stats` does (`np.savez_compressed(path, mu=mu, sigma=sigma)`).
    pub fn write_npz(&self, path: &Path) -> Result<()> {
        let err = |e: &dyn std::fmt::Display| EvalError::Stats {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let file = std::fs::File::create(path)
            .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
        let mut npz = NpzWriter::new_compressed(file);
        let mu = Array1::from(self.mu.clone());
        let sigma = Array2::from_shape_vec((self.dims, self.dims), self.sigma.clone())
            .map_err(|e| err(&e))?;
        npz.add_array("mu", &mu).map_err(|e| err(&e))?;
        npz.add_array("sigma", &sigma).map_err(|e| err(&e))?;
        npz.finish().map_err(|e| err(&e))?;
        Ok(())
    }

    /// `sigma` as a `[d, d]` f64 tensor.
    pub fn sigma_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.sigma).view([self.dims as i64, self.dims as i64])
    }
}

/// Reads array `name` as f64, accepting float32 arrays too (numpy writes whatever it had).
fn read_f64<D: ndarray::Dimension, R: std::io::Read + std::io::Seek>(
    npz: &mut NpzReader<R>,
    name: &str,
) -> std::result::Result<ndarray::Array<f64, D>, String> {
    let names = npz.names().map_err(|e| e.to_string())?;
    let entry = [name.to_owned(), format!("{name}.npy")]
        .into_iter()
        .find(|n| names.contains(n))
        .ok_or_else(|| format!("no array named {name:?} (has {names:?})"))?;
    match npz.by_name::<ndarray::OwnedRepr<f64>, D>(&entry) {
        Ok(a) => Ok(a),
        Err(first) => npz
            .by_name::<ndarray::OwnedRepr<f32>, D>(&entry)
            .map(|a| a.mapv(f64::from))
            .map_err(|_| format!("array {name:?}: {first}")),
    }
}
