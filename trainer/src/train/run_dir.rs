use std::path::{Path, PathBuf};

/// Each stage of a cascade writes into its own folder of the run directory, so the stages can
/// train at the same time on different machines: `<run>/stage-<N>/`.
pub fn stage_dir(run_dir: &Path, stage: usize) -> PathBuf {
    run_dir.join(format!("stage-{stage}"))
}

/// One trainer per stage directory at a time: an exclusive `flock` on `<stage>/.lock`, held
/// while the value lives and released by the kernel however the process ends (a SIGKILL
/// included). Without it a second `imagen train` of the same stage (a job submitted twice, a
/// requeued job whose first run is still saving) would delete the first one's save in progress
/// as a leftover and interleave two timelines of checkpoints.
pub struct StageLock {
    _file: std::fs::File,
}

impl StageLock {
    /// Takes the lock, or says who holds it (the holder writes its host and process id into the
    /// file). Where the filesystem has no locks, warns and goes on unguarded.
    pub fn acquire(stage_dir: &Path) -> crate::error::Result<Self> {
        use std::io::{Read, Seek, Write};
        let path = stage_dir.join(".lock");
        let io = |source| crate::error::TrainerError::Io { path: path.clone(), source };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if let Err(err) = try_lock(&file) {
            if err.kind() != std::io::ErrorKind::WouldBlock {
                // A filesystem without locks (NFS mounted `nolock`: ENOLCK) must not stop a
                // run; it only loses this guard.
                tracing::warn!(
                    "{}: cannot lock ({err}); nothing keeps a second trainer out of this stage",
                    path.display()
                );
                return Ok(Self { _file: file });
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(crate::error::TrainerError::Checkpoint(format!(
                "{} is in use by another trainer ({}); two runs of one stage would overwrite \
                 each other's checkpoints. Stop that one, or give this run another --run-dir",
                stage_dir.display(),
                holder.trim()
            )));
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let me = format!("host {}, pid {}", host.trim(), std::process::id());
        file.set_len(0).and_then(|()| file.rewind()).map_err(io)?;
        file.write_all(me.as_bytes()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// Removes a stage directory that holds nothing but its lock file (a start that failed before
/// saving anything), under the lock, so that a trainer that took the directory meanwhile keeps
/// it. Anything else in it, or a lock held elsewhere, leaves it alone.
pub fn remove_if_unused(stage_dir: &Path) {
    let Ok(lock) = std::fs::OpenOptions::new().read(true).write(true).open(stage_dir.join(".lock"))
    else {
        return;
    };
    if try_lock(&lock).is_err() {
        return;
    }
    let only_lock = std::fs::read_dir(stage_dir)
        .map(|entries| entries.flatten().all(|e| e.file_name() == ".lock"))
        .unwrap_or(false);
    if only_lock {
        let _ = std::fs::remove_file(stage_dir.join(".lock"));
        let _ = std::fs::remove_dir(stage_dir);
    }
    drop(lock);
}

/// An exclusive `flock` on `file`, without waiting: WouldBlock when another holds it.
fn try_lock(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the caller owns for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_trainer_of_a_stage_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = StageLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file, so a second open in this process contends too.
        let err = StageLock::acquire(dir.path()).err().expect("refused").to_string();
        assert!(
            err.contains("in use by another trainer")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        StageLock::acquire(dir.path()).unwrap();
    }
}
