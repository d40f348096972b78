//! Readers and decoders against files written by the reference tools (pyarrow, Python's tarfile,
//! Pillow): see scripts/make_data_fixtures.py.

mod common;

use common::{expected, fixture, read_all};
use imagen_data::config::ColumnsConfig;
use imagen_data::decode::{decode_into, decode_rgb, CropMode, ImageLimits, Transform};
use imagen_data::reader::{RawSample, ShardReader, Unit};
use imagen_data::shards::ShardFormat;
use imagen_data::{SkipReason, SkipStats};

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The good samples of the pyarrow img2dataset fixture, in order.
fn img2dataset_samples() -> Vec<RawSample> {
    ShardReader::open(
        &fixture("img2dataset.parquet"),
        ShardFormat::Parquet,
        &ColumnsConfig::default(),
    )
    .filter_map(|u| match u {
        Unit::Sample(s) => Some(s),
        _ => None,
    })
    .collect()
}

#[test]
fn pyarrow_img2dataset_parquet_reads_good_rows_and_counts_skips() {
    let exp = &expected()["img2dataset.parquet"];
    let (keys, stats) = read_all(&fixture("img2dataset.parquet"));
    assert_eq!(keys, strings(&exp["good"]));
    assert_eq!(stats.count(SkipReason::NotSuccess), 1);
    assert_eq!(stats.count(SkipReason::MissingCaption), 1);
    assert_eq!(stats.total_skipped(), 2);
    // Metadata columns reach the sample (float32 punsafe, float32 AESTHETIC_SCORE, int64 sizes).
    let first = img2dataset_samples().remove(0);
    assert_eq!(first.caption, "gradient 0");
    assert_eq!(first.meta.original_width, Some(96.0));
    assert_eq!(first.meta.aesthetic, Some(5.5));
    assert!((first.meta.similarity.unwrap() - 0.31).abs() < 1e-9);
}

#[test]
fn tarfile_webdataset_groups_members_by_key_with_pax_long_names() {
    let exp = &expected()["webdataset.tar"];
    let (keys, stats) = read_all(&fixture("webdataset.tar"));
    // The html "image" is read as a sample; decoding rejects it (see below).
    let mut want = strings(&exp["good"]);
    want.push("s/000000012".into());
    assert_eq!(keys, want);
    assert!(keys[3].len() > 100, "pax long name kept: {}", keys[3]);
    assert_eq!(stats.count(SkipReason::NotSuccess), 1);
    assert_eq!(stats.count(SkipReason::MissingCaption), 1);
    assert_eq!(stats.total_skipped(), 2);
    // Sizing an epoch counts the same keys from the headers (the pax `path` records included).
    let counted = imagen_data::reader::count_samples(
        &fixture("webdataset.tar"),
        ShardFormat::Wds,
        &ColumnsConfig::default(),
    );
    assert_eq!(counted as usize, keys.len() + 2);
}

#[test]
fn jpeg_png_webp_all_decode_and_html_is_not_an_image() {
    let t = Transform {
        side: 16,
        crop: CropMode::Center,
        crop_at: 0.5,
        flip: false,
        limits: ImageLimits::default(),
        dct_scaling: true,
    };
    let mut results = Vec::new();
    for unit in
        ShardReader::open(&fixture("webdataset.tar"), ShardFormat::Wds, &ColumnsConfig::default())
    {
        if let Unit::Sample(s) = unit {
            let mut out = vec![0u8; 16 * 16 * 3];
            results.push(decode_into(&s.image, &t, &mut out).err().map(|f| f.reason));
        }
    }
    assert_eq!(results, [None, None, None, None, Some(SkipReason::NotAnImage)]);
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.len() as f64
}

