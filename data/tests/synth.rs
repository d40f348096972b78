//! The synthetic dataset: layout, img2dataset schema, captions agreeing with metadata and pixels,
//! a pure function of (seed, index), disjoint held-out split.

mod common;

use std::fs::File;

use common::{read_all, synth_dataset};
use imagen_data::config::ColumnsConfig;
use imagen_data::decode::{decode_rgb, CropMode, ImageLimits, Transform};
use imagen_data::reader::{ShardReader, Unit};
use imagen_data::shards::ShardFormat;
use imagen_data::synth::scene::{BACKGROUNDS, COLOURS};
use imagen_data::synth::{Scene, HELDOUT_BASE};
use parquet::file::reader::{FileReader, SerializedFileReader};

#[test]
fn layout_schema_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 32);
    for c in ["parquet", "wds"] {
        for s in 0..5 {
            assert!(dir.path().join(format!("{c}/train/{s:05}_stats.json")).is_file());
        }
        assert!(!dir.path().join(format!("{c}/train/00005_stats.json")).exists());
    }
    let file = File::open(dir.path().join("parquet/train/00000.parquet")).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().num_rows(), 40);
    assert_eq!(meta.num_row_groups(), 3, "row groups of 16");
    let columns: Vec<String> = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    for want in [
        "key",
        "jpg",
        "url",
        "caption",
        "status",
        "error_message",
        "width",
        "height",
        "original_width",
        "original_height",
        "sha256",
        "colour",
        "shape",
        "size",
        "position",
        "background",
    ] {
        assert!(columns.iter().any(|c| c == want), "column {want} in {columns:?}");
    }
    let fields =
        ShardReader::meta_fields(&dir.path().join("wds/train/00000.tar"), ShardFormat::Wds)
            .unwrap();
    assert!(fields.iter().any(|f| f == "colour") && fields.iter().any(|f| f == "status"));
    let (train, stats) = read_all(&dir.path().join("wds/train/00004.tar"));
    assert_eq!(train.len(), 40);
    assert_eq!(stats.total_skipped(), 0);
    let (held, _) = read_all(&dir.path().join("parquet/heldout/00000.parquet"));
    assert_eq!(held.len(), 30);
    assert_eq!(held[0], format!("{HELDOUT_BASE:010}"));
}

#[test]
fn captions_metadata_and_pixels_agree() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 64);
    let t = Transform {
        side: 64,
        crop: CropMode::Center,
        crop_at: 0.5,
        flip: false,
        limits: ImageLimits::default(),
        dct_scaling: false,
    };
    let path = dir.path().join("wds/train/00001.tar");
    let mut checked = 0;
    for unit in ShardReader::open(&path, ShardFormat::Wds, &ColumnsConfig::default()) {
        let Unit::Sample(s) = unit else { panic!("clean shard") };
        let index: u64 = s.key.parse().unwrap();
        let scene = Scene::at(11, index);
        assert_eq!(s.caption, scene.caption());
        let (w, h, rgb) = decode_rgb(&s.image, &t).unwrap();
        assert_eq!((w, h), (64, 64));
        let px = |x: usize, y: usize| &rgb[(y * 64 + x) * 3..][..3];
        let near =
            |a: &[u8], b: [u8; 3]| a.iter().zip(b).all(|(&a, b)| (a as i32 - b as i32).abs() <= 12);
        let fg = COLOURS.iter().find(|c| c.0 == scene.colour).unwrap().1;
        let bg = BACKGROUNDS.iter().find(|c| c.0 == scene.background).unwrap().1;
        // The shape's box centre (for the triangle: low in its box) holds the fill colour.
        let (cx, cy) = match scene.position.as_str() {
            "top left" => (17, 17),
            "top right" => (46, 17),
            "bottom left" => (17, 46),
            "bottom right" => (46, 46),
            _ => (32, 32),
        };
        let cy = if scene.shape == "triangle" { cy + 3 } else { cy };
        assert!(near(px(cx, cy), fg), "{}: {:?} vs {fg:?}", s.caption, px(cx, cy));
        // A far corner holds the background.
        let (fx, fy) = if cx < 32 { (62, 62) } else { (1, 1) };
        let (fx, fy) = if scene.position == "center" { (1, 1) } else { (fx, fy) };
        assert!(near(px(fx, fy), bg), "{}: corner {:?} vs {bg:?}", s.caption, px(fx, fy));
        checked += 1;
    }
    assert_eq!(checked, 40);
}

#[test]
fn a_sample_is_a_pure_function_of_seed_and_index() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    synth_dataset(a.path(), 16);
    synth_dataset(b.path(), 16);
    for f in ["parquet/train/00002.parquet", "wds/train/00002.tar", "wds/heldout/00000.tar"] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
    let (pq, _) = read_all(&a.path().join("parquet/train/00003.parquet"));
    let (tar, _) = read_all(&a.path().join("wds/train/00003.tar"));
    assert_eq!(pq, tar);
    assert_eq!(pq[0], "0000000120");
}

/// The synthetic parquet shards are written with parquet's own writer: pyarrow, which writes
/// img2dataset's shards, must read them back with img2dataset's column types and our values.
#[test]
fn pyarrow_reads_the_synthetic_parquet_with_img2dataset_types() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 32);
    let shard = dir.path().join("parquet/train/00001.parquet");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join(".venv-tools/bin/python");
    assert!(python.exists(), "run scripts/python_env.sh (make test does)");
    let script = r#"
import json, sys
import pyarrow.parquet as pq
f = pq.ParquetFile(sys.argv[1])
t = f.read()
print(json.dumps({
    "types": {field.name: str(field.type) for field in t.schema},
    "row_groups": f.metadata.num_row_groups,
    "compression": f.metadata.row_group(0).column(0).compression,
    "rows": t.select(["key", "caption", "status", "width", "error_message"]).to_pylist(),
    "jpg": [list(b[:3]) for b in t.column("jpg").to_pylist()],
}))
"#;
    let out = std::process::Command::new(python).args(["-c", script]).arg(&shard).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let types = &read["types"];
    for (column, want) in [
        ("key", "string"),
        ("caption", "string"),
        ("status", "string"),
        ("error_message", "string"),
        ("jpg", "binary"),
        ("width", "int64"),
        ("original_height", "int64"),
    ] {
        assert_eq!(types[column], want, "{column} in {types}");
    }
    assert_eq!(read["row_groups"], 3);
    assert_eq!(read["compression"], "SNAPPY");
    let rows = read["rows"].as_array().unwrap();
    let (keys, _) = read_all(&shard);
    assert_eq!(rows.len(), keys.len());
    for (row, key) in rows.iter().zip(&keys) {
        assert_eq!(row["key"], key.as_str());
        let scene = Scene::at(11, key.parse().unwrap());
        assert_eq!(row["caption"], scene.caption());
        assert_eq!(row["status"], "success");
        assert_eq!(row["width"], 32);
        assert!(row["error_message"].is_null());
    }
    // Every image is a JPEG (SOI marker, then a marker segment).
    for jpg in read["jpg"].as_array().unwrap() {
        assert_eq!(jpg, &serde_json::json!([0xFF, 0xD8, 0xFF]));
    }
}
