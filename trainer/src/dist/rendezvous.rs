//! Start-up: rank 0 serves a c10d TCPStore at MASTER_ADDR:MASTER_PORT, every worker checks in,
//! and rank 0 names whoever is missing before anyone builds a process group.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::env::WorldInfo;
use super::process_group::{Backend, ProcessGroup};
use super::store::{StoreOptions, TcpStore};
use super::watchdog::{OnFatal, Watchdog, WatchdogOptions};
use crate::config::{DistBackend, DistConfig};
use crate::error::{Result, TrainerError};

/// A worker's membership of the job: its place, the store, the process group and the watchdog.
pub struct Dist {
    // First, so that it drops (and can still post an abort) while rank 0's store is up.
    watchdog: Option<Watchdog>,
    pub info: WorldInfo,
    pub store: TcpStore,
    pub pg: ProcessGroup,
}

const POLL: Duration = Duration::from_millis(20);
/// Starts `rendezvous/ready` when rank 0 refuses the job, followed by why.
const REFUSED: &str = "refused: ";
const SECOND: Duration = Duration::from_secs(1);

fn err(message: String) -> TrainerError {
    TrainerError::Dist(message)
}

/// The backend `cfg` asks for, given whether the worker trains on CUDA.
pub fn choose_backend(cfg: &DistConfig, cuda: bool) -> Result<Backend> {
    match (cfg.backend, cuda) {
        (DistBackend::Nccl, false) => {
            Err(err("dist.backend = \"nccl\" needs CUDA devices; this worker trains on the CPU \
             (use dist.backend = \"cpu\" for tests without a GPU)"
                .into()))
        }
        (DistBackend::Cpu, true) => {
            Err(err("dist.backend = \"cpu\" cannot reduce CUDA tensors; use \"nccl\" or \"auto\""
                .into()))
        }
        (DistBackend::Nccl, true) | (DistBackend::Auto, true) => Ok(Backend::Nccl),
        (DistBackend::Cpu, false) | (DistBackend::Auto, false) => Ok(Backend::CpuStore),
    }
}

/// Two ranks on one host that would train on the same GPU (each rank's rendezvous record names
/// its host and, on CUDA, the device index it chose and the CUDA_VISIBLE_DEVICES it saw), said
/// before NCCL fails on it ("Duplicate GPU detected") or two ranks share a device's memory.
fn shared_gpu(records: &[Value]) -> Option<String> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for (rank, record) in records.iter().enumerate() {
        let cuda = &record["cuda"];
        if cuda.is_null() || cuda["confined"] == json!(true) {
            continue;
        }
        let key = format!("{}|{}|{}", record["host"], cuda["visible"], cuda["index"]);
        if let Some(first) = seen.insert(key, rank) {
            let visible = match cuda["visible"].as_str() {
                Some(v) => format!("CUDA_VISIBLE_DEVICES={v}"),
                None => "no CUDA_VISIBLE_DEVICES".to_owned(),
            };
            return Some(format!(
                "ranks {first} and {rank} on {} would both train on CUDA device {} ({visible}): \
                 start at most as many workers on a node as it has GPUs (--nproc-per-node), and \
                 leave each its own device",
                record["host"], cuda["index"]
            ));
        }
    }
    None
}

