//! Checkpoints: one directory per saved step under the run directory, written to a temporary
//! directory and renamed into place, so a crash or a kill never damages the previous one.
//!
//! ```text
//! <run>/step-000001000/
//!     <name>.safetensors ...   weights, EMA weights, optimizer state (names chosen by the caller)
//!     state.json               step, data cursor, counters, format version, and each
//!                              tensor file's size and CRC-32C
//!     config.toml              the resolved config of the run
//! ```

mod background;
mod retention;
mod state;
mod write;

pub use background::{hold_saves, mem_available_in, snapshot_fits, CheckpointWriter};
pub use retention::{prune, set_aside_after, CheckpointWrite, RetentionConfig};
pub use state::{FileDigest, TrainState, STATE_VERSION};
pub use write::{
    latest, latest_intact, list, load_tensors, recover_interrupted_saves, save, Checkpoint,
    CheckpointFiles,
};
