use serde::{Deserialize, Serialize};

/// Bumped when the checkpoint layout changes incompatibly.
pub const STATE_VERSION: u32 = 1;

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
    /// The imagen version that wrote it.
    pub imagen_version: String,
    /// Each rank's weight fingerprint when saved (`imagen_trainer::dist::fingerprint` of the
    /// model tensors): equal on every rank, or the checkpoint is refused.
    #[serde(default)]
    pub weight_fingerprints: Vec<i64>,
}
