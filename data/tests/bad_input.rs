//! Bad input: each damaged unit is skipped and counted by reason; start-up errors are clear.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{
    fixture, read_all, synth_dataset, write_parquet, write_parquet_groups, write_sidecar_parquet,
};
use imagen_data::config::ColumnsConfig;
use imagen_data::decode::{decode_into, decode_rgb, CropMode, ImageLimits, Transform};
use imagen_data::reader::{count_samples, ShardReader, Unit};
use imagen_data::shards::{expand_shards, ShardFormat};
use imagen_data::stream::{ShardEntry, StreamSpec};
use imagen_data::synth::{SynthOptions, SynthSample};
use imagen_data::{DataConfig, FilterConfig, Loader, SkipReason};

fn bad(name: &str) -> std::path::PathBuf {
    fixture(&format!("bad/{name}"))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// A ustar header for `name` with a raw 12-byte size field (octal, or GNU base-256).
fn tar_header(name: &str, size: [u8; 12], kind: u8) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(&size);
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn octal_size(n: usize) -> [u8; 12] {
    format!("{n:011o}\0").into_bytes().try_into().unwrap()
}

/// A tar member: its header and its data padded to whole blocks.
fn tar_member(name: &str, data: &[u8], kind: u8) -> Vec<u8> {
    let mut m = tar_header(name, octal_size(data.len()), kind);
    m.extend_from_slice(data);
    m.resize(m.len().next_multiple_of(512), 0);
    m
}

/// A JPEG of a synthetic scene, `side` pixels square.
fn scene_jpeg(side: u32) -> Vec<u8> {
    SynthSample::new(&SynthOptions { side, ..Default::default() }, 3).unwrap().image
}

/// A textured JPEG (x/y gradients that wrap), `side` pixels square: unlike the flat synthetic
/// scenes, most of its bytes are entropy-coded data, so a cut at a third falls inside the scan.
fn textured_jpeg(side: u32) -> Vec<u8> {
    let mut pixels = Vec::new();
    for y in 0..side {
        for x in 0..side {
            pixels.extend([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x + y) * 3 % 256) as u8]);
        }
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(&pixels, side, side, image::ExtendedColorType::Rgb8)
        .unwrap();
    jpeg
}

