//! Writers for synthetic shards: img2dataset's parquet schema and WebDataset tars.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
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

/// A parquet column of the synthetic shards: its name, and each sample's value.
enum Column<'a> {
    Text(&'static str, Vec<String>),
    /// A nullable string column that is null in every row (`error_message` of a success).
    Null(&'static str),
    Binary(&'static str, Vec<&'a [u8]>),
    Int64(&'static str, Vec<i64>),
}

impl Column<'_> {
    /// The column in parquet's schema language, as pyarrow writes it for `string`, `binary`
    /// and `int64` arrays.
    fn schema(&self) -> String {
        match self {
            Column::Text(n, _) => format!("REQUIRED BYTE_ARRAY {n} (STRING);"),
            Column::Null(n) => format!("OPTIONAL BYTE_ARRAY {n} (STRING);"),
            Column::Binary(n, _) => format!("REQUIRED BYTE_ARRAY {n};"),
            Column::Int64(n, _) => format!("REQUIRED INT64 {n};"),
        }
    }

    /// Writes rows `rows` of this column into the row group's next column chunk.
    fn write(&self, out: &mut ColumnWriter<'_>, rows: Range<usize>) -> parquet::errors::Result<()> {
        match (self, out) {
            (Column::Text(_, v), ColumnWriter::ByteArrayColumnWriter(w)) => {
                let values: Vec<ByteArray> = v[rows].iter().map(|s| s.as_str().into()).collect();
                w.write_batch(&values, None, None)?;
            }
            (Column::Null(_), ColumnWriter::ByteArrayColumnWriter(w)) => {
                w.write_batch(&[], Some(&vec![0; rows.len()]), None)?;
            }
            (Column::Binary(_, v), ColumnWriter::ByteArrayColumnWriter(w)) => {
                let values: Vec<ByteArray> = v[rows].iter().map(|b| b.to_vec().into()).collect();
                w.write_batch(&values, None, None)?;
            }
            (Column::Int64(_, v), ColumnWriter::Int64ColumnWriter(w)) => {
                w.write_batch(&v[rows], None, None)?;
            }
            _ => unreachable!("the column writers follow the schema made from the same columns"),
        }
        Ok(())
    }
}

/// Writes `NNNNN.parquet` with img2dataset's columns (image column named by its encoding), in
/// row groups of `opts.row_group_rows`.
pub fn parquet_shard(
    dir: &Path,
    shard: u64,
    samples: &[SynthSample],
    opts: &SynthOptions,
) -> Result<PathBuf> {
    let text = |name, f: &dyn Fn(&SynthSample) -> String| {
        Column::Text(name, samples.iter().map(f).collect())
    };
    let side = || vec![opts.side as i64; samples.len()];
    let columns = [
        text("key", &|s| s.key.clone()),
        Column::Binary(ext(opts), samples.iter().map(|s| &s.image[..]).collect()),
        text("url", &|s| s.url()),
        text("caption", &|s| s.caption.clone()),
        text("colour", &|s| s.scene.colour.clone()),
        text("shape", &|s| s.scene.shape.clone()),
        text("size", &|s| s.scene.size.clone()),
        text("position", &|s| s.scene.position.clone()),
        text("background", &|s| s.scene.background.clone()),
        Column::Null("error_message"),
        text("status", &|_| "success".into()),
        Column::Int64("width", side()),
        Column::Int64("height", side()),
        Column::Int64("original_width", side()),
        Column::Int64("original_height", side()),
        text("exif", &|_| "{}".into()),
        text("sha256", &|s| s.sha256()),
    ];
    let path = dir.join(format!("{shard:05}.parquet"));
    let fail = |e: parquet::errors::ParquetError| DataError::Parquet {
        path: path.clone(),
        message: e.to_string(),
    };
    let message: String = columns.iter().map(Column::schema).collect();
    let schema = parse_message_type(&format!("message schema {{ {message} }}")).map_err(fail)?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
    let mut writer =
        SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).map_err(fail)?;
    let group_rows = opts.row_group_rows.max(1);
    for start in (0..samples.len()).step_by(group_rows) {
        let rows = start..(start + group_rows).min(samples.len());
        let mut group = writer.next_row_group().map_err(fail)?;
        for column in &columns {
            let mut out = group.next_column().map_err(fail)?.expect("one writer per column");
            column.write(out.untyped(), rows.clone()).map_err(fail)?;
            out.close().map_err(fail)?;
        }
        group.close().map_err(fail)?;
    }
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
