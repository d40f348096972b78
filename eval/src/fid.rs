//! FID of image folders: activations, statistics and the distance, as pytorch-fid's
//! `fid_score` computes them.

use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use crate::error::{EvalError, Result};
use crate::frechet::frechet_distance;
use crate::images::{list_images, load_rgb, to_tensor};
use crate::inception::FidInception;
use crate::stats::ActivationStats;

/// pytorch-fid's default batch size.
pub const DEFAULT_BATCH_SIZE: usize = 50;

/// Activations of a folder's images and what was not used.
#[derive(Debug)]
pub struct FolderActivations {
    /// `[N, dims]` f32 on the CPU, in sorted file order.
    pub activations: Tensor,
    /// Images used.
    pub images: usize,
    /// Files without an image extension, not read.
    pub skipped: Vec<PathBuf>,
    /// Files with an image extension that did not decode (skipped with a warning).
    pub unreadable: Vec<PathBuf>,
}

/// Statistics of one side of an FID: a folder's, or loaded from an `.npz`.
#[derive(Debug, Clone)]
pub struct FidSide {
    pub stats: ActivationStats,
    /// Images the statistics come from; `None` when read from an `.npz`.
    pub images: Option<usize>,
    pub skipped: usize,
    pub unreadable: usize,
}

/// Runs `model` over the images of `dir`, in batches of up to `batch_size` consecutive images of
/// the same size, on `device`.
pub fn folder_activations(
    model: &FidInception,
    dir: &Path,
    batch_size: usize,
    device: Device,
) -> Result<FolderActivations> {
    let folder = list_images(dir)?;
    let mut unreadable = Vec::new();
    let mut batch: Vec<image::RgbImage> = Vec::new();
    let mut outputs = Vec::new();
    let flush = |batch: &mut Vec<image::RgbImage>, outputs: &mut Vec<Tensor>| {
        if !batch.is_empty() {
            let x = to_tensor(batch).to_device(device);
            outputs.push(model.features(&x).to_device(Device::Cpu));
            batch.clear();
        }
    };
    for path in &folder.images {
        let img = match load_rgb(path) {
            Ok(img) => img,
            Err(err) => {
                tracing::warn!("skipping {}: {err}", path.display());
                unreadable.push(path.clone());
                continue;
            }
        };
        if batch.len() == batch_size.max(1)
            || batch.first().is_some_and(|b| b.dimensions() != img.dimensions())
        {
            flush(&mut batch, &mut outputs);
        }
        batch.push(img);
    }
    flush(&mut batch, &mut outputs);
    if outputs.is_empty() {
        return Err(EvalError::Invalid(format!("{}: no readable images", dir.display())));
    }
    let activations = Tensor::cat(&outputs, 0);
    let images = activations.size()[0] as usize;
    Ok(FolderActivations { activations, images, skipped: folder.skipped, unreadable })
}

/// Statistics of a folder, warning when there are fewer images than feature dimensions (the
/// covariance is then singular and the FID unreliable).
pub fn folder_statistics(
    model: &FidInception,
    dir: &Path,
    batch_size: usize,
    device: Device,
) -> Result<FidSide> {
    let acts = folder_activations(model, dir, batch_size, device)?;
    let dims = model.dims().dims();
    // N images give a covariance of rank at most N - 1: singular unless N exceeds the dims.
    if acts.images <= dims {
        tracing::warn!(
            "{}: {} images for {dims}-d features: the covariance is singular and the FID \
             unreliable; use more images than dimensions, or a smaller --dims",
            dir.display(),
            acts.images
        );
    }
    Ok(FidSide {
        stats: ActivationStats::from_activations(&acts.activations)?,
        images: Some(acts.images),
        skipped: acts.skipped.len(),
        unreadable: acts.unreadable.len(),
    })
}

/// One side of an FID from a path: an `.npz` of statistics (pytorch-fid's layout) or a folder.
pub fn side_statistics(
    model: &FidInception,
    path: &Path,
    batch_size: usize,
    device: Device,
) -> Result<FidSide> {
    if !path.exists() {
        return Err(EvalError::Invalid(format!("{}: no such file or folder", path.display())));
    }
    if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz")) {
        let stats = ActivationStats::read_npz(path)?;
        if stats.dims != model.dims().dims() {
            return Err(EvalError::Stats {
                path: path.to_path_buf(),
                message: format!(
                    "statistics are {}-d but --dims is {}",
                    stats.dims,
                    model.dims().dims()
                ),
            });
        }
        return Ok(FidSide { stats, images: None, skipped: 0, unreadable: 0 });
    }
    if !path.is_dir() {
        return Err(EvalError::Invalid(format!(
            "{}: neither an image folder nor an .npz of statistics",
            path.display()
        )));
    }
    folder_statistics(model, path, batch_size, device)
}

/// FID between two sides' statistics.
pub fn fid(a: &FidSide, b: &FidSide) -> Result<f64> {
    frechet_distance(&a.stats, &b.stats)
}
