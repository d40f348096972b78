//! Multi-process data-parallel training: where a worker stands (env), the rendezvous through
//! c10d's TCPStore, c10d process groups and DDP's gradient reducer, the weight fingerprint that
//! proves every rank holds the same model, and the watchdog that stops every rank when one fails.

pub mod env;
pub mod fingerprint;
pub mod process_group;
pub mod reducer;
pub mod rendezvous;
pub mod store;
pub mod watchdog;

pub use env::WorldInfo;
pub use fingerprint::fingerprint;
pub use process_group::{Backend, ProcessGroup};
pub use reducer::GradReducer;
pub use rendezvous::{choose_backend, Dist};
pub use store::{StoreOptions, TcpStore};
pub use watchdog::{OnFatal, Watchdog, WatchdogOptions};

/// The longest wait any timeout here stands for (a year): a larger setting means "wait
/// indefinitely", and would overflow an `Instant` or c10d's millisecond deadlines.
pub const LONGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The moment `wait` (at most [`LONGEST_WAIT`]) from now.
pub fn deadline_after(wait: std::time::Duration) -> std::time::Instant {
    std::time::Instant::now() + wait.min(LONGEST_WAIT)
}
