//! Checkpoint writes off the training thread. Saving a large stage stalls every rank for as long
//! as the disk takes (base64's 2 B parameters are 32 GB of weights, average and moments: half a
//! minute at 1 GB/s), so rank 0 copies the tensors to host memory, which takes seconds, and a
//! thread writes and prunes while training goes on (as `torch.distributed.checkpoint`'s
//! `async_save` does). One write is in flight at a time; its error stops the run at the next
//! step.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tch::{Device, Tensor};

use super::retention::{prune, RetentionConfig};
use super::state::TrainState;
use super::write::{save, CheckpointFiles};
use crate::error::{Result, TrainerError};

/// Writes a run's checkpoints, then prunes by the retention rule: in place, or (`background`)
/// from a host copy on a thread of its own.
pub struct CheckpointWriter {
    background: bool,
    in_flight: Option<JoinHandle<Result<PathBuf>>>,
    last: Option<PathBuf>,
}

impl CheckpointWriter {
    pub fn new(background: bool) -> Self {
        Self { background, in_flight: None, last: None }
    }

    /// Saves `files` as the checkpoint of `state.step` under `run_dir`, after the write before
    /// it has finished. In the background, returns once the tensors are copied.
    pub fn write(
        &mut self,
        run_dir: &Path,
        state: TrainState,
        config_toml: &str,
        files: CheckpointFiles<'static>,
        retention: &RetentionConfig,
    ) -> Result<()> {
        self.wait()?;
        if !(self.background && host_copy_fits(&files, state.step)) {
            self.last = Some(save_and_prune(run_dir, &state, config_toml, &files, retention)?);
            return Ok(());
        }
        let snapshot: CheckpointFiles<'static> = tch::no_grad(|| {
            files
                .into_iter()
                .map(|(stem, tensors)| {
                    (stem, tensors.into_iter().map(|(name, t)| (name, host_copy(&t))).collect())
                })
                .collect()
        });
        let (run_dir, config_toml, retention) =
            (run_dir.to_owned(), config_toml.to_owned(), retention.clone());
        let job = move || save_and_prune(&run_dir, &state, &config_toml, &snapshot, &retention);
        let handle =
            std::thread::Builder::new().name("checkpoint-writer".into()).spawn(job).map_err(
                |e| TrainerError::Checkpoint(format!("starting the checkpoint writer: {e}")),
            )?;
        self.in_flight = Some(handle);
        Ok(())
    }

    /// The error of a background write that has finished; does not wait for one still running.
    pub fn check(&mut self) -> Result<()> {
        if self.in_flight.as_ref().is_some_and(JoinHandle::is_finished) {
            self.wait()?;
        }
        Ok(())
    }

    /// Waits for the write in flight, if any, and returns its error.
    pub fn wait(&mut self) -> Result<()> {
        if let Some(handle) = self.in_flight.take() {
            let written = handle.join().map_err(|_| {
                TrainerError::Checkpoint("the checkpoint writer thread panicked".into())
            })?;
            self.last = Some(written?);
        }
        Ok(())
    }

    /// The newest checkpoint written so far (by this writer).
    pub fn last(&self) -> Option<&PathBuf> {
        self.last.as_ref()
    }
}

impl Drop for CheckpointWriter {
    /// A run that ends on an error still lets the write in flight finish: a checkpoint it has
    /// begun is completed rather than left to the process's exit.
    fn drop(&mut self) {
        if let Err(e) = self.wait() {
            tracing::error!("{e}");
        }
    }
}

/// Whether the host copy fits beside what the host has available; when it does not, the
/// checkpoint is written in place (with a warning) rather than risk running out of memory.
fn host_copy_fits(files: &CheckpointFiles, step: u64) -> bool {
    let bytes: u64 = files
        .iter()
        .flat_map(|(_, tensors)| tensors)
        .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum();
    let available = host_memory_available();
    let fits = snapshot_fits(bytes, available);
    if !fits {
        tracing::warn!(
            "checkpoint of step {step}: its {:.1} GB would take more than half of the host \
             memory available ({:.1} GB), so it is written in place",
            bytes as f64 / 1e9,
            available.unwrap_or(0) as f64 / 1e9
        );
    }
    fits
}

/// Whether a host copy of `bytes` may be taken: at most half of what the kernel says is available
/// (the data loader and the next save's copy need room too). Unknown availability allows it.
pub fn snapshot_fits(bytes: u64, available: Option<u64>) -> bool {
    available.is_none_or(|free| bytes <= free / 2)
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux); None where it cannot be read.
fn host_memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_available_in(&text)
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
pub fn mem_available_in(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// A copy that training cannot change under the writer: on the host, and never the same storage.
fn host_copy(t: &Tensor) -> Tensor {
    if t.device() == Device::Cpu {
        t.copy()
    } else {
        t.to_device(Device::Cpu)
    }
}

/// Held while a checkpoint is written and pruned. A process that must end at once (the
/// distributed watchdog) takes it first, so that it never ends one half-written or half-pruned.
static SAVING: Mutex<()> = Mutex::new(());

/// Waits for the checkpoint write under way, if any, and keeps others from starting while the
/// guard lives.
pub fn hold_saves() -> MutexGuard<'static, ()> {
    SAVING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn save_and_prune(
    run_dir: &Path,
    state: &TrainState,
    config_toml: &str,
    files: &CheckpointFiles,
    retention: &RetentionConfig,
) -> Result<PathBuf> {
    let _saving = hold_saves();
    let path = save(run_dir, state, config_toml, files)?;
    let removed = prune(run_dir, retention)?;
    tracing::info!("saved {} (pruned {removed:?})", path.display());
    Ok(path)
}
