//! img2dataset parquet shards, streamed one row group at a time with column projection: only the
//! key, caption, status, image and filter columns are decoded, `BATCH_ROWS` values at a time.
//! Other layouts name their image and caption columns (`data.columns`); an image column may also
//! be a struct with a binary `bytes` field, as Hugging Face `datasets` writes its `Image` feature.
//!
//! This reads through parquet's own record API rather than arrow: the columns are flat, a row at a
//! time is what the shuffle buffer wants, and the arrow crates were a fifth of a cold build.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::file::metadata::FileMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::{ReaderIter, TreeBuilder};
use parquet::record::Field;
use parquet::schema::types::{SchemaDescPtr, SchemaDescriptor, Type};

use super::{RawSample, SampleMeta, Unit, META_COLUMNS};
use crate::config::ColumnsConfig;
use crate::error::panic_message;
use crate::stats::SkipReason;

/// Values decoded per column read: bounds memory to a few dozen compressed images.
const BATCH_ROWS: usize = 32;
/// Image columns img2dataset may write, in order of preference.
const IMAGE_COLUMNS: [&str; 4] = ["jpg", "png", "webp", "image"];
/// The caption column unless `data.columns.caption` names another.
const CAPTION_COLUMN: &str = "caption";
/// The binary field of a struct image column (`datasets`' `Image` feature: `{bytes, path}`).
const NESTED_BYTES: &str = "bytes";

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
    reader: SerializedFileReader<File>,
    /// The wanted top-level columns only.
    projection: SchemaDescPtr,
    next_row_group: usize,
    rows: Option<ReaderIter>,
    rows_seen: u64,
    /// The file's row number of the next row of the current row group, and of the row after
    /// that group: keys made from row numbers stay the file's after a damaged group.
    next_row: u64,
    group_end: u64,
    names: ColumnNames,
}

/// The columns a shard's rows are read from.
struct ColumnNames {
    /// Every usable image column, in order of preference: a row's image is the first that is
    /// not null (a shard may fill `jpg` in some rows and `png` in others).
    images: Vec<ImageColumn>,
    caption: String,
}

impl ColumnNames {
    fn image(&self, name: &str) -> Option<&ImageColumn> {
        self.images.iter().find(|c| c.name == name)
    }
}

/// The image column: its name, and whether it is a struct whose `bytes` field holds the image.
struct ImageColumn {
    name: String,
    nested: bool,
}

impl ParquetShard {
    pub fn open(path: &Path, columns: &ColumnsConfig) -> ParquetShard {
        let state = match Self::try_open(path, columns) {
            Ok(open) => State::Open(Box::new(open)),
            Err((reason, detail)) => State::Failed(Some(Unit::skip(reason, None, detail))),
        };
        ParquetShard { path: path.to_path_buf(), state, units: 0 }
    }

