use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use imagen_trainer::text::embed::{data_shards, embed_shards, CaptionShard, JsonlShard};
use tch::Device;

use super::config::ConfigArgs;

/// Cache T5 embeddings of every caption of `data.shards` (or of --captions files) with the
/// frozen encoder of `[text]`, into `text.cache_dir`. Re-running skips finished shards.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Instead of the config's `data.shards`: JSON-lines files of {"key": ..., "caption": ...},
    /// one cache shard each.
    #[arg(long, num_args = 1..)]
    captions: Vec<PathBuf>,
    /// Run on this CUDA device index instead of the CPU.
    #[arg(long)]
    cuda: Option<usize>,
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let config = args.config.load()?;
    let Some(cache_dir) = config.text.cache_dir.clone() else {
        bail!("text.cache_dir is not set: say where the cache goes, e.g. --set text.cache_dir=\"cache/t5\"");
    };
    // torchrun's variables: each rank embeds every WORLD_SIZE-th shard.
    let (rank, world) = (env_usize("RANK", 0)?, env_usize("WORLD_SIZE", 1)?);
    let device = args.cuda.map_or(Device::Cpu, Device::Cuda);
    let shards: Vec<Box<dyn CaptionShard>> = if args.captions.is_empty() {
        data_shards(&config.data)?
    } else {
        args.captions
            .into_iter()
            .map(|p| Box::new(JsonlShard(p)) as Box<dyn CaptionShard>)
            .collect()
    };
    let r = embed_shards(&config.text, &cache_dir, &shards, rank, world, device)?;
    println!(
        "rank {rank}/{world}: {} shards written, {} already done, {} captions in {:.1} s ({:.0} captions/s), {} truncated; cache {}",
        r.shards_written,
        r.shards_skipped,
        r.captions,
        r.seconds,
        r.captions as f64 / r.seconds.max(1e-9),
        r.truncated,
        cache_dir.display()
    );
    Ok(())
}