#[test]
fn decode_and_resize_match_pillow() {
    let samples = img2dataset_samples();
    for i in [0usize, 1, 3] {
        let t = Transform {
            side: 16,
            crop: CropMode::Center,
            crop_at: 0.5,
            flip: false,
            limits: ImageLimits::default(),
            dct_scaling: false,
        };
        let (w, h, full) = decode_rgb(&samples[i].image, &t).unwrap();
        let size = &expected()["pillow"][i.to_string()];
        assert_eq!((w as u64, h as u64), (size[0].as_u64().unwrap(), size[1].as_u64().unwrap()));
        let pillow = std::fs::read(fixture(&format!("pillow_{i}_full.rgb"))).unwrap();
        let d = mean_abs_diff(&full, &pillow);
        assert!(d < 1.5, "image {i}: full decode differs from libjpeg by {d}");
        let mut small = vec![0u8; 16 * 16 * 3];
        decode_into(&samples[i].image, &t, &mut small).unwrap();
        let pillow = std::fs::read(fixture(&format!("pillow_{i}_16.rgb"))).unwrap();
        let d = mean_abs_diff(&small, &pillow);
        assert!(d < 4.0, "image {i}: 16 px resize differs from Pillow's by {d}");
    }
}

#[test]
fn dct_scaled_decode_is_close_to_full_decode() {
    // A 64x40 gradient at side 16: the shorter side 40 >= 2*16 allows a 1/2 DCT scale.
    let samples = img2dataset_samples();
    let mut t = Transform {
        side: 16,
        crop: CropMode::Center,
        crop_at: 0.5,
        flip: false,
        limits: ImageLimits::default(),
        dct_scaling: true,
    };
    let (w, h, _) = decode_rgb(&samples[3].image, &t).unwrap();
    assert_eq!((w, h), (32, 20), "decoded at 1/2 scale");
    let mut scaled = vec![0u8; 16 * 16 * 3];
    decode_into(&samples[3].image, &t, &mut scaled).unwrap();
    t.dct_scaling = false;
    let mut full = vec![0u8; 16 * 16 * 3];
    decode_into(&samples[3].image, &t, &mut full).unwrap();
    // Green is a smooth gradient; red wraps around (a sharp edge) and blue is x^y texture, where
    // reduced IDCTs differ most.
    let green = |img: &[u8]| img.chunks(3).map(|p| p[1]).collect::<Vec<u8>>();
    let d = mean_abs_diff(&green(&scaled), &green(&full));
    assert!(d < 3.5, "scaled decode's green differs by {d}");
    let d = mean_abs_diff(&scaled, &full);
    assert!(d < 6.0, "scaled decode differs by {d}");
}

#[test]
fn flip_mirrors_rows_and_random_crop_moves_along_the_long_axis() {
    let samples = img2dataset_samples();
    let base = Transform {
        side: 8,
        crop: CropMode::Random,
        crop_at: 0.0,
        flip: false,
        limits: ImageLimits::default(),
        dct_scaling: false,
    };
    let run = |t: Transform| {
        let mut out = vec![0u8; 8 * 8 * 3];
        decode_into(&samples[0].image, &t, &mut out).unwrap();
        out
    };
    let left = run(base);
    let flipped = run(Transform { flip: true, ..base });
    for y in 0..8 {
        for x in 0..8 {
            assert_eq!(left[(y * 8 + x) * 3..][..3], flipped[(y * 8 + 7 - x) * 3..][..3]);
        }
    }
    let right = run(Transform { crop_at: 1.0, ..base });
    // Image 0 (48x32): its red channel grows with x, so the right crop is redder.
    let red = |img: &[u8]| img.chunks(3).map(|p| p[0] as u32).sum::<u32>();
    assert!(red(&right) > red(&left) + 8 * 64, "{} vs {}", red(&right), red(&left));
}

