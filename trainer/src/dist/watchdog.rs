//! Every rank stops when one cannot go on. A rank that fails (an error on rank 0 alone: a full
//! disk at a save, a log it cannot write), dies (SIGKILL, the OOM killer) or loses its node
//! would otherwise leave the others blocked in their next collective until NCCL's timeout
//! (`dist.collective_timeout_secs`, 30 minutes): a job of many GPUs idle, and a scheduler that
//! cannot restart it. So each rank runs a thread that, over a connection of its own to the
//! rendezvous store, beats a counter, and watches for an abort posted by another rank; rank 0
//! also watches every other rank's counter and posts an abort for one that has gone quiet. (The
//! same idea as torchrun's agents and c10d's heartbeat monitor, on the store the job already
//! has.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::store::{StoreOptions, TcpStore};
use crate::error::{Result, TrainerError};

const ABORT: &str = "watchdog/abort";
const ABORT_CLAIM: &str = "watchdog/abort-claim";

fn beat_key(rank: usize) -> String {
    format!("watchdog/beat/{rank}")
}

fn done_key(rank: usize) -> String {
    format!("watchdog/done/{rank}")
}

fn ack_key(rank: usize) -> String {
    format!("watchdog/ack/{rank}")
}

/// How a rank's watchdog behaves.
#[derive(Debug, Clone)]
pub struct WatchdogOptions {
    /// Rank 0 posts an abort for a rank whose counter has not moved for this long.
    pub timeout: Duration,
    /// How often each rank beats and looks for an abort.
    pub interval: Duration,
}

/// What a watchdog does when the job cannot go on: given why, it ends the process (the
/// training thread may be blocked in a collective that will never complete).
pub type OnFatal = Box<dyn Fn(String) + Send>;

pub struct Watchdog {
    store: Arc<TcpStore>,
    rank: usize,
    world_size: usize,
    options: WatchdogOptions,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Finished or aborted: nothing is left to tell the other ranks.
    finished: bool,
}

impl Watchdog {
    /// Connects to the store at `host:port` (its keys behind `key_prefix`) and starts watching.
    pub fn start(
        host: &str,
        port: u16,
        key_prefix: &str,
        rank: usize,
        world_size: usize,
        options: WatchdogOptions,
        on_fatal: OnFatal,
    ) -> Result<Self> {
        let store = Arc::new(TcpStore::open(
            &StoreOptions::client(host, port)
                .timeout(options.timeout.max(Duration::from_secs(5)))
                .key_prefix(key_prefix),
        )?);
        store.add(&beat_key(rank), 1)?;
        let stop = Arc::new(AtomicBool::new(false));
        let place = format!("{host}:{port}");
        let thread = {
            let (store, stop, options) = (store.clone(), stop.clone(), options.clone());
            std::thread::Builder::new()
                .name("dist-watchdog".into())
                .spawn(move || watch(&store, rank, world_size, &options, &stop, &place, &*on_fatal))
                .map_err(|e| TrainerError::Dist(format!("starting the watchdog: {e}")))?
        };
        Ok(Self { store, rank, world_size, options, stop, thread: Some(thread), finished: false })
    }

    /// Tells every rank that this one cannot go on, and why (the first abort posted wins). Rank
    /// 0, whose process hosts the store, gives the others a moment to read it before it exits.
    pub fn abort(&mut self, why: &str) {
        // Once: a second abort (the drop after an explicit one) would only wait for the acks again.
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        // This rank's own watchdog must not take its own abort for another's.
        self.halt();
        let text = format!("rank {} failed: {why}", self.rank);
        if let Err(e) = post_abort(&self.store, &text) {
            tracing::warn!("could not tell the other ranks that this one failed: {e}");
            return;
        }
        // It knows: rank 0 need not wait for it to read its own abort.
        let _ = self.store.set(&ack_key(self.rank), b"1");
        if self.rank == 0 {
            wait_for_acks(&self.store, self.world_size, &self.options);
        }
    }

