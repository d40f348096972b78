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
    sample_cascade_each, to_rgb8, LoadedStage, SampleWriter, StageLoader, DEFAULT_SAMPLE_BATCH,
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
    /// Prompts sampled at a time through the cascade (`sample_cascade_each`).
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

/// Refuses options that cannot work before anything is loaded or sampled (and, in an ablation,
/// before anything trains).
pub(crate) fn check_options(opts: &EvalOptions) -> Result<()> {
    if opts.prompts.is_empty() {
        return Err(invalid("no prompts to evaluate (one prompt per line)".into()));
    }
    let given = [
        (
            Metric::Clip,
            "--clip",
            &opts.clip,
            format!("give {}", imagen_eval::clip::score::CLIP_HINT),
        ),
        (Metric::Fid, "--inception", &opts.inception, EXPORT_INCEPTION_HINT.to_owned()),
    ];
    for (metric, flag, path, hint) in given {
        let missing = path.as_ref().filter(|p| opts.metrics.contains(&metric) && !p.exists());
        if let Some(path) = missing {
            return Err(invalid(format!("{flag} {}: not found; {hint}", path.display())));
        }
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
        if let Some(reference) = opts.reference.as_ref().filter(|r| !r.exists()) {
            return Err(invalid(format!(
                "--reference {}: no such file or folder",
                reference.display()
            )));
        }
        if opts.prompts.len() < 2 {
            // A covariance needs two samples; the report would be lost after all the sampling.
            return Err(invalid(format!(
                "the fid metric needs at least 2 prompts (thousands for a meaningful figure), \
                 got {}",
                opts.prompts.len()
            )));
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
            (opts.run_dir.clone(), crate::diffusion::last_stage(opts.stop_at_stage, stages)?, None)
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
/// `<out>/report.md`. Returns the report. The metrics take each batch of samples as it comes, so
/// the memory does not grow with the number of prompts (beyond a score and an FID feature vector
/// each).
pub fn evaluate(cfg: &Config, opts: &EvalOptions) -> Result<EvalReport> {
    check_options(opts)?;
    if opts.metrics.contains(&Metric::ValLoss) && cfg.data.heldout().is_none() {
        return Err(invalid("the val-loss metric needs data.heldout_shards in the config".into()));
    }
    let device = resolve_device(&cfg.train.device)?;
    prepare_process(&cfg.train, device)?;
    let stages = load_stages(cfg, opts, device)?;
    // The metrics' weights and the reference statistics first: a wrong path fails before hours
    // of sampling, not after.
    let wants = |m: Metric| opts.metrics.contains(&m);
    let clip_scorer = match (wants(Metric::Clip), &opts.clip) {
        (true, Some(dir)) => Some(imagen_eval::clip::score::ClipScorer::load(dir, device)?),
        _ => None,
    };
    let mut fid = if wants(Metric::Fid) { Some(FidRun::start(opts, device)?) } else { None };
    let mut tally = ConditioningTally::default();
    let mut clip_scores = Vec::new();

    let samples_dir = opts.out.join("samples");
    crate::sample::clear_previous_samples(&samples_dir)?;
    let mut writer = SampleWriter::create(&samples_dir, &opts.prompts)?;
    sample_cascade_each(&stages, &opts.prompts, opts.seed, opts.sample_batch, |first, outputs| {
        let images = outputs.last().expect("at least one stage");
        writer.push(images)?;
        let rgb = rgb_images(images)?;
        let prompts = &opts.prompts[first..first + rgb.len()];
        if wants(Metric::Conditioning) {
            tally.add(first, &rgb, prompts);
        }
        if let Some(scorer) = &clip_scorer {
            tch::no_grad(|| -> Result<()> {
                for (img, p) in rgb.iter().zip(prompts) {
                    clip_scores.push(scorer.score(img, p)?);
                }
                Ok(())
            })?;
        }
        if let Some(fid) = &mut fid {
            fid.add(&rgb);
        }
        Ok(())
    })?;
    writer.finish()?;

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
        conditioning: wants(Metric::Conditioning).then(|| tally.report()),
        clip: opts.clip.as_ref().filter(|_| clip_scorer.is_some()).map(|dir| ClipReport {
            weights: dir.to_owned(),
            summary: Summary::of(&clip_scores),
            per_sample: clip_scores,
        }),
        fid: fid.map(FidRun::finish).transpose()?,
        val_loss: None,
    };
    if wants(Metric::ValLoss) {
        report.val_loss = Some(val_loss(cfg, last, opts, device)?);
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
    let mut tally = ConditioningTally::default();
    tally.add(0, images, prompts);
    tally.report()
}

/// [`conditioning`] a batch at a time.
#[derive(Default)]
struct ConditioningTally {
    matches: Vec<imagen_eval::conditioning::AttributeMatch>,
    /// Indices of the prompts that are not synthetic-scene captions.
    unparsed: Vec<usize>,
}

impl ConditioningTally {
    /// Scores `images` against `prompts`, samples `first..` of the run.
    fn add(&mut self, first: usize, images: &[RgbImage], prompts: &[String]) {
        for (i, (image, prompt)) in images.iter().zip(prompts).enumerate() {
            match SceneAttributes::from_caption(prompt) {
                Some(expected) => self.matches.push(score(image, &expected)),
                None => self.unparsed.push(first + i),
            }
        }
    }

    fn report(self) -> ConditioningReport {
        let Self { matches, unparsed } = self;
        if !unparsed.is_empty() {
            tracing::warn!(
                "conditioning: {} of {} prompts are not synthetic-scene captions; not scored",
                unparsed.len(),
                matches.len() + unparsed.len()
            );
        }
        let rate = |f: fn(&imagen_eval::conditioning::AttributeMatch) -> bool| {
            (!matches.is_empty())
                .then(|| Summary::of_bools(&matches.iter().map(f).collect::<Vec<_>>()))
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
}

/// FID a batch of samples at a time: the Inception network and the reference's statistics are
/// ready before sampling starts, and each batch leaves only its pooled features.
struct FidRun {
    model: imagen_eval::FidInception,
    _weights: tch::nn::VarStore,
    dims: FidDims,
    reference_path: PathBuf,
    reference: imagen_eval::FidSide,
    features: Vec<tch::Tensor>,
    samples: usize,
    device: Device,
}

impl FidRun {
    fn start(opts: &EvalOptions, device: Device) -> Result<Self> {
        let dims = FidDims::from_dims(opts.fid_dims).expect("checked");
        let weights = opts.inception.as_ref().expect("checked");
        let reference_path = opts.reference.clone().expect("checked");
        let (model, vs) = imagen_eval::load_fid_inception(weights, dims, device)?;
        let reference = imagen_eval::side_statistics(
            &model,
            &reference_path,
            imagen_eval::fid::DEFAULT_BATCH_SIZE,
            device,
        )?;
        Ok(Self {
            model,
            _weights: vs,
            dims,
            reference_path,
            reference,
            features: Vec::new(),
            samples: 0,
            device,
        })
    }

    fn add(&mut self, images: &[RgbImage]) {
        for chunk in images.chunks(imagen_eval::fid::DEFAULT_BATCH_SIZE) {
            let x = imagen_eval::images::to_tensor(chunk).to_device(self.device);
            let features = tch::no_grad(|| self.model.features(&x)).to_device(Device::Cpu);
            self.features.push(features);
        }
        self.samples += images.len();
    }

    fn finish(self) -> Result<FidReport> {
        let stats = ActivationStats::from_activations(&tch::Tensor::cat(&self.features, 0))?;
        let reliable = self.samples > self.dims.dims();
        if !reliable {
            tracing::warn!(
                "FID of {} samples with {}-d features: the covariance is singular and the FID \
                 unreliable; use more prompts than dimensions, or a smaller --fid-dims",
                self.samples,
                self.dims.dims()
            );
        }
        let generated =
            imagen_eval::FidSide { stats, images: Some(self.samples), skipped: 0, unreadable: 0 };
        let value = imagen_eval::fid(&generated, &self.reference)?;
        Ok(FidReport {
            value,
            dims: self.dims.dims(),
            samples: self.samples,
            reference: self.reference_path,
            reference_images: self.reference.images,
            reliable,
        })
    }
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
