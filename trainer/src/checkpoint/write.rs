use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::state::{FileDigest, TrainState, STATE_VERSION};
use crate::error::{Result, TrainerError};

/// The tensor files of a checkpoint: file stem -> named tensors.
pub type CheckpointFiles<'a> = Vec<(&'a str, Vec<(String, Tensor)>)>;

/// A saved checkpoint on disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainState,
    pub config_toml: String,
    /// Every file was read against its digest ([`Checkpoint::verify`]), so loads need not again.
    verified: bool,
}

fn dir_name(step: u64) -> String {
    format!("step-{step:09}")
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |source| TrainerError::Io { path: path.to_owned(), source }
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(io(path))
}

/// Size and CRC-32C of a file, read in 8 MiB pieces.
fn digest(path: &Path) -> Result<FileDigest> {
    let mut file = File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 8 << 20];
    let mut found = FileDigest { bytes: 0, crc32c: 0 };
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(found);
        }
        found.crc32c = crc32c::crc32c_append(found.crc32c, &buf[..n]);
        found.bytes += n as u64;
    }
}

/// Writes a checkpoint for `state.step` atomically: a temporary directory, every file synced,
/// then one rename. Refuses tensors that are not finite, so a checkpoint never holds a NaN.
/// `state.json` records each tensor file's size and CRC-32C, read back from the disk after the
/// file was synced.
pub fn save(
    run_dir: &Path,
    state: &TrainState,
    config_toml: &str,
    files: &CheckpointFiles,
) -> Result<PathBuf> {
    for (stem, tensors) in files {
        for (name, t) in tensors {
            let is_float =
                matches!(t.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16);
            if is_float && !bool::try_from(t.isfinite().all()).unwrap_or(false) {
                return Err(TrainerError::Checkpoint(format!(
                    "refusing to save step {}: `{name}` in {stem} is not finite",
                    state.step
                )));
            }
        }
    }
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    let final_dir = run_dir.join(dir_name(state.step));
    let tmp = run_dir.join(format!(".tmp-{}-{}", dir_name(state.step), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let mut state = state.clone();
    state.files.clear();
    let result = (|| -> Result<()> {
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        for (stem, tensors) in files {
            let name = format!("{stem}.safetensors");
            let path = tmp.join(&name);
            // Contiguous: safetensors holds row-major data, and channels-last weights and their
            // moments are not.
            let cpu: Vec<(String, Tensor)> = tensors
                .iter()
                .map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu).contiguous()))
                .collect();
            Tensor::write_safetensors(&cpu, &path).map_err(|e| {
                TrainerError::Checkpoint(format!("writing {}: {e}", path.display()))
            })?;
            sync_file(&path)?;
            state.files.insert(name, digest(&path)?);
        }
        // The config is checked like the tensors: a resume reads its shapes and horizon there.
        let config_path = tmp.join("config.toml");
        std::fs::write(&config_path, config_toml).map_err(io(&config_path))?;
        sync_file(&config_path)?;
        state.files.insert("config.toml".into(), digest(&config_path)?);
        let state_path = tmp.join("state.json");
        let json = serde_json::to_vec_pretty(&state).expect("state serialises");
        std::fs::write(&state_path, json).map_err(io(&state_path))?;
        sync_file(&state_path)?;
        sync_file(&tmp)?;
        Ok(())
    })();
    if let Err(e) = result {
        // Leave nothing half-written behind; earlier checkpoints were never touched.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        // Saving a step again (a resumed run that stops where it started): swap, then delete.
        let old = run_dir.join(format!(".old-{}-{}", dir_name(state.step), std::process::id()));
        std::fs::rename(&final_dir, &old).map_err(io(&final_dir))?;
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    }
    sync_file(run_dir)?;
    Ok(final_dir)
}

