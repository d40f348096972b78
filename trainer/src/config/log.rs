use serde::{Deserialize, Serialize};

/// `[log]`: how much is logged, and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: "info", "debug", or per module such as "imagen_trainer=debug".
    /// `RUST_LOG`, when set, wins. Default: "info".
    pub level: String,
    /// Log training metrics every this many optimizer steps. Default: 50.
    pub every_steps: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), every_steps: 50 }
    }
}
