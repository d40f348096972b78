use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use imagen_trainer::sample::{
    sample_cascade_each, SampleWriter, StageLoader, DEFAULT_SAMPLE_BATCH,
};
use imagen_trainer::text::prompts::read_prompts;
use imagen_trainer::train::{prepare_process, resolve_device};

use super::config::ConfigArgs;

#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Run directory (overrides `<run.dir>/<run.name>`) holding `stage-<N>/` checkpoints.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// A prompt (repeatable).
    #[arg(long)]
    prompt: Vec<String>,
    /// A file of prompts, one per line.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Output folder: NNNN.png per prompt, grid.png (the first 64), prompts.txt, index.html.
    #[arg(long)]
    out: PathBuf,
    /// Last stage to run (0 is the base); default: every stage of the config.
    #[arg(long)]
    stop_at_stage: Option<usize>,
    /// Seed of the sampling noise.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Prompts sampled at a time through the cascade (memory only: each prompt's noise comes
    /// from the seed and the prompt's index, so the images do not depend on it).
    #[arg(long, default_value_t = DEFAULT_SAMPLE_BATCH)]
    batch_size: usize,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let cfg = args.config.load_for_run(args.run_dir.as_deref(), None)?;
    let mut prompts = args.prompt.clone();
    if let Some(path) = &args.prompts {
        prompts.extend(read_prompts(path)?);
    }
    if prompts.is_empty() {
        bail!("no prompts: give --prompt TEXT or --prompts FILE");
    }
    let run_dir = args.run_dir.clone().unwrap_or_else(|| cfg.run.run_dir());
    let device = resolve_device(&cfg.train.device)?;
    // The same threads and cuDNN autotuning as training: every denoising step repeats one shape.
    prepare_process(&cfg.train, device)?;
    let last = imagen_trainer::diffusion::last_stage(args.stop_at_stage, cfg.stages.len())?;
    let mut loader = StageLoader::new(&cfg, device);
    let mut stages = Vec::new();
    for index in 0..=last {
        let stage = loader.latest(&run_dir, index)?;
        tracing::info!("stage {index}: EMA weights of {}", stage.checkpoint.display());
        stages.push(stage);
    }
    // Each batch's images go to disk as it finishes: nothing grows with the number of prompts.
    imagen_trainer::sample::clear_previous_samples(&args.out)?;
    let mut writers = (0..=last)
        .map(|i| {
            let dir =
                if i == last { args.out.clone() } else { args.out.join(format!("stage-{i}")) };
            SampleWriter::create(&dir, &prompts)
        })
        .collect::<Result<Vec<_>, _>>()?;
    sample_cascade_each(&stages, &prompts, args.seed, args.batch_size, |_, outputs| {
        writers.iter_mut().zip(&outputs).try_for_each(|(writer, images)| writer.push(images))
    })?;
    let count = match prompts.len() {
        1 => "1 image".to_owned(),
        n => format!("{n} images"),
    };
    for (i, writer) in writers.into_iter().enumerate() {
        println!("stage {i}: {count}, grid {}", writer.finish()?.display());
    }
    println!("samples and their prompts: {}", args.out.join("index.html").display());
    Ok(())
}