/// Puts right what a save or a pruning killed part-way left in `run_dir`, before a run starts
/// there (rank 0, the stage directory's one writer): a `.tmp-step-N-PID` directory (a save that
/// never reached its rename) and a `.del-step-N-PID` (a pruned checkpoint not yet all deleted)
/// are deleted; a `.old-step-N-PID` (a save of step N again, killed between its two renames) goes
/// back to `step-N` where that is missing, and is deleted where the new one made it. Returns what
/// it did, for the log.
pub fn recover_interrupted_saves(run_dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for (name, path) in entries(run_dir)? {
        let Some((kind, rest)) = [".tmp-", ".old-", ".del-"]
            .into_iter()
            .find_map(|prefix| name.strip_prefix(prefix).map(|rest| (prefix, rest)))
        else {
            continue;
        };
        let Some((checkpoint, _pid)) = rest.rsplit_once('-') else { continue };
        if !checkpoint.starts_with("step-") || !path.is_dir() {
            continue;
        }
        let target = run_dir.join(checkpoint);
        if kind == ".old-" && !target.exists() {
            std::fs::rename(&path, &target).map_err(io(&path))?;
            done.push(format!(
                "restored {} from {name}, left by a save that was killed",
                target.display()
            ));
        } else {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
            let by = if kind == ".del-" { "a pruning" } else { "a save" };
            done.push(format!("removed {}, left by {by} that was killed", path.display()));
        }
    }
    if !done.is_empty() {
        sync_file(run_dir)?;
    }
    Ok(done)
}

