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
    /// Text tokens assumed for the FLOPs. Default: the config's `text.max_length`.
    #[arg(long)]
    text_len: Option<i64>,
    /// Count at the side training runs at (the stage's `train_crop`) instead of `image_side`.
    #[arg(long)]
    at_train_side: bool,
    /// Print JSON (`total_params`, `flops_per_sample_fwd`, `flops_per_sample_train`, `blocks`).
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Summary(args) => {
            let config = args.config.load()?;
            let stage = config.stage(args.stage)?;
            let unet =
                if args.at_train_side { stage.unet_at_train_side() } else { stage.unet.clone() };
            let text_len = args.text_len.unwrap_or(config.text.max_length as i64);
            let summary = summarize(&unet, text_len)?;
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
