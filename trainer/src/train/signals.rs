use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Result, TrainerError};

/// A second signal at least this long after the first ends the process at once (a worker) or
/// kills the workers (`imagen launch`). Shorter gaps are one request: a terminal's Ctrl-C reaches
/// a worker both directly and through `imagen launch`, which forwards it, and a wrapper script
/// may forward what the terminal also delivered.
pub const REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
const FORCE_AFTER_NS: u64 = REPEAT_WINDOW.as_nanos() as u64;

/// Set by SIGINT or SIGTERM: the loop finishes its step, saves and exits cleanly.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag raised by SIGINT and SIGTERM. A second signal two seconds or more after the first
    /// exits at once (status 128 + the signal) without saving, for a run stuck where it cannot
    /// see the flag (a stalled filesystem, a collective waiting on a dead peer); a save cut short
    /// leaves the last checkpoint whole.
    pub fn on_signals() -> Result<Self> {
        let flag = Self::default();
        // When the first signal came (CLOCK_MONOTONIC, ns); 0 before any.
        let first = Arc::new(AtomicU64::new(0));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let (raised, first) = (flag.0.clone(), first.clone());
            let handler = move || {
                let now = monotonic_ns();
                raised.store(true, Ordering::SeqCst);
                match first.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
                    // The first signal, or the same request again.
                    Ok(_) => return,
                    Err(then) if now.saturating_sub(then) < FORCE_AFTER_NS => return,
                    Err(_) => {}
                }
                let message = b"imagen: a second signal: exiting now without saving (the last \
                                checkpoint is whole)\n";
                // SAFETY: write(2) and _exit(2) are async-signal-safe.
                unsafe {
                    libc::write(2, message.as_ptr().cast(), message.len());
                    libc::_exit(128 + signal);
                }
            };
            // SAFETY: the handler uses only atomics, clock_gettime, write and _exit, all
            // async-signal-safe; it allocates nothing.
            unsafe { signal_hook::low_level::register(signal, handler) }
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

/// CLOCK_MONOTONIC in nanoseconds (at least 1), callable from a signal handler.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) is async-signal-safe and writes only `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64).max(1)
}
