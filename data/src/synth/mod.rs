//! `imagen data synth`: a deterministic LAION-style dataset of simple scenes (see [`scene`]),
//! written as img2dataset-style parquet shards and/or WebDataset tars, with a held-out split.
//!
//! Layout under the output directory (the same for every format choice):
//! `parquet/train/00000.parquet` + `00000_stats.json`, `parquet/heldout/...`,
//! `wds/train/00000.tar` + `00000_stats.json`, `wds/heldout/...`, and `synth.json`.

pub mod scene;
mod write;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
pub use scene::{Scene, HELDOUT_BASE};
pub use write::SynthSample;

/// Which container(s) `synth` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthFormat {
    Parquet,
    Wds,
    Both,
}

/// The image payload encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageEncoding {
    Jpg,
    Png,
}

/// What to synthesise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthOptions {
    /// Image side in pixels.
    pub side: u32,
    /// Training samples (global indices `0..count`).
    pub count: u64,
    /// Training shards; samples are dealt in contiguous runs.
    pub shards: u32,
    /// Held-out samples (global indices `HELDOUT_BASE..HELDOUT_BASE + heldout`).
    pub heldout: u64,
    /// Seed of the attribute order.
    pub seed: u64,
    pub format: SynthFormat,
    pub encoding: ImageEncoding,
    /// JPEG quality (1-100).
    pub quality: u8,
    /// Rows per parquet row group.
    pub row_group_rows: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            side: 64,
            count: 1080,
            shards: 4,
            heldout: 108,
            seed: 0,
            format: SynthFormat::Both,
            encoding: ImageEncoding::Jpg,
            quality: 95,
            row_group_rows: 256,
        }
    }
}

/// Paths of the shards written, per split and container.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SynthOutput {
    pub train: Vec<PathBuf>,
    pub heldout: Vec<PathBuf>,
}

/// Writes the dataset under `out` and returns the shard paths.
pub fn synthesize(out: &Path, opts: &SynthOptions) -> Result<SynthOutput> {
    if opts.count == 0 || opts.shards == 0 || opts.side < 8 || opts.count >= HELDOUT_BASE {
        return Err(DataError::Invalid(format!(
            "synth needs count in 1..{HELDOUT_BASE}, shards >= 1 and side >= 8 (got count {}, shards {}, side {})",
            opts.count, opts.shards, opts.side
        )));
    }
    let per_shard = opts.count.div_ceil(opts.shards as u64);
    let mut jobs = Vec::new(); // (split, shard number, first global index, count)
    for s in 0..opts.shards as u64 {
        let first = s * per_shard;
        if first < opts.count {
            jobs.push(("train", s, first, per_shard.min(opts.count - first)));
        }
    }
    for s in 0..opts.heldout.div_ceil(per_shard) {
        let first = s * per_shard;
        jobs.push(("heldout", s, HELDOUT_BASE + first, per_shard.min(opts.heldout - first)));
    }
    let containers: &[&str] = match opts.format {
        SynthFormat::Parquet => &["parquet"],
        SynthFormat::Wds => &["wds"],
        SynthFormat::Both => &["parquet", "wds"],
    };
    for c in containers {
        for split in ["train", "heldout"] {
            let dir = out.join(c).join(split);
            std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        }
    }
    let written: Vec<Vec<(&str, PathBuf)>> = jobs
        .par_iter()
        .map(|&(split, shard, first, n)| {
            let samples: Vec<SynthSample> =
                (first..first + n).map(|i| SynthSample::new(opts, i)).collect::<Result<_>>()?;
            let mut paths = Vec::new();
            for c in containers {
                let dir = out.join(c).join(split);
                let path = match *c {
                    "parquet" => write::parquet_shard(&dir, shard, &samples, opts)?,
                    _ => write::tar_shard(&dir, shard, &samples, opts)?,
                };
                paths.push((split, path));
            }
            Ok(paths)
        })
        .collect::<Result<_>>()?;
    let mut result = SynthOutput::default();
    for (split, path) in written.into_iter().flatten() {
        if split == "train" { &mut result.train } else { &mut result.heldout }.push(path);
    }
    let manifest = serde_json::json!({
        "spec": "synthetic scenes v1",
        "options": opts,
        "heldout_base": HELDOUT_BASE,
        "train": result.train,
        "heldout": result.heldout,
    });
    let path = out.join("synth.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json"))
        .map_err(|e| DataError::io(&path, e))?;
    Ok(result)
}
