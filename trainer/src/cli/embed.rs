use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use imagen_trainer::dist::env::{cuda_index, WorldInfo};
use imagen_trainer::text::embed::{data_shards, embed_shards, CaptionShard, JsonlShard};
use imagen_trainer::train::visible_cuda;
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
    /// Run on CUDA instead of the CPU: `--cuda N` on device N; `--cuda` alone on device 0, or,
    /// under `imagen launch`, torchrun or Slurm, on the worker's local rank's device.
    #[arg(long, num_args = 0..=1, value_name = "N")]
    cuda: Option<Option<usize>>,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let config = args.config.load()?;
    let Some(cache_dir) = config.text.cache_dir.clone() else {
        bail!("text.cache_dir is not set: say where the cache goes, e.g. --set text.cache_dir=\"cache/t5\"");
    };
    // Under a launcher each rank embeds every world-size-th shard (no collectives: the ranks
    // share only the cache directory).
    let job = WorldInfo::placement_from_env()?;
    let (rank, world) = job.as_ref().map_or((0, 1), |j| (j.rank, j.world_size));
    let device = match (args.cuda, &job) {
        (None, _) => Device::Cpu,
        (Some(Some(index)), _) => visible_cuda(index, "--cuda")?,
        (Some(None), None) => visible_cuda(0, "--cuda")?,
        (Some(None), Some(job)) => {
            Device::Cuda(cuda_index(job.local_rank, tch::Cuda::device_count())?)
        }
    };
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
        "rank {rank}/{world}: {} shards written ({} of them changed since cached), {} already done, {} captions in {:.1} s ({:.0} captions/s), {} truncated; cache {}",
        r.shards_written,
        r.shards_reembedded,
        r.shards_skipped,
        r.captions,
        r.seconds,
        r.captions as f64 / r.seconds.max(1e-9),
        r.truncated,
        cache_dir.display()
    );
    Ok(())
}