    fn try_open(path: &Path, columns: &ColumnsConfig) -> Result<OpenShard, (SkipReason, String)> {
        let unreadable = |e: String| (SkipReason::UnreadableShard, e);
        let file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
        if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
            return Err((SkipReason::EmptyShard, "zero-byte file".into()));
        }
        let reader = SerializedFileReader::new(file).map_err(|e| unreadable(e.to_string()))?;
        let root = reader.metadata().file_metadata().schema_descr().root_schema();
        // A shard without the image or the caption column (img2dataset's metadata-only side-car
        // of a WebDataset tar, say, or another layout under the default names) is one skip that
        // says which columns it has, not a missing image per row.
        let names = column_names(root, columns).map_err(unreadable)?;
        let wanted = |name: &str| {
            ["key", "status"].contains(&name)
                || name == names.caption
                || names.image(name).is_some()
                || META_COLUMNS.contains(&name)
        };
        let mut fields = Vec::new();
        for field in root.get_fields().iter().filter(|f| wanted(f.name())) {
            if field.is_primitive() {
                fields.push(field.clone());
            } else if names.image(field.name()).is_some() {
                // Only the struct's `bytes` (not its `path`) is decoded.
                let bytes = field.get_fields().iter().find(|f| f.name() == NESTED_BYTES);
                let pruned = Type::group_type_builder(field.name())
                    .with_repetition(field.get_basic_info().repetition())
                    .with_fields(bytes.into_iter().cloned().collect())
                    .build()
                    .map_err(|e| unreadable(e.to_string()))?;
                fields.push(Arc::new(pruned));
            }
        }
        let projection = Type::group_type_builder(root.name())
            .with_fields(fields)
            .build()
            .map_err(|e| unreadable(e.to_string()))?;
        let projection = Arc::new(SchemaDescriptor::new(Arc::new(projection)));
        Ok(OpenShard {
            reader,
            projection,
            next_row_group: 0,
            rows: None,
            rows_seen: 0,
            next_row: 0,
            group_end: 0,
            names,
        })
    }

    /// The shard's footer, or None when it cannot be read.
    fn footer(path: &Path) -> Option<FileMetaData> {
        let reader = SerializedFileReader::new(File::open(path).ok()?).ok()?;
        Some(reader.metadata().file_metadata().clone())
    }

    /// The shard's column names, or None when its footer cannot be read.
    pub fn column_names(path: &Path) -> Option<Vec<String>> {
        let root = Self::footer(path)?.schema_descr().root_schema().clone();
        Some(root.get_fields().iter().map(|f| f.name().to_string()).collect())
    }

    /// Number of rows according to the footer (0 when unreadable or without the image and
    /// caption columns).
    pub fn footer_rows(path: &Path, columns: &ColumnsConfig) -> u64 {
        Self::footer(path)
            .filter(|m| column_names(m.schema_descr().root_schema(), columns).is_ok())
            .map(|m| m.num_rows().max(0) as u64)
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
            if let Some(rows) = &mut open.rows {
                match rows.next() {
                    Some(Ok(row)) => {
                        open.rows_seen += 1;
                        open.next_row += 1;
                        let row = row.into_columns();
                        return Some(row_unit(row, open.next_row - 1, &self.path, &open.names));
                    }
                    Some(Err(e)) => {
                        // The record reader cannot resynchronise inside a row group.
                        open.rows = None;
                        let lost = open.group_end.saturating_sub(open.next_row);
                        let detail = format!(
                            "row group {}: {e} (its rows from {} on, {lost} in all, are lost)",
                            open.next_row_group - 1,
                            open.next_row
                        );
                        return Some(Unit::skip(SkipReason::DamagedRowGroup, None, detail));
                    }
                    None => open.rows = None,
                }
                continue;
            }
            if open.next_row_group < open.reader.num_row_groups() {
                let group = open.next_row_group;
                open.next_row_group += 1;
                let group_rows = open.reader.metadata().row_group(group).num_rows().max(0) as u64;
                open.next_row = open.group_end;
                open.group_end += group_rows;
                let built = open.reader.get_row_group(group).and_then(|g| {
                    TreeBuilder::new()
                        .with_batch_size(BATCH_ROWS)
                        .as_iter(open.projection.clone(), g.as_ref())
                });
                match built {
                    Ok(rows) => open.rows = Some(rows),
                    Err(e) => {
                        let detail = format!("row group {group}: {e} ({group_rows} rows lost)");
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
            Err(panic) => {
                self.state = State::Done;
                let detail = format!("parquet decoder panicked: {}", panic_message(&*panic));
                Some(Unit::skip(SkipReason::DamagedShard, None, detail))
            }
        };
        self.units += unit.is_some() as u64;
        unit
    }
}

/// The image and caption columns of a shard with schema `root` under `columns`, or why it has
/// none usable.
fn column_names(root: &Type, columns: &ColumnsConfig) -> Result<ColumnNames, String> {
    let fields = root.get_fields();
    let found: Vec<&str> = fields.iter().map(|f| f.name()).collect();
    let candidates: Vec<&str> = match &columns.image {
        Some(name) => vec![name.as_str()],
        None => IMAGE_COLUMNS.to_vec(),
    };
    let images: Vec<ImageColumn> = candidates
        .iter()
        .filter_map(|&name| {
            let field = fields.iter().find(|f| f.name() == name)?;
            if is_bytes_leaf(field) {
                return Some(ImageColumn { name: name.to_owned(), nested: false });
            }
            let nested = !field.is_primitive()
                && field.get_fields().iter().any(|f| f.name() == NESTED_BYTES && is_bytes_leaf(f));
            nested.then(|| ImageColumn { name: name.to_owned(), nested: true })
        })
        .collect();
    if images.is_empty() {
        return Err(format!(
            "no image column: none of {candidates:?} is a binary column or a struct with a binary \
             `{NESTED_BYTES}` field (its columns: {found:?}; data.columns.image names another)"
        ));
    }
    let caption = columns.caption.as_deref().unwrap_or(CAPTION_COLUMN);
    let Some(field) = fields.iter().find(|f| f.name() == caption && f.is_primitive()) else {
        return Err(format!(
            "no caption column {caption:?} (its columns: {found:?}; data.columns.caption names \
             another)"
        ));
    };
    if field.get_physical_type() != parquet::basic::Type::BYTE_ARRAY {
        return Err(format!(
            "caption column {caption:?} holds {}, not text (data.columns.caption names another)",
            field.get_physical_type()
        ));
    }
    Ok(ColumnNames { images, caption: caption.to_owned() })
}

/// Whether `field` reads as bytes: binary without a string annotation, not repeated.
fn is_bytes_leaf(field: &Type) -> bool {
    use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as Physical};
    let info = field.get_basic_info();
    if !field.is_primitive() || (info.has_repetition() && info.repetition() == Repetition::REPEATED)
    {
        return false;
    }
    // As parquet's record reader maps them to `Field::Bytes`.
    match (field.get_physical_type(), info.converted_type()) {
        (Physical::BYTE_ARRAY, ConvertedType::NONE | ConvertedType::BSON) => true,
        (Physical::FIXED_LEN_BYTE_ARRAY, ConvertedType::NONE) => {
            info.logical_type_ref() != Some(&LogicalType::Float16)
        }
        _ => false,
    }
}

