//! Shard readers: a shard is a stream of units, each a compressed sample or a counted skip.
//! A reader never fails: whatever goes wrong becomes a [`Unit::Skip`] and, for shard-level damage,
//! the end of the stream.

mod parquet;
mod tar;
mod tar_header;

use std::path::Path;

pub use self::parquet::ParquetShard;
pub use self::tar::TarShard;
use crate::config::ColumnsConfig;
use crate::shards::ShardFormat;
use crate::stats::SkipReason;

/// Metadata kept from img2dataset columns or the WebDataset `.json`, for filters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleMeta {
    pub original_width: Option<f64>,
    pub original_height: Option<f64>,
    pub punsafe: Option<f64>,
    pub pwatermark: Option<f64>,
    pub similarity: Option<f64>,
    /// `aesthetic` or `AESTHETIC_SCORE`.
    pub aesthetic: Option<f64>,
}

impl SampleMeta {
    /// Reads the kept LAION columns through `num` (a parquet column or a WebDataset json field,
    /// by name), under img2dataset's names.
    pub fn from_fields(num: impl Fn(&str) -> Option<f64>) -> Self {
        SampleMeta {
            original_width: num("original_width"),
            original_height: num("original_height"),
            punsafe: num("punsafe"),
            pwatermark: num("pwatermark"),
            similarity: num("similarity"),
            aesthetic: num("aesthetic").or_else(|| num("AESTHETIC_SCORE")),
        }
    }
}

/// A sample as stored: the compressed image bytes and its caption.
#[derive(Clone, Debug, PartialEq)]
pub struct RawSample {
    pub key: String,
    pub caption: String,
    pub image: Vec<u8>,
    pub meta: SampleMeta,
}

/// One step of a shard stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Unit {
    Sample(RawSample),
    Skip { reason: SkipReason, key: Option<String>, detail: String },
}

impl Unit {
    fn skip(reason: SkipReason, key: Option<String>, detail: impl Into<String>) -> Unit {
        Unit::Skip { reason, key, detail: detail.into() }
    }
}

/// Metadata columns a filter may need, as they are named in the shards.
pub const META_COLUMNS: [&str; 7] = [
    "original_width",
    "original_height",
    "punsafe",
    "pwatermark",
    "similarity",
    "aesthetic",
    "AESTHETIC_SCORE",
];

/// Samples a shard holds, cheaply: img2dataset's `_stats.json` `successes`, else the parquet
/// footer's row count or a scan of the tar's headers. Used to size nominal epochs.
pub fn count_samples(path: &Path, format: ShardFormat, columns: &ColumnsConfig) -> u64 {
    // img2dataset's marker counts the successful downloads, in both formats; a parquet's footer
    // also counts the rows of failed ones (often a third or more of a LAION shard).
    let marker = crate::shards::stats_marker(path);
    let from_marker = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("successes")?.as_u64());
    from_marker.unwrap_or_else(|| match format {
        ShardFormat::Parquet => ParquetShard::footer_rows(path, columns),
        ShardFormat::Wds => TarShard::scan_keys(path),
    })
}

/// An open shard of either format.
pub enum ShardReader {
    Parquet(ParquetShard),
    Tar(Box<TarShard>),
}

impl ShardReader {
    /// The shard at `path`, its images and captions where `columns` says.
    pub fn open(path: &Path, format: ShardFormat, columns: &ColumnsConfig) -> ShardReader {
        match format {
            ShardFormat::Parquet => ShardReader::Parquet(ParquetShard::open(path, columns)),
            ShardFormat::Wds => ShardReader::Tar(Box::new(TarShard::open(path, columns))),
        }
    }

    /// Skips `n` units (used when restoring a cursor); returns how many were actually there.
    pub fn skip_units(&mut self, n: u64) -> u64 {
        if let ShardReader::Tar(tar) = self {
            tar.begin_skip();
        }
        let mut done = 0;
        while done < n && self.next().is_some() {
            done += 1;
        }
        if let ShardReader::Tar(tar) = self {
            tar.end_skip();
        }
        done
    }

    /// The metadata fields the shard offers (parquet: columns; tar: the first sample's json).
    pub fn meta_fields(path: &Path, format: ShardFormat) -> Option<Vec<String>> {
        match format {
            ShardFormat::Parquet => ParquetShard::column_names(path),
            ShardFormat::Wds => TarShard::first_json_fields(path),
        }
    }
}

impl Iterator for ShardReader {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        match self {
            ShardReader::Parquet(r) => r.next(),
            ShardReader::Tar(r) => r.next(),
        }
    }
}
