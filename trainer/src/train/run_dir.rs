use std::path::{Path, PathBuf};

/// Each stage of a cascade writes into its own folder of the run directory, so the stages can
/// train at the same time on different machines: `<run>/stage-<N>/`.
pub fn stage_dir(run_dir: &Path, stage: usize) -> PathBuf {
    run_dir.join(format!("stage-{stage}"))
}