/// One projected row (`row` counts rows of the shard, for a key when the key column is missing).
fn row_unit(mut columns: Vec<(String, Field)>, row: u64, path: &Path, names: &ColumnNames) -> Unit {
    let mut take = |name: &str| {
        let i = columns.iter().position(|(n, _)| n == name)?;
        Some(std::mem::replace(&mut columns[i].1, Field::Null))
    };
    // Without a usable key column, the file's name and the row: the same whichever directory
    // (or spelling of it) `imagen embed` and training were given, so the embedding cache matches.
    let key = take("key").and_then(key_text).unwrap_or_else(|| {
        let name = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        format!("{name}#{row}")
    });
    if let Some(status) = take("status").and_then(string) {
        if status != "success" {
            return Unit::skip(SkipReason::NotSuccess, Some(key), format!("status {status}"));
        }
    }
    let image = names.images.iter().find_map(|column| {
        take(&column.name).and_then(|field| match field {
            Field::Group(row) if column.nested => row
                .into_columns()
                .into_iter()
                .find(|(name, _)| name == NESTED_BYTES)
                .and_then(|(_, field)| bytes(field)),
            field => bytes(field),
        })
    });
    let Some(image) = image else {
        let names: Vec<&str> = names.images.iter().map(|c| c.name.as_str()).collect();
        let detail = format!("image column {names:?} is null");
        return Unit::skip(SkipReason::MissingImage, Some(key), detail);
    };
    let Some(caption) = take(&names.caption).and_then(string) else {
        let detail = format!("caption column {:?} is null", names.caption);
        return Unit::skip(SkipReason::MissingCaption, Some(key), detail);
    };
    let meta = SampleMeta::from_fields(|name: &str| {
        columns.iter().find(|(n, _)| n == name).and_then(|(_, f)| number(f))
    });
    Unit::Sample(RawSample { key, caption, image, meta })
}

/// A key column's value as text: a string, or an integer (some tools write integer keys).
fn key_text(field: Field) -> Option<String> {
    match field {
        Field::Long(v) => Some(v.to_string()),
        Field::Int(v) => Some(v.to_string()),
        Field::ULong(v) => Some(v.to_string()),
        Field::UInt(v) => Some(v.to_string()),
        other => string(other),
    }
}

/// A string column's value (a binary column without the UTF-8 annotation is accepted when valid).
fn string(field: Field) -> Option<String> {
    match field {
        Field::Str(s) => Some(s),
        Field::Bytes(b) => String::from_utf8(b.data().to_vec()).ok(),
        _ => None,
    }
}

fn bytes(field: Field) -> Option<Vec<u8>> {
    match field {
        Field::Bytes(b) => Some(b.data().to_vec()),
        _ => None,
    }
}

fn number(field: &Field) -> Option<f64> {
    Some(match *field {
        Field::Double(v) => v,
        Field::Float(v) => v as f64,
        Field::Float16(v) => f32::from(v) as f64,
        Field::Long(v) => v as f64,
        Field::Int(v) => v as f64,
        Field::Short(v) => v as f64,
        Field::Byte(v) => v as f64,
        Field::ULong(v) => v as f64,
        Field::UInt(v) => v as f64,
        Field::UShort(v) => v as f64,
        Field::UByte(v) => v as f64,
        // Some exports of LAION's scores store them as text.
        Field::Str(ref s) => return s.trim().parse().ok(),
        _ => return None,
    })
}
