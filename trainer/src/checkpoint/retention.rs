use std::path::Path;

use serde::{Deserialize, Serialize};

use super::write::list;
use crate::error::{Result, TrainerError};

/// `[train.checkpoint]`: how often to save and what to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Save every this many optimizer steps (and at the end of the run). Default: 1000.
    pub every_steps: u64,
    /// Keep this many most recent checkpoints. Default: 3.
    pub keep_last: usize,
    /// Also keep, forever, every checkpoint whose step is a multiple of this. Default: none.
    pub keep_every: Option<u64>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { every_steps: 1000, keep_last: 3, keep_every: None }
    }
}

/// Deletes the checkpoints that the retention rule does not keep. Returns the steps removed.
pub fn prune(run_dir: &Path, cfg: &RetentionConfig) -> Result<Vec<u64>> {
    let all = list(run_dir)?;
    let keep_last = cfg.keep_last.max(1);
    let cut = all.len().saturating_sub(keep_last);
    let mut removed = Vec::new();
    for (step, path) in &all[..cut] {
        if cfg.keep_every.is_some_and(|k| k > 0 && step % k == 0) {
            continue;
        }
        std::fs::remove_dir_all(path)
            .map_err(|source| TrainerError::Io { path: path.clone(), source })?;
        removed.push(*step);
    }
    Ok(removed)
}
