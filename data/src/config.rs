//! The `[data]` section of the run configuration.

use serde::{Deserialize, Serialize};

use crate::decode::{CropMode, ImageLimits, Transform};

/// How shard files are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatChoice {
    /// By extension: `.parquet` is img2dataset parquet, `.tar` is WebDataset.
    #[default]
    Auto,
    Parquet,
    Wds,
}

/// Thresholds on img2dataset/LAION metadata. A threshold on a column the shards lack is a
/// start-up error; a sample whose value is null is dropped (counted as `filtered`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Minimum of `original_width` and `original_height`. Default: none.
    pub min_original_side: Option<f64>,
    /// Maximum of long side / short side of the original. Default: none.
    pub max_aspect_ratio: Option<f64>,
    /// Maximum `punsafe` (NSFW probability). Default: none.
    pub max_punsafe: Option<f64>,
    /// Maximum `pwatermark` (watermark probability). Default: none.
    pub max_pwatermark: Option<f64>,
    /// Minimum `similarity` (CLIP image-text similarity). Default: none.
    pub min_similarity: Option<f64>,
    /// Minimum `aesthetic` or `AESTHETIC_SCORE`. Default: none.
    pub min_aesthetic: Option<f64>,
}

/// Where a shard keeps each sample's image and caption: for img2dataset's shards the defaults
/// find them; other layouts name theirs, e.g. a Hugging Face `datasets` parquet export with
/// `image = "image"` and `caption = "text"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColumnsConfig {
    /// Parquet: the image column, binary or a struct with a binary `bytes` field (how `datasets`
    /// stores its `Image` feature). WebDataset: the image member's extension. Default: none,
    /// meaning parquet's `jpg`, `png`, `webp` and `image` columns (a row's first that is not
    /// null) and WebDataset's `jpg`, `jpeg`, `png` or `webp` member.
    pub image: Option<String>,
    /// Parquet: the caption column. WebDataset: the caption member's extension, else the field of
    /// that name in the sample's `.json`. Default: none, meaning parquet's `caption` and
    /// WebDataset's `txt` member, else the `.json`'s `caption`.
    pub caption: Option<String>,
}

/// Where training samples come from and how they become batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Shard list: files, directories, globs, brace ranges (`laion/{00000..41455}.tar`) and list
    /// files (one entry per line). Default: empty (a start-up error for training).
    pub shards: Vec<String>,
    /// Shard format. Default: "auto" (by extension).
    pub format: FormatChoice,
    /// Output side in pixels; the trainer overrides it per stage. Default: 64.
    pub side: u32,
    /// Samples per batch on each rank. Default: 64.
    pub batch_size: usize,
    /// Decode threads (a rayon pool per loader). Default: 4.
    pub workers: usize,
    /// Batches decoded ahead of the trainer. Default: 4.
    pub prefetch: usize,
    /// Shuffle window, in compressed samples (memory: this many encoded images). Default: 2048.
    pub shuffle_buffer: usize,
    /// Shards of a rank read at once, interleaved sample by sample. Default: 4.
    pub readers: usize,
    /// Seed of shard order, shuffle and random crops. Default: 0.
    pub seed: u64,
    /// Crop of the square: "center" or "random" (along the longer axis). Default: "center".
    pub crop: CropMode,
    /// Random horizontal flips. Default: false (captions say left and right).
    pub flip: bool,
    /// DCT-scaled JPEG decoding when the source is at least twice the side. Default: true.
    pub dct_scaling: bool,
    /// Only read shards that have img2dataset's `NNNNN_stats.json` marker. Default: false.
    pub require_stats: bool,
    /// Images whose shorter side is smaller are skipped. Default: 8.
    pub min_image_side: u32,
    /// Images with more pixels are skipped before decoding. Default: 100000000.
    pub max_image_pixels: u64,
    /// Batches per epoch on every rank; 0 derives it from the shards' sample counts. Default: 0.
    pub epoch_batches: u64,
    /// Metadata filters. Default: none.
    pub filters: FilterConfig,
    /// The image and caption columns (or WebDataset members). Default: img2dataset's.
    pub columns: ColumnsConfig,
    /// Held-out shards for validation (same syntax as `shards`). Default: empty.
    pub heldout_shards: Vec<String>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            shards: Vec::new(),
            format: FormatChoice::Auto,
            side: 64,
            batch_size: 64,
            workers: 4,
            prefetch: 4,
            shuffle_buffer: 2048,
            readers: 4,
            seed: 0,
            crop: CropMode::Center,
            flip: false,
            dct_scaling: true,
            require_stats: false,
            min_image_side: 8,
            max_image_pixels: 100_000_000,
            epoch_batches: 0,
            filters: FilterConfig::default(),
            columns: ColumnsConfig::default(),
            heldout_shards: Vec::new(),
        }
    }
}

impl DataConfig {
    /// How this configuration turns a sample into pixels at `side` (the crop's position and the
    /// flip are drawn per sample).
    pub fn transform(&self, side: u32) -> Transform {
        Transform {
            side,
            crop: self.crop,
            crop_at: 0.5,
            flip: false,
            limits: ImageLimits {
                min_side: self.min_image_side,
                max_pixels: self.max_image_pixels,
            },
            dct_scaling: self.dct_scaling,
        }
    }

    /// The configuration of the validation loader: the held-out shards, centre crops, no flips.
    /// None when no held-out shards are configured.
    pub fn heldout(&self) -> Option<DataConfig> {
        if self.heldout_shards.is_empty() {
            return None;
        }
        Some(DataConfig {
            shards: self.heldout_shards.clone(),
            crop: CropMode::Center,
            flip: false,
            heldout_shards: Vec::new(),
            ..self.clone()
        })
    }
}
