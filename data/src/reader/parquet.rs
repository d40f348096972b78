//! img2dataset parquet shards, streamed one row group at a time with column projection: only the
//! key, caption, status, image and filter columns are read, `BATCH_ROWS` rows at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use super::{RawSample, SampleMeta, Unit, META_COLUMNS};
use crate::stats::SkipReason;

/// Rows decoded per arrow batch: bounds memory to a few dozen compressed images.
const BATCH_ROWS: usize = 32;
/// Image columns img2dataset may write, in order of preference.
const IMAGE_COLUMNS: [&str; 4] = ["jpg", "png", "webp", "image"];

pub struct ParquetShard {
    path: PathBuf,
    state: State,
    units: u64,
}

enum State {
    /// The shard could not be opened; the skip is reported once.
    Failed(Option<Unit>),
    Open(Box<OpenShard>),
    Done,
}

struct OpenShard {
    file: File,
    meta: ArrowReaderMetadata,
    mask: ProjectionMask,
    next_row_group: usize,
    reader: Option<ParquetRecordBatchReader>,
    batch: Option<RecordBatch>,
    row: usize,
    rows_seen: u64,
}

impl ParquetShard {
    pub fn open(path: &Path) -> ParquetShard {
        let state = match Self::try_open(path) {
            Ok(open) => State::Open(Box::new(open)),
            Err((reason, detail)) => State::Failed(Some(Unit::skip(reason, None, detail))),
        };
        ParquetShard { path: path.to_path_buf(), state, units: 0 }
    }

    fn try_open(path: &Path) -> Result<OpenShard, (SkipReason, String)> {
        let unreadable = |e: String| (SkipReason::UnreadableShard, e);
        let file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
        if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
            return Err((SkipReason::EmptyShard, "zero-byte file".into()));
        }
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| unreadable(e.to_string()))?;
        let schema = meta.schema().clone();
        let wanted = |name: &str| {
            ["key", "caption", "status"].contains(&name)
                || IMAGE_COLUMNS.contains(&name)
                || META_COLUMNS.contains(&name)
        };
        let roots: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted(f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(meta.parquet_schema(), roots);
        Ok(OpenShard {
            file,
            meta,
            mask,
            next_row_group: 0,
            reader: None,
            batch: None,
            row: 0,
            rows_seen: 0,
        })
    }

    /// The shard's column names, or None when its footer cannot be read.
    pub fn column_names(path: &Path) -> Option<Vec<String>> {
        let file = File::open(path).ok()?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).ok()?;
        Some(meta.schema().fields().iter().map(|f| f.name().clone()).collect())
    }

    /// Number of rows according to the footer (0 when unreadable).
    pub fn footer_rows(path: &Path) -> u64 {
        File::open(path)
            .ok()
            .and_then(|f| ArrowReaderMetadata::load(&f, ArrowReaderOptions::new()).ok())
            .map(|m| m.metadata().file_metadata().num_rows().max(0) as u64)
            .unwrap_or(0)
    }

    fn step(&mut self) -> Option<Unit> {
        let open = match &mut self.state {
            State::Failed(skip) => {
                let unit = skip.take();
                if unit.is_none() {
                    self.state = State::Done;
                }
                return unit;
            }
            State::Done => return None,
            State::Open(open) => open,
        };
        loop {
            if let Some(batch) = &open.batch {
                if open.row < batch.num_rows() {
                    let unit = row_unit(batch, open.row, &self.path);
                    open.row += 1;
                    open.rows_seen += 1;
                    return Some(unit);
                }
                open.batch = None;
            }
            if let Some(reader) = &mut open.reader {
                match reader.next() {
                    Some(Ok(batch)) => {
                        open.batch = Some(batch);
                        open.row = 0;
                    }
                    Some(Err(e)) => {
                        open.reader = None;
                        let detail = format!("row group {}: {e}", open.next_row_group - 1);
                        return Some(Unit::skip(SkipReason::DamagedRowGroup, None, detail));
                    }
                    None => open.reader = None,
                }
                continue;
            }
            let groups = open.meta.metadata().num_row_groups();
            if open.next_row_group < groups {
                let group = open.next_row_group;
                open.next_row_group += 1;
                let built = open.file.try_clone().map_err(|e| e.to_string()).and_then(|file| {
                    ParquetRecordBatchReaderBuilder::new_with_metadata(file, open.meta.clone())
                        .with_row_groups(vec![group])
                        .with_projection(open.mask.clone())
                        .with_batch_size(BATCH_ROWS)
                        .build()
                        .map_err(|e| e.to_string())
                });
                match built {
                    Ok(reader) => open.reader = Some(reader),
                    Err(e) => {
                        let detail = format!("row group {group}: {e}");
                        return Some(Unit::skip(SkipReason::DamagedRowGroup, None, detail));
                    }
                }
                continue;
            }
            let empty = open.rows_seen == 0 && self.units == 0;
            self.state = State::Done;
            return empty.then(|| Unit::skip(SkipReason::EmptyShard, None, "no rows"));
        }
    }
}

