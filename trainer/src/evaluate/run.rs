//! Evaluating a trained cascade: sample one image per prompt from the EMA weights, compute the
//! chosen metrics, write the samples and the report.

use std::path::{Path, PathBuf};

use image::RgbImage;
use imagen_eval::conditioning::{score, SceneAttributes};
use imagen_eval::{ActivationStats, EvalError, FidDims, EXPORT_INCEPTION_HINT};
use tch::Device;

use super::metric::Metric;
use super::report::{
    ClipReport, ConditioningReport, EvalReport, FidReport, StageCheckpoint, ValLossReport,
};
use super::summary::Summary;
use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::error::{Result, TrainerError};
use crate::sample::{
    sample_cascade, to_rgb8, write_samples, LoadedStage, StageLoader, DEFAULT_SAMPLE_BATCH,
};
use crate::train::{prepare_process, resolve_device};

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Run directory holding `stage-<N>/` checkpoints (the newest of each stage is used).
    pub run_dir: PathBuf,
    /// A step directory (`.../stage-<N>/step-<S>`): stage N comes from it, the stages before N
    /// from the newest checkpoints of its run directory, and evaluation stops at stage N.
    pub checkpoint: Option<PathBuf>,
    /// Last stage to run (0 is the base); default: every stage of the config.
    pub stop_at_stage: Option<usize>,
    pub prompts: Vec<String>,
    /// Output folder: `samples/`, `report.json`, `report.md`.
    pub out: PathBuf,
    pub metrics: Vec<Metric>,
    /// Seed of the sampling noise.
    pub seed: i64,
    /// Prompts sampled at a time through the cascade (`sample_cascade`).
    pub sample_batch: usize,
    /// CLIP model folder (Hugging Face layout), for `clip`.
    pub clip: Option<PathBuf>,
    /// pytorch-fid's Inception weights (safetensors), for `fid`.
    pub inception: Option<PathBuf>,
    /// Reference image folder or pytorch-fid statistics (.npz), for `fid`.
    pub reference: Option<PathBuf>,
    /// FID feature block: 64, 192, 768 or 2048.
    pub fid_dims: usize,
    /// Held-out batches for `val-loss` (default: `train.validate_batches`).
    pub val_batches: Option<u64>,
}

impl EvalOptions {
    /// Defaults: every metric that needs no weights (conditioning, val-loss), seed 0, FID 2048-d.
    pub fn new(run_dir: PathBuf, prompts: Vec<String>, out: PathBuf) -> Self {
        Self {
            run_dir,
            checkpoint: None,
            stop_at_stage: None,
            prompts,
            out,
            metrics: vec![Metric::Conditioning, Metric::ValLoss],
            seed: 0,
            sample_batch: DEFAULT_SAMPLE_BATCH,
            clip: None,
            inception: None,
            reference: None,
            fid_dims: 2048,
            val_batches: None,
        }
    }
}

fn invalid(message: String) -> TrainerError {
    TrainerError::Eval(EvalError::Invalid(message))
}

/// Refuses options that cannot work before anything is loaded or sampled.
fn check_options(opts: &EvalOptions) -> Result<()> {
    if opts.prompts.is_empty() {
        return Err(invalid("no prompts to evaluate (one prompt per line)".into()));
    }
    if opts.checkpoint.is_some() && opts.stop_at_stage.is_some() {
        return Err(invalid(
            "--stop-at-stage and --checkpoint both say where the cascade ends (--checkpoint's \
             stage): give one"
                .into(),
        ));
    }
    if opts.metrics.contains(&Metric::Clip) && opts.clip.is_none() {
        return Err(invalid(format!(
            "the clip metric needs --clip DIR: {}",
            imagen_eval::clip::score::CLIP_HINT
        )));
    }
    if opts.metrics.contains(&Metric::Fid) {
        if opts.inception.is_none() {
            return Err(invalid(format!(
                "the fid metric needs --inception WEIGHTS; {EXPORT_INCEPTION_HINT}"
            )));
        }
        if opts.reference.is_none() {
            return Err(invalid(
                "the fid metric needs --reference DIR|NPZ (reference images or pytorch-fid statistics)"
                    .into(),
            ));
        }
        if FidDims::from_dims(opts.fid_dims).is_none() {
            return Err(invalid(format!("FID dims {}: one of 64, 192, 768, 2048", opts.fid_dims)));
        }
    }
    Ok(())
}

