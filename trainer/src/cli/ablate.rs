//! `imagen ablate t5`: frozen-cached against fine-tuned T5, same config, seed, data and budget.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use imagen_data::Loader;
use imagen_trainer::ablate::{ablate_t5, AblateOptions, Budget};
use imagen_trainer::text::prompts::read_prompts;

use super::config::ConfigArgs;
use super::eval_run::MetricArgs;

#[derive(Debug, Subcommand)]
pub enum AblateCommand {
    /// Train the `frozen-cached` and the `finetune` arm of one config with the same seed, data
    /// order and budget, evaluate both, and write report.md, report.json, loss_curves.png and
    /// samples_side_by_side.png.
    T5(T5Args),
}

#[derive(Debug, Args)]
pub struct T5Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Report folder; each arm trains into `<out>/<mode>/` (must not hold a run yet).
    #[arg(long)]
    out: PathBuf,
    /// Optimizer steps per arm.
    #[arg(long, conflicts_with = "minutes", required_unless_present = "minutes")]
    steps: Option<u64>,
    /// Wall-clock minutes of training per arm (capped by train.max_steps).
    #[arg(long)]
    minutes: Option<f64>,
    /// Stage both arms train (0 is the base).
    #[arg(long, default_value_t = 0)]
    stage: usize,
    /// Evaluation prompts, one per line; default: the first --num-prompts held-out captions.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Held-out captions to evaluate when --prompts is not given.
    #[arg(long, default_value_t = 16)]
    num_prompts: usize,
    #[command(flatten)]
    metrics: MetricArgs,
}

pub fn run(cmd: AblateCommand) -> Result<()> {
    match cmd {
        AblateCommand::T5(args) => t5(args),
    }
}

fn t5(args: T5Args) -> Result<()> {
    let cfg = args.config.load()?;
    let prompts = match &args.prompts {
        Some(path) => read_prompts(path)?,
        None => heldout_captions(&cfg, args.stage, args.num_prompts)?,
    };
    let budget = match (args.steps, args.minutes) {
        (Some(n), _) => Budget::Steps(n),
        (None, Some(m)) => Budget::Minutes(m),
        (None, None) => bail!("give --steps N or --minutes M"),
    };
    let opts = AblateOptions {
        exe: std::env::current_exe().context("locating the imagen binary")?,
        config: args.config.config.clone(),
        overrides: args.config.set.clone(),
        out: args.out.clone(),
        stage: args.stage,
        budget,
        eval: args.metrics.options(PathBuf::new(), prompts, PathBuf::new()),
        stop: imagen_trainer::train::StopFlag::on_signals()?,
    };
    let report = ablate_t5(&opts)?;
    for arm in &report.arms {
        println!("{}: {} steps in {:.0} s", arm.name, arm.steps, arm.train_secs);
    }
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}

/// Up to `n` distinct captions of the held-out shards, in the loader's deterministic order.
fn heldout_captions(
    cfg: &imagen_trainer::config::Config,
    stage: usize,
    n: usize,
) -> Result<Vec<String>> {
    let Some(heldout) = cfg.data.heldout() else {
        bail!("no --prompts and no data.heldout_shards to take evaluation prompts from");
    };
    let side = cfg.stage(stage)?.data_side();
    let mut loader = Loader::new(&heldout, side, 0, 1, None)?.quiet();
    let mut captions: Vec<String> = Vec::new();
    // The loader never runs dry (it starts another pass), so stop after one pass' worth.
    for _ in 0..loader.epoch_batches().max(1) {
        if captions.len() >= n {
            break;
        }
        for caption in loader.next_batch()?.captions {
            if captions.len() < n && !captions.contains(&caption) {
                captions.push(caption);
            }
        }
    }
    Ok(captions)
}
