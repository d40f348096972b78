//! Writers for synthetic shards: img2dataset's parquet schema and WebDataset tars.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use super::{ImageEncoding, Scene, SynthOptions};
use crate::error::{DataError, Result};

/// One encoded synthetic sample with its img2dataset-style metadata.
#[derive(Clone, Debug)]
pub struct SynthSample {
    pub key: String,
    pub caption: String,
    pub scene: Scene,
    pub image: Vec<u8>,
    pub side: u32,
}

impl SynthSample {
    pub fn new(opts: &SynthOptions, index: u64) -> Result<SynthSample> {
        let scene = Scene::at(opts.seed, index);
        let pixels = scene.render(opts.side);
        let mut image = Vec::new();
        let encoded = match opts.encoding {
            ImageEncoding::Jpg => image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut image,
                opts.quality,
            )
            .encode(&pixels, opts.side, opts.side, image::ExtendedColorType::Rgb8),
            ImageEncoding::Png => image::ImageEncoder::write_image(
                image::codecs::png::PngEncoder::new(&mut image),
                &pixels,
                opts.side,
                opts.side,
                image::ExtendedColorType::Rgb8,
            ),
        };
        encoded.map_err(|e| DataError::Invalid(format!("encoding sample {index}: {e}")))?;
        Ok(SynthSample {
            key: format!("{index:010}"),
            caption: scene.caption(),
            scene,
            image,
            side: opts.side,
        })
    }

    fn url(&self) -> String {
        format!("synth://scenes/{}", self.key)
    }

    fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.image))
    }

    /// The WebDataset `.json` member: img2dataset's fields plus the scene attributes.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url(), "key": self.key, "caption": self.caption,
            "status": "success", "error_message": null,
            "width": self.side, "height": self.side,
            "original_width": self.side, "original_height": self.side,
            "exif": "{}", "sha256": self.sha256(),
            "colour": self.scene.colour, "shape": self.scene.shape, "size": self.scene.size,
            "position": self.scene.position, "background": self.scene.background,
        })
    }
}

fn ext(opts: &SynthOptions) -> &'static str {
    match opts.encoding {
        ImageEncoding::Jpg => "jpg",
        ImageEncoding::Png => "png",
    }
}

/// Writes `NNNNN.parquet` with img2dataset's columns (image column named by its encoding).
pub fn parquet_shard(
    dir: &Path,
    shard: u64,
    samples: &[SynthSample],
    opts: &SynthOptions,
) -> Result<PathBuf> {
    let strings = |f: &dyn Fn(&SynthSample) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(samples.iter().map(f)))
    };
    let ints = || -> ArrayRef { Arc::new(Int64Array::from(vec![opts.side as i64; samples.len()])) };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("key", strings(&|s| s.key.clone())),
        (ext(opts), Arc::new(BinaryArray::from_iter_values(samples.iter().map(|s| &s.image)))),
        ("url", strings(&|s| s.url())),
        ("caption", strings(&|s| s.caption.clone())),
        ("colour", strings(&|s| s.scene.colour.clone())),
        ("shape", strings(&|s| s.scene.shape.clone())),
        ("size", strings(&|s| s.scene.size.clone())),
        ("position", strings(&|s| s.scene.position.clone())),
        ("background", strings(&|s| s.scene.background.clone())),
        ("error_message", Arc::new(StringArray::from(vec![None::<&str>; samples.len()]))),
        ("status", strings(&|_| "success".into())),
        ("width", ints()),
        ("height", ints()),
        ("original_width", ints()),
        ("original_height", ints()),
        ("exif", strings(&|_| "{}".into())),
        ("sha256", strings(&|s| s.sha256())),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| {
                let nullable = *name == "error_message";
                Field::new(*name, a.data_type().clone(), nullable)
            })
            .collect::<Vec<_>>(),
    ));
    debug_assert!(schema.fields().iter().any(|f| f.data_type() == &DataType::Binary));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect())
        .map_err(|e| DataError::Invalid(format!("building parquet batch: {e}")))?;
    let path = dir.join(format!("{shard:05}.parquet"));
    let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .build();
    let fail = |e: parquet::errors::ParquetError| DataError::Parquet {
        path: path.clone(),
        message: e.to_string(),
    };
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(fail)?;
    writer.write(&batch).map_err(fail)?;
    writer.close().map_err(fail)?;
    write_stats(dir, shard, samples.len())?;
    Ok(path)
}

/// Writes `NNNNN.tar`: per sample `key.jpg`, `key.txt`, `key.json`, in that order.
pub fn tar_shard(
    dir: &Path,
    shard: u64,
    samples: &[SynthSample],
    opts: &SynthOptions,
) -> Result<PathBuf> {
    let path = dir.join(format!("{shard:05}.tar"));
    let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let io = |e| DataError::io(&path, e);
    for s in samples {
        let json = serde_json::to_vec(&s.json()).expect("json");
        for (suffix, bytes) in
            [(ext(opts), &s.image[..]), ("txt", s.caption.as_bytes()), ("json", &json[..])]
        {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("{}.{suffix}", s.key), bytes).map_err(io)?;
        }
    }
    let mut inner = tar.into_inner().map_err(io)?;
    inner.flush().map_err(io)?;
    write_stats(dir, shard, samples.len())?;
    Ok(path)
}

/// img2dataset's completion marker `NNNNN_stats.json` (the fields our reader and users look at).
fn write_stats(dir: &Path, shard: u64, count: usize) -> Result<()> {
    let stats = serde_json::json!({
        "count": count, "successes": count, "failed_to_download": 0, "failed_to_resize": 0,
        "duration": 0.0, "start_time": 0.0, "end_time": 0.0,
        "status_dict": {"success": count},
    });
    let path = dir.join(format!("{shard:05}_stats.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&stats).expect("json"))
        .map_err(|e| DataError::io(&path, e))
}
