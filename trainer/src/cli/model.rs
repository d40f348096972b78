use anyhow::Result;
use clap::{Args, Subcommand};
use imagen_trainer::unet::{summarize, ModelSummary};

use super::config::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Parameters per block and in total, and analytic FLOPs per sample (forward and training
    /// step), of the config's U-Net; nothing is allocated.
    Summary(SummaryArgs),
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Stage of the cascade (0 is the base).
    #[arg(long, default_value_t = 0)]
    stage: usize,
    /// Text tokens assumed for the FLOPs.
    #[arg(long, default_value_t = 128)]
    text_len: i64,
    /// Print JSON (`total_params`, `flops_per_sample_fwd`, `flops_per_sample_train`, `blocks`).
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Summary(args) => {
            let config = args.config.load()?;
            let summary = summarize(&config.stage(args.stage)?.unet, args.text_len)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_table(&summary);
            }
            Ok(())
        }
    }
}

fn print_table(summary: &ModelSummary) {
    println!("{:<44} {:>6} {:>14} {:>12}", "block", "side", "params", "GFLOPs fwd");
    for b in &summary.blocks {
        println!(
            "{:<44} {:>6} {:>14} {:>12.3}",
            b.name,
            b.side,
            b.params,
            b.flops_fwd as f64 / 1e9
        );
    }
    println!();
    println!(
        "total params:             {} ({:.1} M)",
        summary.total_params,
        summary.total_params as f64 / 1e6
    );
    println!(
        "FLOPs per sample, fwd:    {:.1} G ({}x{} image, {} text tokens)",
        summary.flops_per_sample_fwd as f64 / 1e9,
        summary.image_side,
        summary.image_side,
        summary.text_len
    );
    println!(
        "FLOPs per sample, train:  {:.1} G (3x forward)",
        summary.flops_per_sample_train as f64 / 1e9
    );
}
