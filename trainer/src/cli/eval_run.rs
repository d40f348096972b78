//! `imagen eval run`: sample a trained cascade for a prompt file and score the samples.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use imagen_trainer::evaluate::{evaluate, EvalOptions, EvalReport, Metric};
use imagen_trainer::sample::DEFAULT_SAMPLE_BATCH;
use imagen_trainer::text::prompts::read_prompts;

use super::config::ConfigArgs;

/// What to measure and with which weights (shared by `eval run` and `ablate t5`).
#[derive(Debug, Args)]
pub struct MetricArgs {
    /// Comma-separated metrics: conditioning, clip, fid, val-loss.
    #[arg(long, value_delimiter = ',', default_value = "conditioning,val-loss")]
    metrics: Vec<Metric>,
    /// CLIP model folder in Hugging Face's layout (for `clip`).
    #[arg(long, value_name = "DIR")]
    clip: Option<PathBuf>,
    /// pytorch-fid's Inception weights as safetensors (for `fid`).
    #[arg(long, env = "IMAGEN_FID_INCEPTION", value_name = "WEIGHTS")]
    inception: Option<PathBuf>,
    /// Reference image folder or pytorch-fid statistics .npz (for `fid`).
    #[arg(long, value_name = "DIR|NPZ")]
    reference: Option<PathBuf>,
    /// FID feature block: 64, 192, 768 or 2048.
    #[arg(long, default_value_t = 2048)]
    fid_dims: usize,
    /// Held-out batches for `val-loss` (default: train.validate_batches).
    #[arg(long)]
    val_batches: Option<u64>,
    /// Seed of the sampling noise.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Prompts sampled at a time through the cascade (memory only: each prompt's noise comes
    /// from the seed and the prompt's index, so the images do not depend on it).
    #[arg(long, default_value_t = DEFAULT_SAMPLE_BATCH)]
    batch_size: usize,
}

impl MetricArgs {
    /// Evaluation options for `prompts`, writing to `out`.
    pub fn options(&self, run_dir: PathBuf, prompts: Vec<String>, out: PathBuf) -> EvalOptions {
        let mut opts = EvalOptions::new(run_dir, prompts, out);
        opts.metrics = self.metrics.clone();
        opts.seed = self.seed;
        opts.sample_batch = self.batch_size;
        opts.clip = self.clip.clone();
        opts.inception = self.inception.clone();
        opts.reference = self.reference.clone();
        opts.fid_dims = self.fid_dims;
        opts.val_batches = self.val_batches;
        opts
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Run directory (overrides `<run.dir>/<run.name>`) holding `stage-<N>/` checkpoints; the
    /// newest checkpoint of each stage is evaluated.
    #[arg(long, conflicts_with = "checkpoint")]
    run_dir: Option<PathBuf>,
    /// A step directory (`<run>/stage-<N>/step-<S>`) to evaluate instead of the newest: stage N
    /// comes from it, earlier stages from the newest checkpoints of its run, and sampling stops
    /// at stage N.
    #[arg(long, value_name = "STEP_DIR")]
    checkpoint: Option<PathBuf>,
    /// Prompts, one per line; one sample each.
    #[arg(long)]
    prompts: PathBuf,
    /// Output folder: samples/, report.json, report.md.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    metrics: MetricArgs,
    /// Last stage to sample (0 is the base); default: every stage of the config.
    #[arg(long)]
    stop_at_stage: Option<usize>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    let cfg = args.config.load_for_run(args.run_dir.as_deref(), args.checkpoint.as_deref())?;
    let prompts = read_prompts(&args.prompts)?;
    let run_dir = args.run_dir.clone().unwrap_or_else(|| cfg.run.run_dir());
    let mut opts = args.metrics.options(run_dir, prompts, args.out.clone());
    opts.checkpoint = args.checkpoint;
    opts.stop_at_stage = args.stop_at_stage;
    let report = evaluate(&cfg, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
        println!("report: {}", args.out.join("report.md").display());
    }
    Ok(())
}

fn print_summary(report: &EvalReport) {
    for row in report.rows() {
        match (row.summary, row.value) {
            (Some(s), _) => println!(
                "{}: {:.4} ± {:.4} (n {}, 95% CI [{:.4}, {:.4}])",
                row.name, s.mean, s.std, s.n, s.ci95_low, s.ci95_high
            ),
            (None, Some(v)) => println!("{}: {v:.4}", row.name),
            _ => {}
        }
    }
    if let Some(c) = &report.conditioning {
        if c.unparsed > 0 {
            println!(
                "conditioning: {} prompts are not synthetic-scene captions (not scored)",
                c.unparsed
            );
        }
    }
}
