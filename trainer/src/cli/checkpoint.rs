use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use imagen_trainer::checkpoint::{list, Checkpoint};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Read every tensor file of checkpoints against the size and CRC-32C in their state.json
    /// (after a copy between machines, say). Exits non-zero when one is damaged.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Checkpoint directories (`step-NNNNNNNNN`), stage directories holding them, or run
    /// directories holding `stage-N/`.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print one JSON object per checkpoint (`path`, `step`, `ok`, `files`, `error`).
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: CheckpointCommand) -> Result<()> {
    match cmd {
        CheckpointCommand::Verify(args) => verify(&args),
    }
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let mut found = Vec::new();
    for path in &args.paths {
        let before = found.len();
        checkpoints_under(path, &mut found)?;
        if found.len() == before {
            bail!(
                "{}: no checkpoint (no state.json here or in step-*/ or stage-*/step-*/)",
                path.display()
            );
        }
    }
    let mut damaged = 0;
    for dir in &found {
        let checked = Checkpoint::open(dir).and_then(|mut c| c.verify().map(|()| c));
        let files = checked.as_ref().map_or(0, |c| c.state.files.len());
        if checked.is_err() {
            damaged += 1;
        }
        if args.json {
            let report = json!({
                "path": dir,
                "step": checked.as_ref().ok().map(|c| c.state.step),
                "ok": checked.is_ok(),
                "files": files,
                "error": checked.as_ref().err().map(|e| e.to_string()),
            });
            println!("{report}");
            continue;
        }
        match &checked {
            Ok(_) if files == 0 => {
                println!("unchecked {} (saved before checkpoints recorded digests)", dir.display())
            }
            Ok(_) => println!("ok        {} ({files} files)", dir.display()),
            Err(e) => println!("DAMAGED   {e}"),
        }
    }
    if damaged > 0 {
        bail!("{damaged} of {} checkpoint(s) damaged", found.len());
    }
    Ok(())
}

/// A checkpoint directory itself, the checkpoints of a stage directory, or those of every
/// `stage-N/` of a run directory.
fn checkpoints_under(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.join("state.json").is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    let own = list(path)?;
    if !own.is_empty() {
        out.extend(own.into_iter().map(|(_, dir)| dir));
        return Ok(());
    }
    let mut stages: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("stage-")))
        .collect();
    stages.sort();
    for stage in stages {
        out.extend(list(&stage)?.into_iter().map(|(_, dir)| dir));
    }
    Ok(())
}
