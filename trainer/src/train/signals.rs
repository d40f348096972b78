use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Result, TrainerError};

/// Set by SIGINT or SIGTERM: the loop finishes its step, saves and exits cleanly.
#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag raised by SIGINT and SIGTERM.
    pub fn on_signals() -> Result<Self> {
        let flag = Self::default();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, flag.0.clone())
                .map_err(|source| TrainerError::Io { path: "signal handler".into(), source })?;
        }
        Ok(flag)
    }

    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
