//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use imagen_data::reader::{ShardReader, Unit};
use imagen_data::shards::ShardFormat;
use imagen_data::synth::{synthesize, ImageEncoding, SynthFormat, SynthOptions};
use imagen_data::SkipStats;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
}

/// A small synthetic dataset in both formats: 5 train shards of 40, 30 held-out samples.
pub fn synth_dataset(dir: &Path, side: u32) -> PathBuf {
    let opts = SynthOptions {
        side,
        count: 200,
        shards: 5,
        heldout: 30,
        seed: 11,
        format: SynthFormat::Both,
        encoding: ImageEncoding::Jpg,
        quality: 95,
        row_group_rows: 16,
    };
    synthesize(dir, &opts).unwrap();
    dir.to_path_buf()
}

/// All units of a shard: (good samples' keys, skip stats).
pub fn read_all(path: &Path) -> (Vec<String>, SkipStats) {
    let format = ShardFormat::from_path(path).unwrap();
    let mut keys = Vec::new();
    let mut stats = SkipStats::default();
    for unit in ShardReader::open(path, format) {
        match unit {
            Unit::Sample(s) => keys.push(s.key),
            Unit::Skip { reason, .. } => stats.add_skip(reason),
        }
    }
    (keys, stats)
}