/// The names (UTF-8 ones) and paths in a run directory; none where it does not exist yet.
fn entries(run_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let read = match std::fs::read_dir(run_dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(run_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(io(run_dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

/// The complete checkpoints of a run directory, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for (name, path) in entries(run_dir)? {
        let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) else {
            continue;
        };
        if path.join("state.json").is_file() {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

impl Checkpoint {
    /// Reads a checkpoint directory's state and config (tensors are loaded on demand), and
    /// checks that every tensor file `state.json` records is there with its recorded size.
    pub fn open(dir: &Path) -> Result<Self> {
        let state_path = dir.join("state.json");
        let bytes = std::fs::read(&state_path).map_err(io(&state_path))?;
        let unreadable = |e: serde_json::Error| {
            TrainerError::Checkpoint(format!("{}: {e}", state_path.display()))
        };
        // The version first: a newer format's fields would fail to parse as this one's and pass
        // for damage, which `latest_intact` steps over instead of stopping.
        #[derive(serde::Deserialize)]
        struct Version {
            version: u32,
        }
        let found = serde_json::from_slice::<Version>(&bytes).map_err(unreadable)?.version;
        if found != STATE_VERSION {
            return Err(TrainerError::CheckpointVersion {
                path: state_path,
                found,
                expected: STATE_VERSION,
            });
        }
        let state: TrainState = serde_json::from_slice(&bytes).map_err(unreadable)?;
        let config_path = dir.join("config.toml");
        let config_toml = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
        for (name, recorded) in &state.files {
            let path = dir.join(name);
            let bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
            if bytes != recorded.bytes {
                return Err(TrainerError::Checkpoint(format!(
                    "{}: {bytes} bytes, but state.json records {} (truncated or replaced after \
                     the save)",
                    path.display(),
                    recorded.bytes
                )));
            }
        }
        Ok(Self { dir: dir.to_owned(), state, config_toml, verified: false })
    }

    /// Checks a tensor file against the size and CRC-32C that `state.json` records for it
    /// (nothing to check in checkpoints saved before the digests existed).
    pub fn verify_file(&self, name: &str) -> Result<()> {
        let Some(recorded) = self.state.files.get(name) else { return Ok(()) };
        let path = self.dir.join(name);
        let found = digest(&path)?;
        if found != *recorded {
            return Err(TrainerError::Checkpoint(format!(
                "{}: {} bytes with CRC-32C {:08x}, but state.json records {} bytes with {:08x}: \
                 the file changed after the save",
                path.display(),
                found.bytes,
                found.crc32c,
                recorded.bytes,
                recorded.crc32c
            )));
        }
        Ok(())
    }

    /// Checks every tensor file of the checkpoint (reads them all); the loads that follow do not
    /// check them again.
    pub fn verify(&mut self) -> Result<()> {
        self.state.files.keys().try_for_each(|name| self.verify_file(name))?;
        self.verified = true;
        Ok(())
    }

    /// Which stage of its recorded config the checkpoint's weights are; a checkpoint from
    /// before that was recorded is taken as `loaded_as`, the stage it is loaded as.
    pub fn trained_stage(&self, loaded_as: usize) -> usize {
        self.state.stage.unwrap_or(loaded_as)
    }

    /// The checkpoint, its files taken as checked: for the other ranks of a run whose rank 0 chose
    /// it after reading every file against its digest (at 16 GB of optimizer state, each rank
    /// reading it once more to check it would double a resume's reads of a shared filesystem).
    pub fn verified_by_rank_zero(self) -> Self {
        Self { verified: true, ..self }
    }

    /// The named tensors of `<stem>.safetensors`, after checking the file's CRC-32C (unless
    /// [`Checkpoint::verify`] has).
    pub fn tensors(&self, stem: &str) -> Result<Vec<(String, Tensor)>> {
        let name = format!("{stem}.safetensors");
        if !self.verified {
            self.verify_file(&name)?;
        }
        load_tensors(&self.dir.join(name))
    }
}

pub fn load_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    crate::tensor_file::read_tensors(path)
        .map_err(|e| TrainerError::Checkpoint(format!("reading {}: {e}", path.display())))
}

/// The newest checkpoint that opens cleanly (its state, its config, its files' sizes); a
/// damaged newer one is reported and passed over. Each tensor file's CRC-32C is checked when it
/// is loaded.
pub fn latest(run_dir: &Path) -> Result<Option<Checkpoint>> {
    newest_passing(run_dir, |_| Ok(()))
}

/// As [`latest`], also reading every tensor file against its CRC-32C: where a run resumes, so
/// that a damaged newest checkpoint gives way to the one before it.
pub fn latest_intact(run_dir: &Path) -> Result<Option<Checkpoint>> {
    newest_passing(run_dir, Checkpoint::verify)
}

/// Whether an error opening a checkpoint shows the checkpoint itself is damaged (a file missing,
/// cut short, altered or unparsable), so that the one before it may stand in. Anything else (a
/// disk or network filesystem failing to answer, a permission, a format version this build does
/// not read) says nothing about the checkpoint and must stop the caller: passing over every
/// checkpoint for it would start a run over from step 0.
fn is_damage(e: &TrainerError) -> bool {
    match e {
        TrainerError::Checkpoint(_) => true,
        TrainerError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

fn newest_passing(
    run_dir: &Path,
    check: impl Fn(&mut Checkpoint) -> Result<()>,
) -> Result<Option<Checkpoint>> {
    let mut damaged = Vec::new();
    for (_, dir) in list(run_dir)?.into_iter().rev() {
        match Checkpoint::open(&dir).and_then(|mut ckpt| check(&mut ckpt).map(|()| ckpt)) {
            Ok(ckpt) => return Ok(Some(ckpt)),
            Err(e) if is_damage(&e) => {
                tracing::warn!("skipping damaged checkpoint: {e}");
                damaged.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    if damaged.is_empty() {
        return Ok(None);
    }
    // Every checkpoint damaged is no reason to start again from nothing on its own.
    Err(TrainerError::Checkpoint(format!(
        "{} holds {} checkpoint(s) and none is intact ({}); to start the run from scratch \
         anyway (they are kept, set aside), pass --resume never",
        run_dir.display(),
        damaged.len(),
        damaged.join("; ")
    )))
}
