//! `imagen data ...`: synthesise, inspect and benchmark image-caption shards.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use imagen_data::config::ColumnsConfig;
use imagen_data::synth::{synthesize, ImageEncoding, SynthFormat, SynthOptions};
use imagen_data::{DataConfig, FormatChoice};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a deterministic LAION-style dataset of simple captioned scenes (parquet and/or tars).
    Synth(SynthArgs),
    /// Schema, counts, example captions and failures by reason of a shard list.
    Inspect(InspectArgs),
    /// Decode + resize + centre-crop throughput (images/s per thread) on a shard list.
    Bench(BenchArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ShardFormatArg {
    Auto,
    Parquet,
    Wds,
}

impl ShardFormatArg {
    fn choice(self) -> FormatChoice {
        match self {
            ShardFormatArg::Auto => FormatChoice::Auto,
            ShardFormatArg::Parquet => FormatChoice::Parquet,
            ShardFormatArg::Wds => FormatChoice::Wds,
        }
    }
}

/// `data.columns` on the command line.
#[derive(Debug, Args)]
pub struct ColumnArgs {
    /// The image column (parquet) or member extension (WebDataset), as `data.columns.image`.
    #[arg(long)]
    pub image_column: Option<String>,
    /// The caption column (parquet) or member extension / json field (WebDataset), as
    /// `data.columns.caption`.
    #[arg(long)]
    pub caption_column: Option<String>,
}

impl ColumnArgs {
    fn config(self) -> ColumnsConfig {
        ColumnsConfig { image: self.image_column, caption: self.caption_column }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Shards: files, directories, globs, brace ranges ('laion/{00000..00099}.tar'), list files.
    #[arg(required = true)]
    pub shards: Vec<String>,
    /// Shard format (auto: by extension).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: ShardFormatArg,
    #[command(flatten)]
    pub columns: ColumnArgs,
    /// Side the images are test-decoded at.
    #[arg(long, default_value_t = 64)]
    pub side: u32,
    /// Only read the shards; do not decode the images.
    #[arg(long)]
    pub no_decode: bool,
    /// Number of example captions to print.
    #[arg(long, default_value_t = 5)]
    pub examples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Shards: files, directories, globs, brace ranges, list files.
    #[arg(required = true)]
    pub shards: Vec<String>,
    /// Shard format (auto: by extension).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: ShardFormatArg,
    #[command(flatten)]
    pub columns: ColumnArgs,
    /// Output side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Decode threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Samples read into memory and decoded per pass.
    #[arg(long, default_value_t = 512)]
    pub limit: usize,
    /// Timed passes over the samples (after one warm-up pass).
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// Decode JPEGs at full scale even when a DCT-reduced scale would do.
    #[arg(long)]
    pub no_dct_scaling: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Parquet,
    Wds,
    Both,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EncodingArg {
    Jpg,
    Png,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory (parquet/{train,heldout}/ and wds/{train,heldout}/ are made in it).
    #[arg(long)]
    pub out: PathBuf,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub side: u32,
    /// Number of training samples.
    #[arg(long, default_value_t = 1080)]
    pub count: u64,
    /// Number of training shards.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Container format(s).
    #[arg(long, value_enum, default_value = "both")]
    pub format: FormatArg,
    /// Number of held-out samples (disjoint global indices).
    #[arg(long, default_value_t = 108)]
    pub heldout: u64,
    /// Seed of the attribute order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image encoding of the payload.
    #[arg(long, value_enum, default_value = "jpg")]
    pub encoding: EncodingArg,
    /// JPEG quality.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
    /// Rows per parquet row group.
    #[arg(long, default_value_t = 256)]
    pub row_group_rows: usize,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Synth(args) => synth(args),
        DataCommand::Inspect(args) => inspect(args),
        DataCommand::Bench(args) => bench(args),
    }
}

fn inspect(args: InspectArgs) -> Result<()> {
    let cfg = DataConfig {
        shards: args.shards,
        format: args.format.choice(),
        side: args.side,
        columns: args.columns.config(),
        ..DataConfig::default()
    };
    let report = imagen_data::inspect::inspect(&cfg, !args.no_decode, args.examples)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for shard in &report.shards {
        println!(
            "{} ({:?}): {} good, skipped {:?}",
            shard.path, shard.format, shard.stats.good, shard.stats.skipped
        );
        for problem in &shard.problems {
            println!("  {problem}");
        }
    }
    if let Some(first) = report.shards.first() {
        println!("columns of {}: {}", first.path, first.columns.join(", "));
    }
    println!(
        "total: {} shards, {} good samples, {} skipped: {:?}",
        report.shards.len(),
        report.total.good,
        report.total.total_skipped(),
        report.total.skipped
    );
    for caption in &report.example_captions {
        println!("  {caption:?}");
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    let cfg = DataConfig {
        shards: args.shards,
        format: args.format.choice(),
        columns: args.columns.config(),
        ..DataConfig::default()
    };
    let mut stats = imagen_data::SkipStats::default();
    let samples = imagen_data::bench::read_samples(&cfg, args.limit, &mut stats)?;
    let bar = imagen_trainer::progress::bar(Some(args.passes.max(1) as u64), "decoding");
    let report = imagen_data::bench::run(
        &samples,
        args.size,
        args.threads,
        args.passes,
        !args.no_dct_scaling,
        stats,
        |p| bar.set_position(p as u64),
    )?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} images at {} px on {} thread(s): {:.0} images/s, {:.0} images/s per thread (DCT scaling {})",
            report.images,
            report.side,
            report.threads,
            report.images_per_sec,
            report.images_per_sec_per_thread,
            if report.dct_scaling { "on" } else { "off" }
        );
        println!("good {}, skipped {:?}", report.stats.good, report.stats.skipped);
    }
    Ok(())
}

fn synth(args: SynthArgs) -> Result<()> {
    let opts = SynthOptions {
        side: args.side,
        count: args.count,
        shards: args.shards,
        heldout: args.heldout,
        seed: args.seed,
        format: match args.format {
            FormatArg::Parquet => SynthFormat::Parquet,
            FormatArg::Wds => SynthFormat::Wds,
            FormatArg::Both => SynthFormat::Both,
        },
        encoding: match args.encoding {
            EncodingArg::Jpg => ImageEncoding::Jpg,
            EncodingArg::Png => ImageEncoding::Png,
        },
        quality: args.quality,
        row_group_rows: args.row_group_rows,
    };
    let written = synthesize(&args.out, &opts)?;
    println!(
        "wrote {} training and {} held-out shard files under {}",
        written.train.len(),
        written.heldout.len(),
        args.out.display()
    );
    Ok(())
}
