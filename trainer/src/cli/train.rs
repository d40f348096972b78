use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use imagen_trainer::train::{train, Resume, StopFlag, TrainOptions};

use super::config::ConfigArgs;

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Stage of the cascade to train (0 is the base).
    #[arg(long, default_value_t = 0)]
    stage: usize,
    /// Run directory (overrides `<run.dir>/<run.name>`); the stage writes to `<dir>/stage-<N>`.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Optimizer steps to train to (overrides train.max_steps).
    #[arg(long)]
    max_steps: Option<u64>,
    /// "auto" (newest checkpoint if any), "latest" (must exist), "never", or a checkpoint dir.
    #[arg(long, default_value = "auto")]
    resume: String,
    /// "exact" continues the checkpoint's data stream (refused when the data settings that
    /// order it changed); "restart" keeps the weights, optimizer and step and starts the stream
    /// afresh.
    #[arg(long, value_enum, default_value_t = DataCursor::Exact)]
    data_cursor: DataCursor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DataCursor {
    Exact,
    Restart,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cfg = args.config.load()?;
    let run_dir = args.run_dir.unwrap_or_else(|| cfg.run.run_dir());
    let outcome = train(
        &cfg,
        TrainOptions {
            stage: args.stage,
            run_dir,
            max_steps: args.max_steps,
            resume: Resume::parse(&args.resume),
            stop: StopFlag::on_signals()?,
            progress: std::io::stdout().is_terminal(),
            inject_nonfinite_at: Vec::new(),
            restart_data: args.data_cursor == DataCursor::Restart,
        },
    )?;
    println!(
        "stage {} {} at step {}; checkpoint {}; TensorBoard logs in {}",
        args.stage,
        if outcome.interrupted { "stopped by signal" } else { "finished" },
        outcome.step,
        match (&outcome.last_checkpoint, outcome.writes_checkpoints) {
            (Some(p), _) => p.display().to_string(),
            (None, true) => "none".to_owned(),
            (None, false) => "written by rank 0".to_owned(),
        },
        outcome.stage_dir.display()
    );
    Ok(())
}
