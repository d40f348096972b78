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
    /// Opens `dir/metrics.jsonl` for appending (a resumed run continues the same file).
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| TrainerError::Io { path: path.clone(), source })?;
        Ok(Self { path, out: BufWriter::new(file) })
    }

    pub fn write(&mut self, record: &serde_json::Value) -> Result<()> {
        let io = |source| TrainerError::Io { path: self.path.clone(), source };
        serde_json::to_writer(&mut self.out, record).map_err(|e| io(e.into()))?;
        self.out.write_all(b"\n").map_err(io)?;
        self.out.flush().map_err(io)
    }
}
