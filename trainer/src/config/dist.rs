use serde::{Deserialize, Serialize};

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistBackend {
    /// NCCL when the worker trains on CUDA, otherwise the CPU test backend.
    Auto,
    /// c10d's ProcessGroupNCCL (one CUDA device per worker).
    Nccl,
    /// Tensors through the rendezvous TCPStore: correct, slow, for tests on machines without a GPU.
    Cpu,
}

/// `[dist]`: data-parallel training over several processes. Workers learn their rank and world
/// size from `imagen launch`, torchrun or Slurm; these settings tune how they cooperate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistConfig {
    /// The collectives backend. Default: "auto".
    pub backend: DistBackend,
    /// Gradient all-reduce bucket size in MiB (PyTorch DDP's `bucket_cap_mb`). Default: 25.
    pub bucket_mb: f64,
    /// The first bucket, all-reduced as soon as the last layers' gradients exist, in MiB
    /// (DDP's first-bucket size). Default: 1.
    pub first_bucket_mb: f64,
    /// Seconds every worker waits for all others at start-up. Default: 300.
    pub rendezvous_timeout_secs: u64,
    /// Seconds a collective may wait for a peer before the run fails. Default: 1800.
    pub collective_timeout_secs: u64,
    /// Every rank stops when one fails, and rank 0 stops the job when a rank has not been heard
    /// from (through the rendezvous store) for this many seconds: a dead worker or node ends
    /// the job within this bound instead of the collective timeout. 0 turns the watchdog off.
    /// Default: 60.
    pub heartbeat_timeout_secs: u64,
}

impl Default for DistConfig {
    fn default() -> Self {
        Self {
            backend: DistBackend::Auto,
            bucket_mb: 25.0,
            first_bucket_mb: 1.0,
            rendezvous_timeout_secs: 300,
            collective_timeout_secs: 1800,
            heartbeat_timeout_secs: 60,
        }
    }
}
