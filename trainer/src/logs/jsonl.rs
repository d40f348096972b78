//! `metrics.jsonl`: one JSON object per logged step, for scripts and quick plots.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainerError};

pub struct MetricsJsonl {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsJsonl {
    /// Opens `dir/metrics.jsonl` for appending: a resumed run continues the same file. A run
    /// that starts at `start_step` first drops the records of later steps (written by a run
    /// killed after its last checkpoint, and about to be written again by this one) and a last
    /// line cut short by the kill, so that the file reads as one run, each step once and in
    /// order, as TensorBoard shows the event files.
    pub fn open(dir: &Path, start_step: u64) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let io = |source| TrainerError::Io { path: path.clone(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let kept: Vec<&str> = text.lines().filter(|l| belongs(l, start_step)).collect();
                if kept.len() != text.lines().count() {
                    tracing::info!(
                        "{}: dropped {} record(s) past step {start_step}, which this run writes again",
                        path.display(),
                        text.lines().count() - kept.len()
                    );
                    let tmp = dir.join(".metrics.jsonl.tmp");
                    let body: String = kept.iter().map(|l| format!("{l}\n")).collect();
                    std::fs::write(&tmp, body).map_err(io)?;
                    std::fs::rename(&tmp, &path).map_err(io)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        Ok(Self { path, out: BufWriter::new(file) })
    }

    pub fn write(&mut self, record: &serde_json::Value) -> Result<()> {
        let io = |source| TrainerError::Io { path: self.path.clone(), source };
        serde_json::to_writer(&mut self.out, record).map_err(|e| io(e.into()))?;
        self.out.write_all(b"\n").map_err(io)?;
        self.out.flush().map_err(io)
    }
}

/// Whether a line of an existing `metrics.jsonl` stays when a run starts at `start_step`: a whole
/// record of that step or an earlier one.
fn belongs(line: &str, start_step: u64) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|record| record.get("step").and_then(serde_json::Value::as_u64))
        .is_some_and(|step| step <= start_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_starting_at_a_step_drops_the_later_records_and_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"step\":4}\n{\"step\":8}\n{\"step\":12}\n{\"step\":1").unwrap();
        let mut log = MetricsJsonl::open(dir.path(), 8).unwrap();
        log.write(&serde_json::json!({"step": 9})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"step\":4}\n{\"step\":8}\n{\"step\":9}\n");
        // Nothing to drop: the file is appended to as it is.
        MetricsJsonl::open(dir.path(), 9).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