#[test]
fn parquet_keys_are_integer_columns_as_text_or_else_the_file_name_and_row() {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    // The reader hands the image bytes on undecoded.
    let jpeg = b"image bytes".to_vec();
    // An integer key column (as some tools write), then no key column at all.
    for (name, with_key) in [("int_key.parquet", true), ("no_key.parquet", false)] {
        let schema = if with_key {
            "message m { required int64 key; required binary jpg; required binary caption (UTF8); }"
        } else {
            "message m { required binary jpg; required binary caption (UTF8); }"
        };
        let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
        let file = std::fs::File::create(dir.path().join(name)).unwrap();
        let props = Arc::new(WriterProperties::builder().build());
        let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        if with_key {
            let mut column = group.next_column().unwrap().unwrap();
            column.typed::<Int64Type>().write_batch(&[7, 8], None, None).unwrap();
            column.close().unwrap();
        }
        for values in [[jpeg.as_slice(), jpeg.as_slice()], [b"a cat", b"a dog"]] {
            let values: Vec<ByteArray> = values.iter().map(|v| v.to_vec().into()).collect();
            let mut column = group.next_column().unwrap().unwrap();
            column.typed::<ByteArrayType>().write_batch(&values, None, None).unwrap();
            column.close().unwrap();
        }
        group.close().unwrap();
        writer.close().unwrap();
    }
    assert_eq!(read_all(&dir.path().join("int_key.parquet")).0, ["7", "8"]);
    // The same keys whatever directory spelling reaches the file (`imagen embed` and training
    // must agree for the embedding cache).
    let plain = read_all(&dir.path().join("no_key.parquet")).0;
    let dotted = read_all(&dir.path().join(".").join("no_key.parquet")).0;
    assert_eq!(plain, ["no_key.parquet#0", "no_key.parquet#1"]);
    assert_eq!(dotted, plain);
}

/// Every unit of `name` read under `columns`: (captions, image sizes, skip stats).
fn read_with(name: &str, columns: &ColumnsConfig) -> (Vec<String>, Vec<(u32, u32)>, SkipStats) {
    let path = fixture(name);
    let format = ShardFormat::from_path(&path).unwrap();
    let (mut captions, mut sizes, mut stats) = (Vec::new(), Vec::new(), SkipStats::default());
    for unit in ShardReader::open(&path, format, columns) {
        match unit {
            Unit::Sample(s) => {
                let image = image::load_from_memory(&s.image).unwrap();
                sizes.push((image.width(), image.height()));
                captions.push(s.caption);
            }
            Unit::Skip { reason, .. } => stats.add_skip(reason),
        }
    }
    (captions, sizes, stats)
}

fn sizes_of(v: &serde_json::Value) -> Vec<(u32, u32)> {
    let size =
        |s: &serde_json::Value| (s[0].as_u64().unwrap() as u32, s[1].as_u64().unwrap() as u32);
    v.as_array().unwrap().iter().map(size).collect()
}

#[test]
fn a_hugging_face_datasets_parquet_reads_its_image_structs_and_text_column_when_named() {
    let exp = &expected()["hf_datasets.parquet"];
    let columns = ColumnsConfig { image: Some("image".into()), caption: Some("text".into()) };
    let (captions, sizes, stats) = read_with("hf_datasets.parquet", &columns);
    assert_eq!(captions, strings(&exp["captions"]));
    assert_eq!(sizes, sizes_of(&exp["sizes"]));
    assert_eq!(stats.count(SkipReason::MissingImage), 1);
    assert_eq!(stats.count(SkipReason::MissingCaption), 1);
    assert_eq!(stats.total_skipped(), 2);
    // Under img2dataset's names the struct is found but no `caption`: one skip of the whole
    // shard, which names the columns it has and the setting to change.
    let (captions, _, stats) = read_with("hf_datasets.parquet", &ColumnsConfig::default());
    assert!(captions.is_empty());
    assert_eq!(stats.count(SkipReason::UnreadableShard), 1);
    let units: Vec<Unit> = ShardReader::open(
        &fixture("hf_datasets.parquet"),
        ShardFormat::Parquet,
        &ColumnsConfig::default(),
    )
    .collect();
    let [Unit::Skip { detail, .. }] = &units[..] else { panic!("{units:?}") };
    assert!(detail.contains("no caption column \"caption\""), "{detail}");
    assert!(detail.contains("\"text\"") && detail.contains("data.columns.caption"), "{detail}");
    let counted = |columns| {
        imagen_data::reader::count_samples(
            &fixture("hf_datasets.parquet"),
            ShardFormat::Parquet,
            columns,
        )
    };
    assert_eq!(counted(&columns), 5, "the footer's rows");
    assert_eq!(counted(&ColumnsConfig::default()), 0);
    // A caption column of numbers is named as such, not read as a null caption in every row.
    let numbers = ColumnsConfig { caption: Some("width".into()), ..Default::default() };
    let units: Vec<Unit> =
        ShardReader::open(&fixture("img2dataset.parquet"), ShardFormat::Parquet, &numbers)
            .collect();
    let [Unit::Skip { detail, .. }] = &units[..] else { panic!("{units:?}") };
    assert!(detail.contains("caption column \"width\" holds INT"), "{detail}");
}