    /// This rank ended its work normally: the watchdog stops, and rank 0 (which hosts the store)
    /// waits for the other ranks to say the same, so that none of them takes the store's going
    /// away for a failure.
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        self.halt();
        self.store.set(&done_key(self.rank), b"1")?;
        if self.rank == 0 {
            let deadline = super::deadline_after(self.options.timeout);
            let done = |r: usize| self.store.contains(&done_key(r)).unwrap_or(true);
            loop {
                let left: Vec<usize> = (1..self.world_size).filter(|&r| !done(r)).collect();
                if left.is_empty() {
                    break;
                }
                // A rank that failed after the last collective says so here: no use waiting.
                if self.store.contains(ABORT).unwrap_or(false) {
                    let why = self.store.get(ABORT).unwrap_or_default();
                    tracing::warn!(
                        "after this rank's end: {}",
                        String::from_utf8_lossy(&why).trim()
                    );
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "rank(s) {left:?} did not say they finished within {}s of rank 0",
                        self.options.timeout.as_secs()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watchdog {
    /// A rank that leaves without `finish` (an error that was not posted, a panic) still tells
    /// the others rather than leave them in a collective.
    fn drop(&mut self) {
        if !self.finished {
            self.abort("it stopped before the end of its run (its own log says why)");
        }
        self.halt();
    }
}

/// Rank 0, whose process hosts the store, gives the other ranks a few rounds to read an abort
/// before it exits: one that found the store gone instead would blame rank 0, not the rank
/// that failed. Ranks that finished, or that never answer (the dead one), only cost the wait.
fn wait_for_acks(store: &TcpStore, world_size: usize, options: &WatchdogOptions) {
    let deadline =
        super::deadline_after(options.interval.saturating_mul(4) + Duration::from_secs(1));
    let told = |r: usize| {
        store.contains(&ack_key(r)).unwrap_or(true) || store.contains(&done_key(r)).unwrap_or(true)
    };
    while Instant::now() < deadline && !(1..world_size).all(told) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn post_abort(store: &TcpStore, text: &str) -> Result<()> {
    if store.add(ABORT_CLAIM, 1)? == 1 {
        store.set(ABORT, text.as_bytes())?;
    }
    Ok(())
}

fn watch(
    store: &TcpStore,
    rank: usize,
    world_size: usize,
    options: &WatchdogOptions,
    stop: &AtomicBool,
    place: &str,
    on_fatal: &dyn Fn(String),
) {
    // Rank 0's view of every rank's counter: its last value and when it last moved.
    let mut heard: Vec<Heard> =
        vec![Heard { count: 0, moved: Instant::now(), looks: 0 }; world_size];
    while !stop.load(Ordering::SeqCst) {
        match look(store, rank, options, &mut heard) {
            Ok(None) => {}
            Ok(Some(why)) => {
                if rank == 0 {
                    wait_for_acks(store, world_size, options);
                }
                return on_fatal(why);
            }
            // The TCPStore lives in rank 0's process (torchrun's agent's, under torchrun): it
            // stops answering when that process has exited.
            Err(e) if !stop.load(Ordering::SeqCst) => {
                return on_fatal(format!(
                    "the rendezvous store at {place} stopped answering ({e}): rank 0 (under \
                     torchrun, its agent on node 0) has exited or its node is unreachable"
                ))
            }
            Err(_) => return,
        }
        std::thread::sleep(options.interval);
    }
}

/// Rank 0's view of another rank's counter.
#[derive(Clone)]
struct Heard {
    /// Its last value.
    count: i64,
    /// When it last moved.
    moved: Instant,
    /// Rank 0's own looks since then.
    looks: u64,
}

/// One round: beat, read any abort, and on rank 0 check that every unfinished rank beats. A rank
/// is silent when its counter has not moved for the timeout *and* over as many of rank 0's own
/// looks as fit in it: a job suspended as a whole (Slurm's suspend, SIGSTOP, a paused VM) and
/// resumed leaves a gap on the clock in which rank 0 did not look either, and its first look
/// after may come before the others have beaten again.
fn look(
    store: &TcpStore,
    rank: usize,
    options: &WatchdogOptions,
    heard: &mut [Heard],
) -> Result<Option<String>> {
    store.add(&beat_key(rank), 1)?;
    if store.contains(ABORT)? {
        let why = String::from_utf8_lossy(&store.get(ABORT)?).into_owned();
        store.set(&ack_key(rank), b"1")?;
        return Ok(Some(why));
    }
    if rank != 0 {
        return Ok(None);
    }
    let quiet_looks = (options.timeout.as_secs_f64() / options.interval.as_secs_f64()) as u64;
    for (r, h) in heard.iter_mut().enumerate().skip(1) {
        if store.contains(&done_key(r))? {
            continue;
        }
        let now = store.add(&beat_key(r), 0)?;
        if now != h.count {
            *h = Heard { count: now, moved: Instant::now(), looks: 0 };
            continue;
        }
        h.looks += 1;
        if h.moved.elapsed() > options.timeout && h.looks >= quiet_looks.max(1) {
            let why = format!(
                "rank {r} has not been heard from for {} s (its process died, or its node is \
                 down or unreachable; dist.heartbeat_timeout_secs)",
                h.moved.elapsed().as_secs()
            );
            post_abort(store, &why)?;
            return Ok(Some(why));
        }
    }
    Ok(None)
}
