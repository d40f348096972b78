//! Counts of good samples and of skipped units by reason, and the rate-limited warning that names
//! the shard and key of each skip.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Why a unit (a sample, a row group or a whole shard) was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// img2dataset's `status` is not `success` (a failed download).
    NotSuccess,
    /// No image payload (null column, or no jpg/png/webp member).
    MissingImage,
    /// No caption (null column, or no txt member).
    MissingCaption,
    /// The payload is not a JPEG, PNG or WebP file.
    NotAnImage,
    /// The image header or data is corrupt or truncated.
    CorruptImage,
    /// The image's shorter side is under `min_image_side`.
    ImageTooSmall,
    /// The image has more than `max_image_pixels` pixels.
    ImageTooLarge,
    /// A tar member is larger than the loader accepts.
    MemberTooLarge,
    /// Dropped by a configured filter on the metadata.
    Filtered,
    /// A parquet row group could not be read; its remaining rows are lost.
    DamagedRowGroup,
    /// A tar ended inside a member or header; the rest of the shard is lost.
    TruncatedShard,
    /// A tar header is corrupt (checksum, size); the rest of the shard is lost.
    DamagedShard,
    /// A shard could not be opened or parsed at all (damaged footer, not a tar, unreadable).
    UnreadableShard,
    /// A shard holds no sample (zero bytes, or no rows).
    EmptyShard,
    /// `require_stats` is on and the shard has no `NNNNN_stats.json`.
    MissingStatsMarker,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotSuccess => "not_success",
            SkipReason::MissingImage => "missing_image",
            SkipReason::MissingCaption => "missing_caption",
            SkipReason::NotAnImage => "not_an_image",
            SkipReason::CorruptImage => "corrupt_image",
            SkipReason::ImageTooSmall => "image_too_small",
            SkipReason::ImageTooLarge => "image_too_large",
            SkipReason::MemberTooLarge => "member_too_large",
            SkipReason::Filtered => "filtered",
            SkipReason::DamagedRowGroup => "damaged_row_group",
            SkipReason::TruncatedShard => "truncated_shard",
            SkipReason::DamagedShard => "damaged_shard",
            SkipReason::UnreadableShard => "unreadable_shard",
            SkipReason::EmptyShard => "empty_shard",
            SkipReason::MissingStatsMarker => "missing_stats_marker",
        }
    }

    /// Whether the reason concerns a whole shard or row group rather than one sample.
    pub fn is_shard_level(self) -> bool {
        matches!(
            self,
            SkipReason::DamagedRowGroup
                | SkipReason::TruncatedShard
                | SkipReason::DamagedShard
                | SkipReason::UnreadableShard
                | SkipReason::EmptyShard
                | SkipReason::MissingStatsMarker
        )
    }
}

/// Good samples and skips by reason (keys are [`SkipReason::as_str`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipStats {
    pub good: u64,
    pub skipped: BTreeMap<String, u64>,
}

impl SkipStats {
    pub fn add_skip(&mut self, reason: SkipReason) {
        *self.skipped.entry(reason.as_str().to_string()).or_default() += 1;
    }

    pub fn count(&self, reason: SkipReason) -> u64 {
        self.skipped.get(reason.as_str()).copied().unwrap_or(0)
    }

    pub fn total_skipped(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Sample-level skips only (not shards or row groups).
    pub fn sample_skips(&self) -> u64 {
        self.skipped
            .iter()
            .filter(|(k, _)| !SHARD_LEVEL.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum()
    }
}

const SHARD_LEVEL: [&str; 6] = [
    "damaged_row_group",
    "truncated_shard",
    "damaged_shard",
    "unreadable_shard",
    "empty_shard",
    "missing_stats_marker",
];

/// Logs skips naming shard and key, at most `per_window` per window, then one line saying how
/// many were not shown.
#[derive(Debug)]
pub struct SkipWarner {
    window: Duration,
    per_window: u32,
    started: Instant,
    shown: u32,
    suppressed: u64,
}

impl Default for SkipWarner {
    fn default() -> Self {
        SkipWarner {
            window: Duration::from_secs(10),
            per_window: 5,
            started: Instant::now(),
            shown: 0,
            suppressed: 0,
        }
    }
}

impl SkipWarner {
    pub fn warn(&mut self, reason: SkipReason, shard: &str, key: Option<&str>, detail: &str) {
        if self.started.elapsed() >= self.window {
            self.flush();
            self.started = Instant::now();
            self.shown = 0;
        }
        if self.shown < self.per_window {
            self.shown += 1;
            let key = key.unwrap_or("-");
            tracing::warn!("skipped ({}) shard {shard} key {key}: {detail}", reason.as_str());
        } else {
            self.suppressed += 1;
        }
    }

    /// Says how many skips went unshown since the last line that said so.
    fn flush(&mut self) {
        if self.suppressed > 0 {
            tracing::warn!("{} more skipped samples not shown", self.suppressed);
            self.suppressed = 0;
        }
    }
}

impl Drop for SkipWarner {
    /// The last window's tally, which no later skip would report.
    fn drop(&mut self) {
        self.flush();
    }
}
