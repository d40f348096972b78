use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped when the checkpoint layout, or what its tensors mean, changes incompatibly.
/// 2: the U-Net's time and augmentation embeddings take log-SNR, not t (version 1's weights
/// would load and sample noise).
pub const STATE_VERSION: u32 = 2;

/// `state.json`: everything besides tensors that a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub version: u32,
    /// Optimizer steps taken.
    pub step: u64,
    /// Training samples consumed (over all ranks).
    pub samples_seen: u64,
    /// The data stream's position (imagen-data's cursor), per rank.
    pub data_cursors: Vec<serde_json::Value>,
    /// Random streams are re-seeded from (seed, step, rank) at every step, so the seed and the
    /// step are the whole RNG state.
    pub seed: u64,
    /// Updates skipped because the loss or a gradient was not finite.
    pub nonfinite_skipped: u64,
    /// How many of those came last, in a row: a resumed run stops after
    /// `train.max_nonfinite_in_row` in a row counting the ones before its start.
    #[serde(default)]
    pub nonfinite_in_row: u64,
    /// The imagen version that wrote it.
    pub imagen_version: String,
    /// Which of its config's `[[stages]]` the weights are (None in checkpoints written before it
    /// was recorded: the stage they are loaded as). A stage trained under a config of its own
    /// (a one-stage super-resolution preset) is that config's stage 0, and stage 1 or 2 of the
    /// cascade that samples it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<usize>,
    /// `text::identity::encoder_fingerprint` of `text.model` when the run started: a config
    /// naming the encoder at another path is accepted where the fingerprint matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<String>,
    /// Each rank's weight fingerprint when saved (`imagen_trainer::dist::fingerprint` of the
    /// model tensors): equal on every rank, or the checkpoint is refused.
    #[serde(default)]
    pub weight_fingerprints: Vec<i64>,
    /// Each tensor file's and `config.toml`'s size and CRC-32C, recorded by `checkpoint::save`
    /// (whatever the caller put here is replaced): a file truncated or altered after the save (a
    /// partial copy, a failing disk) is caught before a run resumes from it. Empty in checkpoints
    /// written before the digests existed, which are then taken as they are (and without
    /// `config.toml` in those written before it had one).
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
}

/// What `state.json` records of one file of its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    /// CRC-32C (Castagnoli) of the whole file.
    pub crc32c: u32,
}