#[test]
fn webdataset_members_named_by_the_columns_setting_are_the_image_and_caption() {
    let exp = &expected()["custom_members.tar"];
    let columns = ColumnsConfig { image: Some("webp".into()), caption: Some("prompt".into()) };
    let (captions, sizes, stats) = read_with("custom_members.tar", &columns);
    // The json's `prompt` field stands in where a sample has no `.prompt` member.
    assert_eq!(captions, strings(&exp["captions"]));
    assert_eq!(sizes, sizes_of(&exp["sizes"]), "the webp members, not the jpg thumbnails");
    assert_eq!(stats.total_skipped(), 0);
    // By default the first image member (the jpg thumbnail) and the txt member are read.
    let (captions, sizes, _) = read_with("custom_members.tar", &ColumnsConfig::default());
    assert_eq!(captions, vec!["not the caption"; 3]);
    assert_eq!(sizes, vec![(8, 8); 3]);
}

#[test]
fn a_row_takes_the_first_image_column_that_is_not_null() {
    let exp = &expected()["two_image_columns.parquet"];
    let (captions, sizes, stats) =
        read_with("two_image_columns.parquet", &ColumnsConfig::default());
    assert_eq!(captions, strings(&exp["captions"]));
    assert_eq!(sizes, sizes_of(&exp["sizes"]));
    assert_eq!(stats.count(SkipReason::MissingImage), 1);
    assert_eq!(stats.total_skipped(), 1);
}

#[test]
fn skipping_to_a_cursor_yields_what_reading_would_have_from_there() {
    // Tars pass over the images of the skipped samples; the units after the skip, the image
    // bytes of the first included, are what a full read gives from there.
    let cases = [
        ("webdataset.tar", ShardFormat::Wds, ColumnsConfig::default()),
        ("bad/bad_images.tar", ShardFormat::Wds, ColumnsConfig::default()),
        ("bad/truncated.tar", ShardFormat::Wds, ColumnsConfig::default()),
        (
            "custom_members.tar",
            ShardFormat::Wds,
            ColumnsConfig { image: Some("webp".into()), caption: Some("prompt".into()) },
        ),
        ("img2dataset.parquet", ShardFormat::Parquet, ColumnsConfig::default()),
    ];
    for (name, format, columns) in cases {
        let path = fixture(name);
        let full: Vec<Unit> = ShardReader::open(&path, format, &columns).collect();
        assert!(full.len() >= 2, "{name}: {} units", full.len());
        for n in 0..=full.len() + 1 {
            let mut reader = ShardReader::open(&path, format, &columns);
            assert_eq!(reader.skip_units(n as u64), n.min(full.len()) as u64, "{name}");
            let rest: Vec<Unit> = reader.collect();
            assert_eq!(rest, full[n.min(full.len())..], "{name} after skipping {n}");
        }
    }
}
