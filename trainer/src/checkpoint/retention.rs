use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;

use super::write::{io, list};
use crate::error::{Result, TrainerError};

/// `[train.checkpoint]`: how often to save and what to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Save every this many optimizer steps, and at the end of the run and on a stop signal
    /// (0: only then). Default: 1000.
    pub every_steps: u64,
    /// Keep this many most recent checkpoints. Default: 3.
    pub keep_last: usize,
    /// Also keep, forever, every checkpoint whose step is a multiple of this. Default: none.
    pub keep_every: Option<u64>,
    /// "background", "in-place" or "auto" (background when training on CUDA, in place on the
    /// CPU). Default: "auto".
    pub write: CheckpointWrite,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { every_steps: 1000, keep_last: 3, keep_every: None, write: CheckpointWrite::Auto }
    }
}

/// How a checkpoint reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointWrite {
    /// Background on CUDA, where the host's cores are idle; in place on the CPU, where the
    /// writer takes cores from training (measured on 2 cores: the stall moves into the next
    /// steps, no time is saved).
    #[default]
    Auto,
    /// A thread writes from a copy in host memory (as much as the weights, their average and
    /// the optimizer's moments take), so training stalls only for the copy. A write's error
    /// stops the run at the next step; the run's end waits for the last write. A copy that would
    /// take more than half of the host's available memory is not taken: that checkpoint is
    /// written in place.
    Background,
    /// The training thread writes, and waits.
    InPlace,
}

impl CheckpointWrite {
    pub fn in_background(self, device: Device) -> bool {
        match self {
            Self::Auto => device.is_cuda(),
            Self::Background => true,
            Self::InPlace => false,
        }
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
        // Renamed out of the listing first: a kill part-way through the deletion would leave a
        // step directory without its state.json, never listed again and so never deleted.
        // `recover_interrupted_saves` finishes such a deletion.
        let name = path.file_name().expect("a listed checkpoint has a name").to_string_lossy();
        let doomed = run_dir.join(format!(".del-{name}-{}", std::process::id()));
        std::fs::rename(path, &doomed).map_err(io(path))?;
        std::fs::remove_dir_all(&doomed).map_err(io(&doomed))?;
        removed.push(*step);
    }
    Ok(removed)
}

/// Renames every checkpoint newer than `step` to `superseded-step-NNNNNNNNN` (with a numeric
/// suffix if that name is taken), where a run starts again from `step` (0: from scratch): a
/// damaged newest checkpoint that was passed over, or the checkpoints that `--resume PATH` rolls
/// back past. Kept on disk, but never resumed from, sampled or pruned: otherwise retention would
/// count them as the newest, and a crash before the new timeline passes them would resume the
/// old one. Returns the new paths.
pub fn set_aside_after(run_dir: &Path, step: u64) -> Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    for (s, path) in list(run_dir)? {
        if s <= step {
            continue;
        }
        let name = path.file_name().expect("a listed checkpoint has a name").to_string_lossy();
        let mut target = run_dir.join(format!("superseded-{name}"));
        let mut n = 1;
        while target.exists() {
            n += 1;
            target = run_dir.join(format!("superseded-{name}-{n}"));
        }
        std::fs::rename(&path, &target)
            .map_err(|source| TrainerError::Io { path: path.clone(), source })?;
        moved.push(target);
    }
    Ok(moved)
}
