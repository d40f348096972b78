//! Bad input: each damaged unit is skipped and counted by reason; start-up errors are clear.

mod common;

use common::{fixture, read_all, synth_dataset};
use imagen_data::decode::{decode_into, CropMode, ImageLimits, Transform};
use imagen_data::reader::{ShardReader, Unit};
use imagen_data::shards::ShardFormat;
use imagen_data::{DataConfig, FilterConfig, Loader, SkipReason};

fn bad(name: &str) -> std::path::PathBuf {
    fixture(&format!("bad/{name}"))
}

#[test]
fn zero_byte_shards_are_empty() {
    for name in ["zero.tar", "zero.parquet"] {
        let (keys, stats) = read_all(&bad(name));
        assert!(keys.is_empty());
        assert_eq!(stats.count(SkipReason::EmptyShard), 1, "{name}");
        assert_eq!(stats.total_skipped(), 1);
    }
}

#[test]
fn truncated_tar_keeps_what_came_before_and_counts_the_cut() {
    let (keys, stats) = read_all(&bad("truncated.tar"));
    assert_eq!(keys, ["s/000000000"]);
    assert_eq!(stats.count(SkipReason::TruncatedShard), 1);
    assert_eq!(stats.total_skipped(), 1);
}

#[test]
fn damaged_parquet_footer_and_row_group() {
    let (keys, stats) = read_all(&bad("damaged_footer.parquet"));
    assert!(keys.is_empty());
    assert_eq!(stats.count(SkipReason::UnreadableShard), 1);
    let (keys, stats) = read_all(&bad("damaged_row_group.parquet"));
    assert_eq!(stats.count(SkipReason::DamagedRowGroup), 1, "{stats:?}");
    // Row groups 0 and 2 survive: 3 + 3 good rows (the failed download and null caption skipped).
    assert!(keys.len() <= 6 && keys.contains(&"000000000".to_string()), "{keys:?}");
    assert!(keys.contains(&"000000007".to_string()), "row group 2 is still read: {keys:?}");
}

#[test]
fn tiny_huge_and_truncated_images_are_skipped_by_reason() {
    let t = Transform {
        side: 16,
        crop: CropMode::Center,
        crop_at: 0.5,
        flip: false,
        limits: ImageLimits::default(),
        dct_scaling: true,
    };
    let mut good = Vec::new();
    let mut reasons = Vec::new();
    for unit in ShardReader::open(&bad("bad_images.tar"), ShardFormat::Wds) {
        let Unit::Sample(s) = unit else { panic!("every sample has image and caption") };
        let mut out = vec![0u8; 16 * 16 * 3];
        match decode_into(&s.image, &t, &mut out) {
            Ok(()) => good.push(s.key),
            Err(f) => reasons.push(f.reason),
        }
    }
    assert_eq!(good, ["e"]);
    assert_eq!(
        reasons,
        [
            SkipReason::ImageTooSmall,
            SkipReason::ImageTooLarge,
            SkipReason::ImageTooLarge,
            SkipReason::CorruptImage
        ]
    );
}

#[test]
fn loader_runs_through_a_mix_of_good_and_bad_shards_and_counts_everything() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let mut shards: Vec<String> = [
        "zero.tar",
        "zero.parquet",
        "truncated.tar",
        "damaged_footer.parquet",
        "damaged_row_group.parquet",
        "bad_images.tar",
    ]
    .iter()
    .map(|n| bad(n).display().to_string())
    .collect();
    shards.push(dir.path().join("wds/train/00000.tar").display().to_string());
    let cfg = DataConfig {
        shards,
        batch_size: 4,
        workers: 2,
        shuffle_buffer: 8,
        readers: 3,
        ..DataConfig::default()
    };
    let mut loader = Loader::new(&cfg, 16, 0, 1, None).unwrap();
    // One nominal epoch is ~ (9 + 4 + 5 + 8 + 40) / 4 batches; read two passes' worth.
    for _ in 0..30 {
        let b = loader.next_batch().unwrap();
        assert_eq!(b.len(), 4);
    }
    let stats = loader.stats();
    for reason in [
        SkipReason::EmptyShard,
        SkipReason::TruncatedShard,
        SkipReason::UnreadableShard,
        SkipReason::DamagedRowGroup,
        SkipReason::ImageTooSmall,
        SkipReason::ImageTooLarge,
        SkipReason::CorruptImage,
    ] {
        assert!(stats.count(reason) >= 1, "{reason:?} counted: {stats:?}");
    }
    assert_eq!(stats.good, 120);
}

#[test]
fn start_up_errors_name_the_problem() {
    let err = |cfg: DataConfig| Loader::new(&cfg, 16, 0, 1, None).err().unwrap().to_string();
    let e = err(DataConfig::default());
    assert!(e.contains("names no shard"), "{e}");
    let e = err(DataConfig {
        shards: vec!["/nonexistent/{00000..00003}.tar".into()],
        ..Default::default()
    });
    assert!(e.contains("/nonexistent/00000.tar: no such file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let shards = vec![dir.path().join("parquet/train").display().to_string()];
    let e = err(DataConfig {
        shards: shards.clone(),
        filters: FilterConfig { max_punsafe: Some(0.5), ..Default::default() },
        ..Default::default()
    });
    assert!(e.contains("max_punsafe needs column punsafe"), "{e}");
    // The synthetic shards have original sizes, so that filter is allowed and passes all.
    let ok = DataConfig {
        shards,
        batch_size: 4,
        filters: FilterConfig { min_original_side: Some(16.0), ..Default::default() },
        ..Default::default()
    };
    assert!(Loader::new(&ok, 16, 0, 1, None).unwrap().next_batch().is_ok());
}

#[test]
fn require_stats_skips_unfinished_shards() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    std::fs::remove_file(dir.path().join("wds/train/00001_stats.json")).unwrap();
    let cfg = DataConfig {
        shards: vec![dir.path().join("wds/train/{00000..00004}.tar").display().to_string()],
        require_stats: true,
        batch_size: 4,
        ..Default::default()
    };
    let mut loader = Loader::new(&cfg, 16, 0, 1, None).unwrap();
    assert_eq!(loader.epoch_batches(), 40);
    loader.next_batch().unwrap();
    assert_eq!(loader.stats().count(SkipReason::MissingStatsMarker), 1);
}

#[test]
fn a_shard_list_with_only_unusable_shards_errors_instead_of_hanging() {
    let cfg = DataConfig {
        shards: vec![
            bad("zero.tar").display().to_string(),
            bad("damaged_footer.parquet").display().to_string(),
        ],
        batch_size: 2,
        ..Default::default()
    };
    let mut loader = Loader::new(&cfg, 16, 0, 1, None).unwrap();
    let err = loader.next_batch().unwrap_err().to_string();
    assert!(err.contains("no usable sample"), "{err}");
    assert!(loader.next_batch().is_err());
}
