use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[run]`: what the run is called, where it writes, and its seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the run; its directory is `<dir>/<name>`. Default: "imagen".
    pub name: String,
    /// Output root for run directories. Default: "checkpoints".
    pub dir: PathBuf,
    /// Seed of every random stream (weights, noise, data order). Default: 0.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { name: "imagen".into(), dir: PathBuf::from("checkpoints"), seed: 0 }
    }
}

impl RunConfig {
    /// The directory this run writes its checkpoints and logs to.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}