impl Dist {
    /// Rendezvous of all `info.world_size` workers, then the process group; `cuda_device` is the
    /// CUDA device this worker trains on (None on the CPU), which NCCL's communicator binds to.
    /// It is not always the local rank: a worker that sees one GPU trains on device 0.
    pub fn init(info: WorldInfo, cfg: &DistConfig, cuda_device: Option<usize>) -> Result<Self> {
        let backend = choose_backend(cfg, cuda_device.is_some())?;
        let wait = Duration::from_secs(cfg.rendezvous_timeout_secs.max(1));
        let place = format!("{}:{}", info.master_addr, info.master_port);
        let main = info.rank == 0;
        let serves = main && !info.agent_store;
        let opts = if serves {
            StoreOptions::server(&info.master_addr, info.master_port)
        } else {
            StoreOptions::client(&info.master_addr, info.master_port)
        }
        .timeout(wait)
        .key_prefix(&info.key_prefix);
        let store = TcpStore::open(&opts).map_err(|e| {
            err(if serves {
                format!("rank 0 could not serve the rendezvous store on {place}: {e}")
            } else {
                format!(
                    "rank {} could not reach the rendezvous store at {place} within {}s (is \
                     {} running, and is MASTER_ADDR reachable from this node?): {e}",
                    info.rank,
                    wait.as_secs(),
                    if info.agent_store { "torchrun's agent" } else { "rank 0" }
                )
            })
        })?;
        let me = json!({
            "host": hostname(),
            "pid": std::process::id(),
            "local_rank": info.local_rank,
            "world_size": info.world_size,
            "cuda": cuda_device.map(|index| json!({
                "index": index,
                "visible": std::env::var("CUDA_VISIBLE_DEVICES").ok(),
                // Slurm may confine each task to its own GPU (cgroups), which every task then
                // sees as device 0 under the same CUDA_VISIBLE_DEVICES.
                "confined": std::env::var_os("SLURM_STEP_ID").is_some(),
            })),
        });
        store.set(&format!("rendezvous/rank/{}", info.rank), me.to_string().as_bytes())?;
        let deadline = super::deadline_after(wait);
        if main {
            let mut missing: Vec<usize> = (0..info.world_size).collect();
            while !missing.is_empty() {
                let mut still = Vec::new();
                for r in missing {
                    if !store.contains(&format!("rendezvous/rank/{r}"))? {
                        still.push(r);
                    }
                }
                missing = still;
                if missing.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    let expected: Vec<String> = missing
                        .iter()
                        .map(|&r| format!("rank {r} (node {})", info.node_of(r)))
                        .collect();
                    return Err(err(format!(
                        "{} of {} workers never joined the rendezvous at {place} within {}s: {} \
                         (rank r runs on node r / {} local workers; check that node's launcher)",
                        missing.len(),
                        info.world_size,
                        wait.as_secs(),
                        expected.join(", "),
                        info.local_world_size
                    )));
                }
                std::thread::sleep(POLL);
            }
            let mut records = Vec::with_capacity(info.world_size);
            for r in 0..info.world_size {
                let theirs: Value =
                    serde_json::from_slice(&store.get(&format!("rendezvous/rank/{r}"))?)
                        .map_err(|e| err(format!("rank {r}'s rendezvous record: {e}")))?;
                records.push(theirs);
            }
            let mismatch = records.iter().enumerate().find_map(|(r, theirs)| {
                (theirs["world_size"] != json!(info.world_size)).then(|| {
                    format!(
                        "rank {r} ({}) believes the world size is {}, rank 0 that it is {}",
                        theirs["host"], theirs["world_size"], info.world_size
                    )
                })
            });
            if let Some(why) = mismatch.or_else(|| shared_gpu(&records)) {
                // Every rank is told why at once (torchrun's agent store outlives rank 0).
                store.set("rendezvous/ready", format!("{REFUSED}{why}").as_bytes())?;
                // This process serves the store: the others read the reason before it goes.
                let told = |r: usize| store.contains(&format!("rendezvous/told/{r}"));
                let until = super::deadline_after(5 * SECOND);
                while Instant::now() < until
                    && !(1..info.world_size).all(|r| told(r).unwrap_or(true))
                {
                    std::thread::sleep(POLL);
                }
                return Err(err(why));
            }
            store.set("rendezvous/ready", info.world_size.to_string().as_bytes())?;
        } else {
            let not_completed = || {
                err(format!(
                    "rank {}: rank 0 at {place} did not complete the rendezvous within {}s \
                     (another worker never joined, or this one does not belong to its job; \
                     rank 0's log says which)",
                    info.rank,
                    wait.as_secs()
                ))
            };
            // A store that stops answering here is rank 0 giving up on the rendezvous.
            while !store.contains("rendezvous/ready").map_err(|_| not_completed())? {
                if Instant::now() > deadline {
                    return Err(not_completed());
                }
                std::thread::sleep(POLL);
            }
            // Rank 0 checked the records of the ranks it expects; a rank numbered past its
            // world (a node launched with another --nnodes) learns it here, not in a collective
            // that would wait for the collective timeout.
            let theirs = store.get("rendezvous/ready")?;
            if let Some(why) = theirs.strip_prefix(REFUSED.as_bytes()) {
                let _ = store.set(&format!("rendezvous/told/{}", info.rank), b"1");
                return Err(err(format!(
                    "rank 0 stopped the job at the rendezvous: {}",
                    String::from_utf8_lossy(why)
                )));
            }
            if theirs != info.world_size.to_string().as_bytes() {
                return Err(err(format!(
                    "rank {} believes the world size is {}, rank 0 at {place} that it is {} (were \
                     the nodes launched with the same --nnodes and --nproc-per-node?)",
                    info.rank,
                    info.world_size,
                    String::from_utf8_lossy(&theirs)
                )));
            }
        }
        let collective = Duration::from_secs(cfg.collective_timeout_secs.max(1));
        store.set_timeout(collective)?;
        let pg = ProcessGroup::new(
            &store,
            "pg/",
            info.rank,
            info.world_size,
            backend,
            collective,
            cuda_device.unwrap_or(0),
        )?;
        let watchdog = match cfg.heartbeat_timeout_secs {
            0 => None,
            secs => {
                let timeout = Duration::from_secs(secs);
                // A round costs rank 0's store a few requests per rank: every 5 s at the default
                // timeout keeps that small for a job of a thousand ranks.
                let interval = (timeout / 12).clamp(SECOND, 5 * SECOND);
                let options = WatchdogOptions { timeout, interval };
                let (host, port) = (&info.master_addr, info.master_port);
                Some(Watchdog::start(
                    host,
                    port,
                    &info.key_prefix,
                    info.rank,
                    info.world_size,
                    options,
                    exit(info.rank),
                )?)
            }
        };
        tracing::info!(
            "rank {} of {} joined at {place} ({}, {backend:?} backend)",
            info.rank,
            info.world_size,
            info.source
        );
        Ok(Self { watchdog, info, store, pg })
    }

    /// This rank cannot go on: every other rank is told why and stops (see `dist::watchdog`).
    pub fn abort(&mut self, why: &str) {
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.abort(why);
        }
    }

    /// This rank's work ended normally; rank 0 waits for the others to say the same.
    pub fn finish(mut self) -> Result<()> {
        self.watchdog.take().map_or(Ok(()), Watchdog::finish)?;
        self.pg.set_finished();
        Ok(())
    }

    pub fn rank(&self) -> usize {
        self.info.rank
    }

    pub fn world_size(&self) -> usize {
        self.info.world_size
    }

    /// Rank 0 writes checkpoints and logs.
    pub fn is_main(&self) -> bool {
        self.info.rank == 0
    }

    /// Every rank's `value` on rank 0 (in rank order), None elsewhere. `key` must be unique
    /// to this call (a step number, say).
    pub fn gather_json(&self, key: &str, value: &Value) -> Result<Option<Vec<Value>>> {
        let slot = |r: usize| format!("gather/{key}/{r}");
        self.store.set(&slot(self.rank()), value.to_string().as_bytes())?;
        if !self.is_main() {
            return Ok(None);
        }
        let mut all = Vec::with_capacity(self.world_size());
        for r in 0..self.world_size() {
            let bytes = self.store.get(&slot(r)).map_err(|e| {
                err(format!(
                    "rank {r} never sent its {key} (rank {r} on node {}): {e}",
                    self.info.node_of(r)
                ))
            })?;
            self.store.delete(&slot(r))?;
            all.push(
                serde_json::from_slice(&bytes)
                    .map_err(|e| err(format!("rank {r}'s {key}: {e}")))?,
            );
        }
        Ok(Some(all))
    }

    /// Rank 0's `value` on every rank (`value` is read on rank 0 only).
    pub fn share_from_main(&self, key: &str, value: &str) -> Result<String> {
        let slot = format!("share/{key}");
        if self.is_main() {
            self.store.set(&slot, value.as_bytes())?;
            return Ok(value.to_owned());
        }
        let bytes = self.store.get(&slot)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The watchdog's way out: the training thread may be blocked in a collective that no peer
/// will join, so the process ends from the watchdog's thread, after any checkpoint write under
/// way has finished (the save lock), without running destructors that would wait on NCCL.
fn exit(rank: usize) -> OnFatal {
    Box::new(move |why| {
        tracing::error!("rank {rank} stops: {why}");
        let _no_save_in_flight = crate::checkpoint::hold_saves();
        // SAFETY: _exit(2) ends the process at once; nothing after it runs.
        unsafe { libc::_exit(1) }
    })
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod shared_gpu_tests {
    use super::*;

    fn record(host: &str, index: usize, visible: Option<&str>, confined: bool) -> Value {
        json!({"host": host, "cuda": {"index": index, "visible": visible, "confined": confined}})
    }

    #[test]
    fn two_ranks_on_one_gpu_of_one_host_are_named() {
        let one_gpu = [record("a", 0, None, false), record("a", 0, None, false)];
        let why = shared_gpu(&one_gpu).unwrap();
        assert!(why.contains("ranks 0 and 1 on \"a\" would both train on CUDA device 0"), "{why}");
        let leaked = [record("a", 0, Some("0"), false), record("a", 0, Some("0"), false)];
        assert!(shared_gpu(&leaked).unwrap().contains("CUDA_VISIBLE_DEVICES=0"));
        // Their own devices, other hosts, one GPU each by launcher's binding, Slurm's cgroups,
        // or the CPU: nothing shared.
        assert!(shared_gpu(&[record("a", 0, None, false), record("a", 1, None, false)]).is_none());
        assert!(shared_gpu(&[record("a", 0, None, false), record("b", 0, None, false)]).is_none());
        let bound = [record("a", 0, Some("2"), false), record("a", 0, Some("3"), false)];
        assert!(shared_gpu(&bound).is_none());
        let slurm = [record("a", 0, Some("0"), true), record("a", 0, Some("0"), true)];
        assert!(shared_gpu(&slurm).is_none());
        assert!(shared_gpu(&vec![json!({"host": "a", "cuda": null}); 2]).is_none());
    }
}
