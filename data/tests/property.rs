//! Property test: randomly damaged shards and images (bit flips, truncation at many offsets) never
//! panic, never hang, and every sample is either returned or counted.

mod common;

use common::synth_dataset;
use imagen_data::config::ColumnsConfig;
use imagen_data::decode::{decode_into, CropMode, ImageLimits, Transform};
use imagen_data::reader::{ShardReader, Unit};
use imagen_data::shards::ShardFormat;
use imagen_data::SkipStats;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SAMPLES: usize = 40;

fn transform() -> Transform {
    Transform {
        side: 8,
        crop: CropMode::Center,
        crop_at: 0.5,
        flip: false,
        limits: ImageLimits::default(),
        dct_scaling: true,
    }
}

/// Reads and decodes a whole shard: (samples returned, decoded, stats).
fn consume(path: &std::path::Path, format: ShardFormat) -> (usize, usize, SkipStats) {
    let mut stats = SkipStats::default();
    let (mut returned, mut decoded) = (0, 0);
    for (i, unit) in ShardReader::open(path, format, &ColumnsConfig::default()).enumerate() {
        assert!(i < 10 * SAMPLES, "a damaged shard must not yield units forever");
        match unit {
            Unit::Sample(s) => {
                returned += 1;
                let mut out = vec![0u8; 8 * 8 * 3];
                match decode_into(&s.image, &transform(), &mut out) {
                    Ok(()) => decoded += 1,
                    Err(f) => stats.add_skip(f.reason),
                }
            }
            Unit::Skip { reason, .. } => stats.add_skip(reason),
        }
    }
    (returned, decoded, stats)
}

#[test]
fn damaged_shards_never_panic_and_every_sample_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let mut rng = ChaCha8Rng::seed_from_u64(1234);
    for (container, ext, format) in
        [("wds", "tar", ShardFormat::Wds), ("parquet", "parquet", ShardFormat::Parquet)]
    {
        let clean =
            std::fs::read(dir.path().join(format!("{container}/train/00000.{ext}"))).unwrap();
        let damaged_path = dir.path().join(format!("damaged.{ext}"));
        for round in 0..120 {
            let mut bytes = clean.clone();
            let truncated = round % 2 == 0;
            if truncated {
                bytes.truncate(rng.random_range(0..clean.len()));
            } else {
                for _ in 0..rng.random_range(1..16) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
            }
            std::fs::write(&damaged_path, &bytes).unwrap();
            let (returned, decoded, stats) = consume(&damaged_path, format);
            assert!(returned <= SAMPLES);
            let shard_level = stats.total_skipped() - stats.sample_skips();
            let accounted = decoded as u64 + stats.sample_skips();
            if truncated {
                // Nothing is invented, and whatever was lost is counted.
                assert!(decoded <= SAMPLES);
                if decoded < SAMPLES {
                    assert!(
                        stats.total_skipped() >= 1,
                        "{container} round {round}: loss uncounted"
                    );
                }
            } else if shard_level == 0 {
                // Damage confined to samples: each of the 40 is returned-and-decoded or counted.
                assert_eq!(accounted, SAMPLES as u64, "{container} round {round}: {stats:?}");
            }
        }
    }
}

#[test]
fn images_truncated_at_every_offset_or_bit_flipped_never_panic() {
    let opts = imagen_data::synth::SynthOptions {
        side: 24,
        count: 2,
        shards: 1,
        heldout: 0,
        format: imagen_data::synth::SynthFormat::Wds,
        ..Default::default()
    };
    let mut images = Vec::new();
    for encoding in [imagen_data::synth::ImageEncoding::Jpg, imagen_data::synth::ImageEncoding::Png]
    {
        let sample = imagen_data::synth::SynthSample::new(
            &imagen_data::synth::SynthOptions { encoding, ..opts.clone() },
            0,
        )
        .unwrap();
        images.push(sample.image);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for image in &images {
        let mut failures = 0;
        for cut in 0..image.len() {
            let mut out = vec![0u8; 8 * 8 * 3];
            failures += decode_into(&image[..cut], &transform(), &mut out).is_err() as usize;
        }
        assert!(failures > image.len() / 2, "most truncations are detected");
        for _ in 0..300 {
            let mut bytes = image.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            let mut out = vec![0u8; 8 * 8 * 3];
            let _ = decode_into(&bytes, &transform(), &mut out);
        }
    }
}