/// The first seed whose passes `passes` all deal rank 0 of `world` shard 0 of `shards`.
fn seed_dealing_shard_0(shards: &[PathBuf], world: usize, passes: u64) -> u64 {
    let entries = shards
        .iter()
        .map(|p| ShardEntry {
            path: p.clone(),
            format: ShardFormat::from_path(p).unwrap(),
            columns: ColumnsConfig::default(),
        })
        .collect();
    let mut spec = StreamSpec {
        shards: Arc::new(entries),
        seed: 0,
        rank: 0,
        world,
        readers: 1,
        window: 8,
        flip: false,
        filters: FilterConfig::default(),
    };
    (0..1000)
        .find(|&seed| {
            spec.seed = seed;
            (0..passes).all(|p| spec.deal(p).concat() == [0])
        })
        .expect("a seed that deals shard 0 to rank 0 in the first passes")
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
fn a_tar_without_its_end_blocks_keeps_its_last_whole_sample_and_counts_the_missing_end() {
    // Cut cleanly between two members: Python's tarfile reads every member; the possible cut
    // is counted, and nothing whole is lost.
    let dir = tempfile::tempdir().unwrap();
    let jpeg = scene_jpeg(16);
    let members: Vec<Vec<u8>> = ["a", "b"]
        .iter()
        .flat_map(|k| {
            [
                tar_member(&format!("{k}.jpg"), &jpeg, b'0'),
                tar_member(&format!("{k}.txt"), b"a caption", b'0'),
            ]
        })
        .collect();
    let path = dir.path().join("unterminated.tar");
    std::fs::write(&path, members.concat()).unwrap();
    let (keys, stats) = read_all(&path);
    assert_eq!(keys, ["a", "b"]);
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
fn a_caption_that_is_not_utf8_loses_the_rest_of_its_row_group_and_says_how_much() {
    // Three row groups of three rows, no key column; row 4 (the middle group's second) has a
    // STRING caption that is not UTF-8, which parquet's record reader cannot read past.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyless.parquet");
    // The reader hands image bytes on undecoded.
    let image: &[u8] = b"image bytes";
    let group = |bad: bool| {
        let second: &[u8] = if bad { b"caf\xe9" } else { b"ok" };
        vec![vec![image; 3], vec![&b"a red circle"[..], second, b"c"]]
    };
    write_parquet_groups(
        &path,
        "message schema { OPTIONAL BYTE_ARRAY jpg; OPTIONAL BYTE_ARRAY caption (STRING); }",
        &[group(false), group(true), group(false)],
    );
    let units: Vec<Unit> =
        ShardReader::open(&path, ShardFormat::Parquet, &ColumnsConfig::default()).collect();
    let keys: Vec<String> = units
        .iter()
        .filter_map(|u| match u {
            Unit::Sample(s) => Some(s.key.clone()),
            Unit::Skip { .. } => None,
        })
        .collect();
    // Rows keep the file's row numbers after the damaged group.
    let want: Vec<String> =
        [0, 1, 2, 3, 6, 7, 8].iter().map(|r| format!("keyless.parquet#{r}")).collect();
    assert_eq!(keys, want);
    let details: Vec<&str> = units
        .iter()
        .filter_map(|u| match u {
            Unit::Skip { reason: SkipReason::DamagedRowGroup, detail, .. } => Some(detail.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].contains("row group 1") && details[0].contains("2 in all"), "{details:?}");
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
    for unit in
        ShardReader::open(&bad("bad_images.tar"), ShardFormat::Wds, &ColumnsConfig::default())
    {
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
    assert!(e.contains("data.shards is empty"), "{e}");
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
    // A score column of text is read where the text is a number, and refused at the start where
    // it is not (it would filter out every sample).
    let png = synth_png();
    let scores = |name: &str, punsafe: &[u8]| {
        let path = dir.path().join(name);
        write_parquet(
            &path,
            "message schema { OPTIONAL BYTE_ARRAY jpg; OPTIONAL BYTE_ARRAY caption (STRING); \
             OPTIONAL BYTE_ARRAY punsafe (STRING); }",
            &[vec![&png[..]; 4], vec![&b"a red circle"[..]; 4], vec![punsafe; 4]],
        );
        DataConfig {
            shards: vec![display(&path)],
            batch_size: 4,
            filters: FilterConfig { max_punsafe: Some(0.5), ..Default::default() },
            ..Default::default()
        }
    };
    let batch = Loader::new(&scores("text.parquet", b"0.25"), 16, 0, 1, None).unwrap().next_batch();
    assert_eq!(batch.unwrap().keys.len(), 4);
    let e = err(scores("words.parquet", b"unsafe"));
    assert!(
        e.contains("max_punsafe needs a number in column punsafe") && e.contains("words.parquet"),
        "{e}"
    );
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

#[test]
fn a_directory_or_glob_of_img2dataset_webdataset_output_leaves_out_the_parquet_side_cars() {
    // img2dataset's WebDataset output writes a metadata-only NNNNN.parquet beside each NNNNN.tar;
    // read as shards, every sample would count again as a missing image and inflate the epoch.
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let wds = dir.path().join("wds/train");
    for i in 0..5 {
        write_sidecar_parquet(&wds.join(format!("{i:05}.parquet")), 40);
    }
    let tars: Vec<PathBuf> = (0..5).map(|i| wds.join(format!("{i:05}.tar"))).collect();
    assert_eq!(expand_shards(&[display(&wds)]).unwrap(), tars);
    assert_eq!(expand_shards(&[display(&wds.join("*"))]).unwrap(), tars);
    // A parquet named explicitly is taken as given.
    let named = wds.join("00000.parquet");
    assert_eq!(expand_shards(&[display(&named)]).unwrap(), [named]);
    let err = expand_shards(&[display(&wds.join("*.parquet"))]).unwrap_err().to_string();
    assert!(err.contains("5 .parquet file(s) left out") && err.contains("side-car"), "{err}");
    let cfg = DataConfig { shards: vec![display(&wds)], batch_size: 8, ..Default::default() };
    let mut loader = Loader::new(&cfg, 16, 0, 1, None).unwrap();
    assert_eq!(loader.epoch_batches(), 25, "200 samples in batches of 8");
    for _ in 0..25 {
        loader.next_batch().unwrap();
    }
    assert_eq!(loader.stats().total_skipped(), 0, "{:?}", loader.stats());
}

#[test]
fn a_parquet_without_a_binary_image_column_is_one_unreadable_shard_listing_its_columns() {
    // The file is what is wrong, not each of its rows: one skip, whose warning says what the file
    // has instead, and no samples counted toward the epoch.
    let dir = tempfile::tempdir().unwrap();
    let sidecar = dir.path().join("00000.parquet");
    write_sidecar_parquet(&sidecar, 6);
    // A struct image column without a binary `bytes` field, and a jpg column of strings, are not
    // read either.
    let hf = dir.path().join("hf.parquet");
    write_parquet(
        &hf,
        "message schema { OPTIONAL group image { OPTIONAL BYTE_ARRAY path (STRING); } \
         OPTIONAL BYTE_ARRAY caption (STRING); }",
        &[vec![b"x.jpg"], vec![b"a red circle"]],
    );
    let text = dir.path().join("text.parquet");
    write_parquet(
        &text,
        "message schema { REQUIRED BYTE_ARRAY jpg (STRING); REQUIRED BYTE_ARRAY caption (STRING); }",
        &[vec![b"x.jpg"], vec![b"a red circle"]],
    );
    for (path, columns) in [
        (&sidecar, &["url", "caption", "key", "status"][..]),
        (&hf, &["image", "caption"]),
        (&text, &["jpg", "caption"]),
    ] {
        let units: Vec<Unit> =
            ShardReader::open(path, ShardFormat::Parquet, &ColumnsConfig::default()).collect();
        let [Unit::Skip { reason, detail, .. }] = &units[..] else {
            panic!("{}: one skip, got {units:?}", path.display())
        };
        assert_eq!(*reason, SkipReason::UnreadableShard, "{detail}");
        assert!(detail.contains("no image column"), "{detail}");
        for column in columns {
            assert!(detail.contains(&format!("\"{column}\"")), "{column} listed: {detail}");
        }
        assert_eq!(
            count_samples(path, ShardFormat::Parquet, &ColumnsConfig::default()),
            0,
            "{}",
            path.display()
        );
    }
}

#[test]
fn a_jpeg_truncated_at_a_third_is_corrupt_at_full_scale_too() {
    // zune-jpeg, the full-scale decoder, by default fills what a cut file lacks with grey.
    let jpeg = textured_jpeg(96);
    let cut = &jpeg[..jpeg.len() / 3];
    let t = |side, dct_scaling| Transform {
        side,
        crop: CropMode::Center,
        crop_at: 0.5,
        flip: false,
        limits: ImageLimits::default(),
        dct_scaling,
    };
    // Side 64 is over half of 96: no DCT scale applies. Side 16 with dct_scaling off.
    for t in [t(64, true), t(16, false), t(16, true)] {
        let mut out = vec![0u8; (t.side * t.side * 3) as usize];
        decode_into(&jpeg, &t, &mut out).unwrap();
        let err = decode_into(cut, &t, &mut out).unwrap_err();
        assert_eq!(err.reason, SkipReason::CorruptImage, "side {}: {}", t.side, err.detail);
    }
    assert_eq!(decode_rgb(&jpeg, &t(16, false)).unwrap().0, 96, "decoded at full scale");
    // Stray bytes before a marker ("Corrupt JPEG data: 3 extraneous bytes before marker" in
    // libjpeg, which PIL decodes through) are no reason to lose the image.
    let dqt = jpeg.windows(2).position(|w| w == [0xFF, 0xDB]).unwrap();
    let stray = [&jpeg[..dqt], &[0x00, 0x01, 0x02], &jpeg[dqt..]].concat();
    let full = decode_rgb(&jpeg, &t(16, false)).unwrap();
    assert_eq!(decode_rgb(&stray, &t(16, false)).unwrap(), full);
}

#[test]
fn tar_member_sizes_that_overflow_are_a_damaged_shard_naming_the_member() {
    // A base-256 size field or a pax size of 2^64 - 1 has no padded length: it must not panic (or
    // wrap in release), and the sample before it is kept.
    let dir = tempfile::tempdir().unwrap();
    let jpeg = scene_jpeg(16);
    let good = [tar_member("k.jpg", &jpeg, b'0'), tar_member("k.txt", b"good", b'0')].concat();
    let mut base_256 = [0xffu8; 12];
    base_256[..4].copy_from_slice(&[0x80, 0, 0, 0]);
    let record = "29 size=18446744073709551615\n";
    let tars = [
        ("base256.tar", [tar_header("a.jpg", base_256, b'0'), vec![0; 1024]].concat()),
        (
            "pax.tar",
            [
                tar_member("PaxHeader/a.jpg", record.as_bytes(), b'x'),
                tar_header("a.jpg", octal_size(0), b'0'),
                vec![0; 1024],
            ]
            .concat(),
        ),
    ];
    for (name, tail) in tars {
        let path = dir.path().join(name);
        std::fs::write(&path, [&good[..], &tail].concat()).unwrap();
        let units: Vec<Unit> =
            ShardReader::open(&path, ShardFormat::Wds, &ColumnsConfig::default()).collect();
        let [Unit::Sample(sample), Unit::Skip { reason, key, detail }] = &units[..] else {
            panic!("{name}: the good sample, then one skip: {units:?}")
        };
        assert_eq!(sample.key, "k");
        assert_eq!(*reason, SkipReason::DamagedShard, "{name}: {detail}");
        assert_eq!(key.as_deref(), Some("a"), "{name}");
        assert!(detail.contains("a.jpg") && detail.contains("overflows"), "{name}: {detail}");
        // Counting samples for the epoch reads the same headers.
        assert!(count_samples(&path, ShardFormat::Wds, &ColumnsConfig::default()) <= 2, "{name}");
    }
}

/// Rank 0 of 2 over `shards`, seeded so that it is dealt `shards[0]` for `passes` passes
/// running, once it has returned its first batch.
fn rank_0_past_its_first_batch(shards: &[PathBuf; 2], passes: u64) -> (Loader, DataConfig) {
    let cfg = DataConfig {
        shards: shards.iter().map(|p| display(p)).collect(),
        seed: seed_dealing_shard_0(shards, 2, passes),
        batch_size: 4,
        ..Default::default()
    };
    let mut loader = Loader::new(&cfg, 16, 0, 2, None).unwrap();
    loader.next_batch().unwrap();
    (loader, cfg)
}

/// Both ranks of 2 fail on `cfg`'s shards with an error that says `what`.
fn every_rank_fails(cfg: &DataConfig, what: &str) {
    for rank in 0..2 {
        let err = Loader::new(cfg, 16, rank, 2, None).unwrap().next_batch().unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[test]
fn a_rank_dealt_the_same_empty_shard_in_two_passes_running_reads_on() {
    // With as many shards as ranks a rank reads one shard a pass: the zero-byte one may come to
    // it twice in a row while the other shard holds samples; the job must not stop for that.
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let shards = [bad("zero.tar"), dir.path().join("wds/train/00000.tar")];
    let (loader, cfg) = rank_0_past_its_first_batch(&shards, 2);
    assert!(loader.stats().count(SkipReason::EmptyShard) >= 2, "{:?}", loader.stats());
    // A list of unusable shards only is still an error, on every rank.
    let cfg = DataConfig {
        shards: vec![display(&bad("zero.tar")), display(&bad("damaged_footer.parquet"))],
        ..cfg
    };
    every_rank_fails(&cfg, "no usable sample");
}

#[test]
fn a_rank_dealt_the_same_undecodable_shard_in_passes_running_reads_on() {
    // As above, for a shard whose samples all fail to decode.
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let undecodable = dir.path().join("undecodable.tar");
    let members: Vec<Vec<u8>> = (0..4)
        .flat_map(|i| {
            [
                tar_member(&format!("u{i}.jpg"), b"<html>not an image</html>", b'0'),
                tar_member(&format!("u{i}.txt"), b"caption", b'0'),
            ]
        })
        .collect();
    std::fs::write(&undecodable, [members.concat(), vec![0; 1024]].concat()).unwrap();
    let shards = [undecodable.clone(), dir.path().join("wds/train/00000.tar")];
    let (loader, cfg) = rank_0_past_its_first_batch(&shards, 3);
    assert!(loader.stats().count(SkipReason::NotAnImage) >= 12, "{:?}", loader.stats());
    // Undecodable samples only is still an error, on every rank.
    let copy = dir.path().join("undecodable2.tar");
    std::fs::copy(&undecodable, &copy).unwrap();
    let cfg = DataConfig { shards: vec![display(&undecodable), display(&copy)], ..cfg };
    every_rank_fails(&cfg, "decoded no sample");
}

#[test]
fn a_parquet_shard_counts_its_successful_downloads_for_the_epoch_not_its_footer_rows() {
    // img2dataset's parquet output keeps a row for each failed download; its _stats.json marker
    // counts the successes, as for a tar.
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let shard = dir.path().join("parquet/train/00000.parquet");
    let footer = count_samples(&shard, ShardFormat::Parquet, &ColumnsConfig::default());
    assert!(footer > 10, "{footer}");
    let marker = imagen_data::shards::stats_marker(&shard);
    std::fs::write(&marker, format!(r#"{{"count": {footer}, "successes": 10}}"#)).unwrap();
    assert_eq!(count_samples(&shard, ShardFormat::Parquet, &ColumnsConfig::default()), 10);
    std::fs::remove_file(&marker).unwrap();
    assert_eq!(
        count_samples(&shard, ShardFormat::Parquet, &ColumnsConfig::default()),
        footer,
        "no marker: the footer"
    );
}

/// A 32x32 red PNG.
fn synth_png() -> Vec<u8> {
    let image = image::RgbImage::from_pixel(32, 32, image::Rgb([200, 30, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn skipping_through_long_names_pax_records_two_images_and_an_oversized_member_is_exact() {
    // A resume passes the skipped samples' images by seeking; every member kind must leave the
    // units after the skip, image bytes included, as a full read gives them.
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kinds.tar");
    let (jpeg, png) = (scene_jpeg(16), synth_png());
    let long_key = format!("{}/000001", "d".repeat(120));
    let pax = format!("{} path=pax/000003.jpg\n", "path=pax/000003.jpg\n".len() + 3);
    let mut file = std::fs::File::create(&path).unwrap();
    let mut put = |bytes: &[u8]| file.write_all(bytes).unwrap();
    // A GNU long name for an image, then its caption under the same long key.
    put(&tar_member("././@LongLink", format!("{long_key}.jpg\0").as_bytes(), b'L'));
    put(&tar_member("ignored.jpg", &jpeg, b'0'));
    put(&tar_member("././@LongLink", format!("{long_key}.txt\0").as_bytes(), b'L'));
    put(&tar_member("ignored.txt", b"a long name", b'0'));
    // Two images in one sample: the first is the sample's.
    put(&tar_member("000002.png", &png, b'0'));
    put(&tar_member("000002.jpg", &jpeg, b'0'));
    put(&tar_member("000002.txt", b"two images", b'0'));
    // A pax record naming the next member.
    put(&tar_member("PaxHeader/x", pax.as_bytes(), b'x'));
    put(&tar_member("short.jpg", &jpeg, b'0'));
    put(&tar_member("pax/000003.txt", b"pax path", b'0'));
    // A member over the 64 MiB limit (sparse: its data is a hole), then a caption.
    let big = (64 << 20) + 512;
    file.write_all(&tar_header(
        "000004.jpg",
        format!("{big:011o}\0").into_bytes().try_into().unwrap(),
        b'0',
    ))
    .unwrap();
    file.seek(SeekFrom::Current(big as i64)).unwrap();
    file.write_all(&tar_member("000004.txt", b"too large", b'0')).unwrap();
    file.write_all(&tar_member("000005.png", &png, b'0')).unwrap();
    file.write_all(&tar_member("000005.txt", b"last", b'0')).unwrap();
    file.write_all(&[0u8; 1024]).unwrap();
    drop(file);

    let open = || ShardReader::open(&path, ShardFormat::Wds, &ColumnsConfig::default());
    let full: Vec<Unit> = open().collect();
    let keys: Vec<String> = full
        .iter()
        .map(|u| match u {
            Unit::Sample(s) => s.key.clone(),
            Unit::Skip { key, reason, .. } => format!("{reason:?} {}", key.clone().unwrap()),
        })
        .collect();
    assert_eq!(
        keys,
        [
            long_key.clone(),
            "000002".into(),
            "pax/000003".into(),
            "MemberTooLarge 000004".into(),
            "000005".into()
        ]
    );
    let Unit::Sample(two) = &full[1] else { unreachable!() };
    assert_eq!(two.image, png, "the first image member");
    for n in 0..=full.len() {
        let mut reader = open();
        assert_eq!(reader.skip_units(n as u64), n as u64);
        assert_eq!(reader.collect::<Vec<_>>(), full[n..], "after skipping {n}");
    }
}
