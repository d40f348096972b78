//! The run configuration: TOML files parsed with serde, every field documented with its default.
//!
//! Sections follow DESIGN.md and grow as features land. Unknown keys are errors (with the nearest
//! valid key suggested), so a typo never silently falls back to a default.

mod dist;
mod load;
mod log;
mod run;
mod stage;
mod train;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

pub use dist::{DistBackend, DistConfig};
pub use load::{parse_override, Override};
pub use log::LogConfig;
pub use run::RunConfig;
pub use stage::StageConfig;
pub use train::{Precision, TrainConfig};

/// Everything a run is configured by. Every section and field may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Naming, output location and seed of the run.
    pub run: RunConfig,
    /// Logging verbosity and cadence.
    pub log: LogConfig,
    /// Optimisation, precision, EMA, checkpoints and validation.
    pub train: TrainConfig,
    /// The cascade, base first: `[[stages]]` tables, each with `[stages.unet]` and
    /// `[stages.diffusion]`. Default: one base 64x64 stage.
    pub stages: Vec<StageConfig>,
    /// Training shards and how they become batches (imagen-data's `DataConfig`).
    pub data: imagen_data::DataConfig,
    /// The T5 text encoder and how training uses it.
    pub text: crate::text::TextConfig,
    /// Data-parallel training over several processes.
    pub dist: DistConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            run: RunConfig::default(),
            log: LogConfig::default(),
            train: TrainConfig::default(),
            stages: vec![StageConfig::default()],
            data: imagen_data::DataConfig::default(),
            text: crate::text::TextConfig::default(),
            dist: DistConfig::default(),
        }
    }
}

impl Config {
    /// Stage `n` of the cascade (0 is the base).
    pub fn stage(&self, n: usize) -> Result<&StageConfig> {
        self.stages.get(n).ok_or_else(|| TrainerError::Config {
            source_name: "--stage".into(),
            message: format!(
                "stage {n} does not exist: the config has {} stage(s)",
                self.stages.len()
            ),
        })
    }

    /// The resolved configuration as TOML, as `imagen config show` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises to TOML")
    }
}
