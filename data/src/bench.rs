//! Decode + resize + crop throughput on real shards (what `imagen data bench` reports).
//!
//! The compressed samples are read into memory first, so the figure is the decode work alone, as
//! in `scripts/bench_data.py`'s Pillow peer.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::config::DataConfig;
use crate::decode::{decode_into, ImageLimits, Transform};
use crate::error::{DataError, Result};
use crate::loader::resolve_shards;
use crate::reader::{RawSample, Unit};
use crate::stats::SkipStats;

/// What a benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub side: u32,
    pub threads: usize,
    pub dct_scaling: bool,
    /// Images decoded per timed pass.
    pub images: usize,
    pub passes: usize,
    /// Median seconds of one pass.
    pub seconds: f64,
    /// Images per second of the median pass.
    pub images_per_sec: f64,
    pub images_per_sec_per_thread: f64,
    /// Good samples and skips of reading and decoding one pass.
    pub stats: SkipStats,
}

/// Reads up to `limit` samples from the configured shards (in list order).
pub fn read_samples(
    cfg: &DataConfig,
    limit: usize,
    stats: &mut SkipStats,
) -> Result<Vec<RawSample>> {
    let (shards, initial) = resolve_shards(cfg)?;
    *stats = initial;
    let mut out = Vec::new();
    'shards: for e in shards.iter() {
        for unit in e.open() {
            match unit {
                Unit::Sample(s) => out.push(s),
                Unit::Skip { reason, .. } => stats.add_skip(reason),
            }
            if out.len() >= limit {
                break 'shards;
            }
        }
    }
    Ok(out)
}

/// Times decode + resize + centre crop of `samples` to `side` on `threads` threads, `passes` times
/// (after one untimed warm-up pass, which also fills `stats`), and reports the median pass.
/// `progress` is called per pass.
pub fn run(
    samples: &[RawSample],
    side: u32,
    threads: usize,
    passes: usize,
    dct_scaling: bool,
    mut stats: SkipStats,
    mut progress: impl FnMut(usize),
) -> Result<BenchReport> {
    if samples.is_empty() {
        return Err(DataError::Invalid("no sample to benchmark".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| DataError::Invalid(format!("bench pool: {e}")))?;
    let t = Transform {
        side,
        crop: crate::decode::CropMode::Center,
        crop_at: 0.5,
        flip: false,
        limits: ImageLimits::default(),
        dct_scaling,
    };
    let image = side as usize * side as usize * 3;
    let mut pixels = vec![0u8; samples.len() * image];
    let once = |pixels: &mut [u8]| -> Vec<Option<crate::SkipReason>> {
        pool.install(|| {
            pixels
                .par_chunks_mut(image)
                .zip(samples.par_iter())
                .map(|(out, s)| decode_into(&s.image, &t, out).err().map(|f| f.reason))
                .collect()
        })
    };
    for failure in once(&mut pixels) {
        match failure {
            None => stats.good += 1,
            Some(reason) => stats.add_skip(reason),
        }
    }
    let mut times = Vec::new();
    for p in 0..passes.max(1) {
        let start = Instant::now();
        once(&mut pixels);
        times.push(start.elapsed().as_secs_f64());
        progress(p + 1);
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    let images_per_sec = samples.len() as f64 / seconds;
    Ok(BenchReport {
        side,
        threads: threads.max(1),
        dct_scaling,
        images: samples.len(),
        passes: passes.max(1),
        seconds,
        images_per_sec,
        images_per_sec_per_thread: images_per_sec / threads.max(1) as f64,
        stats,
    })
}
