//! The run configuration: TOML files parsed with serde, every field documented with its default.
//!
//! Sections follow DESIGN.md and grow as features land. Unknown keys are errors (with the nearest
//! valid key suggested), so a typo never silently falls back to a default.

mod load;
mod log;
mod run;

use serde::{Deserialize, Serialize};

use crate::diffusion::DiffusionConfig;
use crate::unet::UNetConfig;

pub use load::{parse_override, Override};
pub use log::LogConfig;
pub use run::RunConfig;

/// Everything a run is configured by. Every section and field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Naming, output location and seed of the run.
    pub run: RunConfig,
    /// Logging verbosity and cadence.
    pub log: LogConfig,
    /// The stage's U-Net topology.
    pub unet: UNetConfig,
    /// The stage's diffusion process and sampler.
    pub diffusion: DiffusionConfig,
    /// Training shards and how they become batches (imagen-data's `DataConfig`).
    pub data: imagen_data::DataConfig,
    /// The T5 text encoder and how training uses it.
    pub text: crate::text::TextConfig,
}

impl Config {
    /// The resolved configuration as TOML, as `imagen config show` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises to TOML")
    }
}
