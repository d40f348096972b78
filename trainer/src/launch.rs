//! `imagen launch`: one worker process per local GPU (or CPU test worker), each told its place
//! in the job through torchrun's variables; signals are forwarded, and when one worker fails the
//! others are stopped so that no collective waits forever on a dead peer. A second SIGINT or
//! SIGTERM, two seconds or more after the first, kills the workers at once (their saves are
//! atomic: the last checkpoint stays whole), and workers whose launcher dies receive SIGTERM.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Result, TrainerError};
use crate::train::REPEAT_WINDOW;

#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// After a worker fails, how long the others get to exit before SIGKILL. After a forwarded
    /// signal there is no deadline (rank 0 may be saving a large checkpoint); a second signal
    /// kills them.
    pub grace: Duration,
    /// The worker program and its arguments (normally this executable and `train ...`).
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
}

const POLL: Duration = Duration::from_millis(50);

fn err(message: String) -> TrainerError {
    TrainerError::Dist(message)
}

fn send(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// Runs the node's workers to completion; returns the exit code the launcher should end with:
/// 0 when every worker succeeded, else the first failure's code (or 1).
/// The child `command` starts gets SIGTERM when this process dies, however it dies (SIGKILL, the
/// OOM killer): a training child finishes its step, saves and exits instead of running on
/// unwatched.
pub fn terminated_with_parent(command: &mut Command) {
    // SAFETY: getpid(2) has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

pub fn launch(opts: &LaunchOptions) -> Result<i32> {
    if opts.nproc_per_node == 0 || opts.nnodes == 0 || opts.node_rank >= opts.nnodes {
        return Err(err(format!(
            "need --nproc-per-node >= 1 and --node-rank < --nnodes (got {}, {} of {})",
            opts.nproc_per_node, opts.node_rank, opts.nnodes
        )));
    }
    // The last signal received (0 = none), forwarded to every worker, and how many arrived.
    let signal = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let count = received.clone();
        signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)
            .and_then(|_| {
                // SAFETY: the handler only increments an atomic, which is async-signal-safe.
                unsafe {
                    signal_hook::low_level::register(sig, move || {
                        count.fetch_add(1, Ordering::SeqCst);
                    })
                }
            })
            .map_err(|source| TrainerError::Io { path: "signal handler".into(), source })?;
    }
    let world = opts.nproc_per_node * opts.nnodes;
    let mut workers: Vec<(usize, Child)> = Vec::new();
    for local in 0..opts.nproc_per_node {
        let rank = opts.node_rank * opts.nproc_per_node + local;
        let mut command = Command::new(&opts.program);
        // A launcher killed outright (SIGKILL, OOM) must not leave its workers running on the
        // GPUs: they get SIGTERM, finish their step and save.
        terminated_with_parent(&mut command);
        let spawned = command
            .args(&opts.args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("LOCAL_WORLD_SIZE", opts.nproc_per_node.to_string())
            .env("GROUP_RANK", opts.node_rank.to_string())
            .env("MASTER_ADDR", &opts.master_addr)
            .env("MASTER_PORT", opts.master_port.to_string())
            .spawn();
        match spawned {
            Ok(child) => workers.push((rank, child)),
            Err(source) => {
                for (_, child) in &mut workers {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(TrainerError::Io { path: opts.program.clone(), source });
            }
        }
    }
    tracing::info!(
        "launched ranks {}..{} of {world} (node {} of {}), rendezvous at {}:{}",
        opts.node_rank * opts.nproc_per_node,
        (opts.node_rank + 1) * opts.nproc_per_node - 1,
        opts.node_rank,
        opts.nnodes,
        opts.master_addr,
        opts.master_port
    );
    let mut forwarded = 0usize;
    // When the first signal was forwarded: signals within REPEAT_WINDOW of it are the same request.
    let mut first_signal: Option<Instant> = None;
    let mut failure: Option<(usize, ExitStatus)> = None;
    let mut kill_at: Option<Instant> = None;
    while !workers.is_empty() {
        let count = received.load(Ordering::SeqCst);
        if count > forwarded {
            let sig = signal.load(Ordering::SeqCst) as i32;
            match first_signal {
                None => {
                    tracing::info!("forwarding signal {sig} to {} worker(s)", workers.len());
                    for (_, child) in &workers {
                        send(child, sig);
                    }
                    first_signal = Some(Instant::now());
                }
                Some(first) if first.elapsed() < REPEAT_WINDOW => {
                    tracing::info!("signal {sig} again within {REPEAT_WINDOW:?}: the same request");
                }
                Some(_) => {
                    tracing::warn!("signal {sig} again: killing {} worker(s)", workers.len());
                    for (_, child) in &mut workers {
                        let _ = child.kill();
                    }
                }
            }
            forwarded = count;
        }
        let mut still = Vec::new();
        for (rank, mut child) in workers {
            match child
                .try_wait()
                .map_err(|source| TrainerError::Io { path: opts.program.clone(), source })?
            {
                Some(status) if !status.success() && failure.is_none() => {
                    tracing::error!(
                        "rank {rank} failed ({}); stopping the other workers",
                        describe(status)
                    );
                    failure = Some((rank, status));
                }
                Some(_) => {}
                None => still.push((rank, child)),
            }
        }
        workers = still;
        if failure.is_some() && kill_at.is_none() {
            for (_, child) in &workers {
                send(child, libc::SIGTERM);
            }
            kill_at = Some(crate::dist::deadline_after(opts.grace));
        }
        if kill_at.is_some_and(|t| Instant::now() > t) {
            for (rank, child) in &mut workers {
                tracing::warn!("rank {rank} did not stop within {:?}: killing it", opts.grace);
                let _ = child.kill();
            }
            // Once: a killed worker may take a poll or two to be reaped.
            kill_at = Some(crate::dist::deadline_after(crate::dist::LONGEST_WAIT));
        }
        std::thread::sleep(POLL);
    }
    Ok(match failure {
        None => 0,
        Some((rank, status)) => {
            tracing::error!(
                "rank {rank} failed ({}); the other workers were stopped",
                describe(status)
            );
            // A worker killed by a signal exits as a shell reports it: 128 + the signal.
            use std::os::unix::process::ExitStatusExt;
            let signalled = status.signal().map(|s| 128 + s);
            status.code().filter(|&c| c != 0).or(signalled).unwrap_or(1)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_period_too_long_to_count_is_waited_as_long_as_needed() {
        let opts = LaunchOptions {
            nproc_per_node: 2,
            nnodes: 1,
            node_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: 1,
            // `--grace-secs 18446744073709551615`: no Instant lies that far ahead.
            grace: Duration::from_secs(u64::MAX),
            program: std::path::PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "[ \"$RANK\" = 1 ] && exit 3; sleep 0.5".into()],
        };
        assert_eq!(launch(&opts).unwrap(), 3);
    }
}
