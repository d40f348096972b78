//! `tracing` set-up for the binary: human-readable lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `default_filter`. Colours
/// only on a terminal (not in Slurm's or a redirected log). In a worker of a multi-process job
/// every line names its rank, so the workers' interleaved lines can be told apart; a launcher
/// (`worker: false`) names none, though an srun step gives it a task rank (its node's).
pub fn init(default_filter: &str, worker: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_timer(RankedTime { rank: worker.then(worker_rank).flatten() })
        .with_target(false)
        .try_init();
}

/// This process's rank in a job of several, as the trainer reads it (`imagen launch`'s, torchrun's
/// or an srun step's variables); none when it runs alone or the variables do not parse (the
/// trainer reports those).
fn worker_rank() -> Option<String> {
    let world = crate::dist::env::WorldInfo::placement_from_env().ok().flatten()?;
    Some(world.rank.to_string())
}

/// The default timestamp, then the rank where there is one.
struct RankedTime {
    rank: Option<String>,
}

impl FormatTime for RankedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        SystemTime.format_time(w)?;
        match &self.rank {
            Some(rank) => write!(w, " rank {rank}"),
            None => Ok(()),
        }
    }
}