impl Iterator for ParquetShard {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        // Damaged pages can trip assertions inside the parquet decoders: a panic there ends the
        // shard as a counted skip instead of the run.
        let unit = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step())) {
            Ok(unit) => unit,
            Err(_) => {
                self.state = State::Done;
                Some(Unit::skip(SkipReason::DamagedShard, None, "parquet decoder panicked"))
            }
        };
        self.units += unit.is_some() as u64;
        unit
    }
}

fn row_unit(batch: &RecordBatch, row: usize, path: &Path) -> Unit {
    let col = |name: &str| batch.column_by_name(name).map(|c| c.as_ref());
    let key = col("key")
        .and_then(|c| string_at(c, row))
        .unwrap_or_else(|| format!("{}#{row}", path.display()));
    if let Some(status) = col("status").and_then(|c| string_at(c, row)) {
        if status != "success" {
            return Unit::skip(SkipReason::NotSuccess, Some(key), format!("status {status}"));
        }
    }
    let image = IMAGE_COLUMNS.iter().find_map(|name| col(name).and_then(|c| bytes_at(c, row)));
    let Some(image) = image else {
        return Unit::skip(SkipReason::MissingImage, Some(key), "image column is null or absent");
    };
    let Some(caption) = col("caption").and_then(|c| string_at(c, row)) else {
        return Unit::skip(SkipReason::MissingCaption, Some(key), "caption is null or absent");
    };
    let meta = SampleMeta::from_fields(|name: &str| col(name).and_then(|c| number_at(c, row)));
    Unit::Sample(RawSample { key, caption, image, meta })
}

fn string_at(col: &dyn Array, row: usize) -> Option<String> {
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Utf8 => Some(col.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Some(col.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Some(col.as_string_view().value(row).to_string()),
        _ => None,
    }
}

fn bytes_at(col: &dyn Array, row: usize) -> Option<Vec<u8>> {
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Binary => Some(col.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Some(col.as_binary::<i64>().value(row).to_vec()),
        DataType::BinaryView => Some(col.as_binary_view().value(row).to_vec()),
        _ => None,
    }
}

fn number_at(col: &dyn Array, row: usize) -> Option<f64> {
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Float64 => col.as_primitive::<Float64Type>().value(row),
        DataType::Float32 => col.as_primitive::<Float32Type>().value(row) as f64,
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row) as f64,
        DataType::Int32 => col.as_primitive::<Int32Type>().value(row) as f64,
        DataType::Int16 => col.as_primitive::<Int16Type>().value(row) as f64,
        DataType::Int8 => col.as_primitive::<Int8Type>().value(row) as f64,
        DataType::UInt64 => col.as_primitive::<UInt64Type>().value(row) as f64,
        DataType::UInt32 => col.as_primitive::<UInt32Type>().value(row) as f64,
        DataType::UInt16 => col.as_primitive::<UInt16Type>().value(row) as f64,
        DataType::UInt8 => col.as_primitive::<UInt8Type>().value(row) as f64,
        _ => return None,
    })
}