/// The stages to sample, base first, each with its checkpoint.
fn load_stages(cfg: &Config, opts: &EvalOptions, device: Device) -> Result<Vec<LoadedStage>> {
    let stages = cfg.stages.len();
    let (run_dir, last, explicit) = match &opts.checkpoint {
        Some(dir) => {
            let ckpt = Checkpoint::open(dir)?;
            let index = dir
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("stage-"))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "{}: a checkpoint is a step directory inside `stage-<N>/`",
                        dir.display()
                    ))
                })?;
            let run_dir = dir.parent().and_then(Path::parent).unwrap_or(Path::new(".")).to_owned();
            (run_dir, index, Some(ckpt))
        }
        None => {
            (opts.run_dir.clone(), crate::sample::last_stage(opts.stop_at_stage, stages)?, None)
        }
    };
    let mut loader = StageLoader::new(cfg, device);
    let mut loaded = Vec::new();
    for index in 0..=last {
        let stage = match (&explicit, index == last) {
            (Some(ckpt), true) => loader.load(ckpt, index)?,
            _ => loader.latest(&run_dir, index)?,
        };
        tracing::info!("stage {index}: EMA weights of {}", stage.checkpoint.display());
        loaded.push(stage);
    }
    Ok(loaded)
}

/// Samples `opts.prompts` from the cascade of `cfg`, computes `opts.metrics` and writes
/// `<out>/samples/` (NNNN.png, grid.png, prompts.txt, index.html), `<out>/report.json` and
/// `<out>/report.md`. Returns the report.
pub fn evaluate(cfg: &Config, opts: &EvalOptions) -> Result<EvalReport> {
    check_options(opts)?;
    if opts.metrics.contains(&Metric::ValLoss) && cfg.data.heldout().is_none() {
        return Err(invalid("the val-loss metric needs data.heldout_shards in the config".into()));
    }
    let device = resolve_device(&cfg.train.device)?;
    prepare_process(&cfg.train, device)?;
    let stages = load_stages(cfg, opts, device)?;
    let outputs = sample_cascade(&stages, &opts.prompts, opts.seed, opts.sample_batch)?;
    let images = outputs.last().expect("at least one stage");
    let samples_dir = opts.out.join("samples");
    crate::sample::clear_previous_samples(&samples_dir)?;
    write_samples(&samples_dir, images, &opts.prompts)?;
    let rgb = rgb_images(images)?;

    let last = stages.last().expect("at least one stage");
    let mut report = EvalReport {
        stages: stages
            .iter()
            .map(|s| StageCheckpoint {
                stage: s.index,
                checkpoint: s.checkpoint.clone(),
                step: checkpoint_step(&s.checkpoint),
            })
            .collect(),
        seed: opts.seed,
        image_side: last.cfg.unet.image_side as usize,
        prompts: opts.prompts.clone(),
        samples_dir: PathBuf::from("samples"),
        grid: PathBuf::from("samples/grid.png"),
        metrics: opts.metrics.clone(),
        conditioning: None,
        clip: None,
        fid: None,
        val_loss: None,
    };
    for metric in &opts.metrics {
        match metric {
            Metric::Conditioning => report.conditioning = Some(conditioning(&rgb, &opts.prompts)),
            Metric::Clip => {
                let dir = opts.clip.as_ref().expect("checked");
                report.clip = Some(clip(dir, &rgb, &opts.prompts, device)?);
            }
            Metric::Fid => report.fid = Some(fid(opts, &rgb, device)?),
            Metric::ValLoss => report.val_loss = Some(val_loss(cfg, last, opts, device)?),
        }
    }
    report.write(&opts.out)?;
    Ok(report)
}

fn checkpoint_step(dir: &Path) -> Option<u64> {
    dir.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
}

/// NCHW images ([`sample_cascade`]'s 8-bit ones, or [-1, 1] floats) -> one RGB image per sample.
fn rgb_images(images: &tch::Tensor) -> Result<Vec<RgbImage>> {
    let (n, _, h, w) = images.size4()?;
    let bytes = to_rgb8(images);
    let each = (h * w * 3) as usize;
    Ok((0..n as usize)
        .map(|i| {
            RgbImage::from_raw(w as u32, h as u32, bytes[i * each..(i + 1) * each].to_vec())
                .expect("buffer of the image's size")
        })
        .collect())
}

