//! What `imagen data inspect` reports: per shard its format, columns, good samples and skips by
//! reason (reading and, optionally, decoding every image), and example captions.

use rayon::prelude::*;
use serde::Serialize;

use crate::config::DataConfig;
use crate::decode::{decode_into, CropMode, Transform};
use crate::error::Result;
use crate::loader::resolve_shards;
use crate::reader::{ShardReader, Unit};
use crate::shards::ShardFormat;
use crate::stats::SkipStats;

#[derive(Clone, Debug, Serialize)]
pub struct ShardSummary {
    pub path: String,
    pub format: ShardFormat,
    /// Parquet columns, or the fields of the first WebDataset json.
    pub columns: Vec<String>,
    pub stats: SkipStats,
    /// What went wrong with the shard as a whole (unreadable, no image or caption column,
    /// damaged row groups), one line each.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub shards: Vec<ShardSummary>,
    pub total: SkipStats,
    pub example_captions: Vec<String>,
}

/// Reads every shard of `cfg.shards`; decodes each image at `cfg.side` when `decode` is set.
pub fn inspect(cfg: &DataConfig, decode: bool, examples: usize) -> Result<InspectReport> {
    let (shards, initial) = resolve_shards(cfg)?;
    let mut total = initial;
    let mut example_captions = Vec::new();
    // The loader's decode (a centre crop: where a crop falls decides no skip).
    let t = Transform { crop: CropMode::Center, ..cfg.transform(cfg.side) };
    let mut summaries = Vec::new();
    for e in &shards {
        let mut stats = SkipStats::default();
        let mut samples = Vec::new();
        let mut problems = Vec::new();
        for unit in e.open() {
            match unit {
                Unit::Sample(s) => samples.push(s),
                Unit::Skip { reason, detail, .. } => {
                    if reason.is_shard_level() {
                        problems.push(format!("{}: {detail}", reason.as_str()));
                    }
                    stats.add_skip(reason)
                }
            }
            if samples.len() >= 256 {
                check(&mut samples, decode, &t, &mut stats, &mut example_captions, examples);
            }
        }
        check(&mut samples, decode, &t, &mut stats, &mut example_captions, examples);
        total.good += stats.good;
        for (k, v) in &stats.skipped {
            *total.skipped.entry(k.clone()).or_default() += v;
        }
        summaries.push(ShardSummary {
            path: e.path.display().to_string(),
            format: e.format,
            columns: ShardReader::meta_fields(&e.path, e.format).unwrap_or_default(),
            stats,
            problems,
        });
    }
    Ok(InspectReport { shards: summaries, total, example_captions })
}

fn check(
    samples: &mut Vec<crate::reader::RawSample>,
    decode: bool,
    t: &Transform,
    stats: &mut SkipStats,
    examples: &mut Vec<String>,
    want: usize,
) {
    let results: Vec<_> = if decode {
        samples
            .par_iter()
            .map(|s| {
                let mut out = vec![0u8; t.side as usize * t.side as usize * 3];
                decode_into(&s.image, t, &mut out).err().map(|f| f.reason)
            })
            .collect()
    } else {
        vec![None; samples.len()]
    };
    for (s, r) in samples.drain(..).zip(results) {
        match r {
            None => {
                stats.good += 1;
                if examples.len() < want {
                    examples.push(s.caption);
                }
            }
            Some(reason) => stats.add_skip(reason),
        }
    }
}