/// Per-attribute accuracy over the prompts that are synthetic-scene captions; the others are
/// counted.
pub fn conditioning(images: &[RgbImage], prompts: &[String]) -> ConditioningReport {
    let mut matches = Vec::new();
    let mut unparsed = Vec::new();
    for (i, (image, prompt)) in images.iter().zip(prompts).enumerate() {
        match SceneAttributes::from_caption(prompt) {
            Some(expected) => matches.push(score(image, &expected)),
            None => unparsed.push(i),
        }
    }
    if !unparsed.is_empty() {
        tracing::warn!(
            "conditioning: {} of {} prompts are not synthetic-scene captions; not scored",
            unparsed.len(),
            prompts.len()
        );
    }
    let rate = |f: fn(&imagen_eval::conditioning::AttributeMatch) -> bool| {
        (!matches.is_empty()).then(|| Summary::of_bools(&matches.iter().map(f).collect::<Vec<_>>()))
    };
    ConditioningReport {
        scored: matches.len(),
        unparsed: unparsed.len(),
        unparsed_prompts: unparsed,
        colour: rate(|m| m.colour),
        shape: rate(|m| m.shape),
        size: rate(|m| m.size),
        position: rate(|m| m.position),
        all: rate(|m| m.all()),
    }
}

fn clip(dir: &Path, images: &[RgbImage], prompts: &[String], device: Device) -> Result<ClipReport> {
    let scorer = imagen_eval::clip::score::ClipScorer::load(dir, device)?;
    let scores = tch::no_grad(|| -> Result<Vec<f64>> {
        images.iter().zip(prompts).map(|(img, p)| Ok(scorer.score(img, p)?)).collect()
    })?;
    Ok(ClipReport { weights: dir.to_owned(), summary: Summary::of(&scores), per_sample: scores })
}

fn fid(opts: &EvalOptions, images: &[RgbImage], device: Device) -> Result<FidReport> {
    let dims = FidDims::from_dims(opts.fid_dims).expect("checked");
    let weights = opts.inception.as_ref().expect("checked");
    let reference = opts.reference.as_ref().expect("checked");
    let (model, _vs) = imagen_eval::load_fid_inception(weights, dims, device)?;
    let mut features = Vec::new();
    for chunk in images.chunks(imagen_eval::fid::DEFAULT_BATCH_SIZE) {
        let x = imagen_eval::images::to_tensor(chunk).to_device(device);
        features.push(tch::no_grad(|| model.features(&x)).to_device(Device::Cpu));
    }
    let stats = ActivationStats::from_activations(&tch::Tensor::cat(&features, 0))?;
    let reliable = images.len() > dims.dims();
    if !reliable {
        tracing::warn!(
            "FID of {} samples with {}-d features: the covariance is singular and the FID \
             unreliable; use more prompts than dimensions, or a smaller --fid-dims",
            images.len(),
            dims.dims()
        );
    }
    let generated =
        imagen_eval::FidSide { stats, images: Some(images.len()), skipped: 0, unreadable: 0 };
    let reference_side = imagen_eval::side_statistics(
        &model,
        reference,
        imagen_eval::fid::DEFAULT_BATCH_SIZE,
        device,
    )?;
    let value = imagen_eval::fid(&generated, &reference_side)?;
    Ok(FidReport {
        value,
        dims: dims.dims(),
        samples: images.len(),
        reference: reference.clone(),
        reference_images: reference_side.images,
        reliable,
    })
}

fn val_loss(
    cfg: &Config,
    stage: &LoadedStage,
    opts: &EvalOptions,
    device: Device,
) -> Result<ValLossReport> {
    let mut data = cfg.data.clone();
    if let Some(b) = stage.cfg.batch_size {
        data.batch_size = b;
    }
    let batches = opts.val_batches.unwrap_or(cfg.train.validate_batches).max(1);
    let val = stage.validation_loss(&data, batches, device)?.ok_or_else(|| {
        invalid("the val-loss metric needs data.heldout_shards in the config".into())
    })?;
    Ok(ValLossReport {
        stage: stage.index,
        batches,
        summary: Summary::of(&val.per_sample),
        mean: val.mean,
        buckets: val.buckets.iter().map(|b| b.is_finite().then_some(*b)).collect(),
        bucket_counts: val.bucket_counts,
    })
}
