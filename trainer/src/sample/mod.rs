//! Sampling a trained cascade: each stage's EMA weights from its newest checkpoint, the
//! stages run base first, images written as PNGs with their prompts.

mod writer;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use imagen_data::DataConfig;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::checkpoint::{self, Checkpoint};
use crate::config::{Config, StageConfig};
use crate::diffusion::{
    check_cascade, image_seeds, sample_stage, stage_seeds, DiffusionConfig, GaussianDiffusion,
};
use crate::error::{Result, TrainerError};
use crate::text::{TextConditioner, TextMode};
use crate::train::{averaged_unet, copy_into, stage_dir, validation_loss_with, ValidationLoss};
use crate::unet::UNet;
use writer::quantize;
pub use writer::{
    clear_previous_samples, grid, sample_name, to_rgb8, write_samples, SampleWriter, GRID_IMAGES,
};

/// A stage ready to sample: the checkpoint's moving average of the weights and nothing a sampler
/// does not use (no trained copy of the weights, unlike the training model, and no second copy of
/// a frozen encoder that other stages already hold).
pub struct LoadedStage {
    pub index: usize,
    pub cfg: StageConfig,
    /// The averaged U-Net.
    pub unet: UNet,
    /// The averaged encoder when fine-tuned, or the frozen one every stage shares.
    pub text: Rc<TextConditioner>,
    pub diffusion: GaussianDiffusion,
    pub checkpoint: PathBuf,
    /// Holds `unet` (and a fine-tuned encoder) under the checkpoint's names.
    _weights: VarStore,
    /// Holds the shared frozen encoder.
    _frozen_weights: Option<Rc<VarStore>>,
}

impl LoadedStage {
    /// The validation loss of these weights over `data`'s held-out shards (None without any).
    pub fn validation_loss(
        &self,
        data: &DataConfig,
        batches: u64,
        device: Device,
    ) -> Result<Option<ValidationLoss>> {
        let Some(heldout) = data.heldout() else { return Ok(None) };
        let (stage, diffusion) = (&self.cfg, &self.diffusion);
        validation_loss_with(stage, diffusion, &self.unet, &self.text, &heldout, batches, device)
            .map(Some)
    }
}

/// Loads the stages of one cascade: a frozen encoder is built once and shared by every stage (a
/// T5-XXL is about 9.5 GB in bf16); a fine-tuned one belongs to its stage.
pub struct StageLoader {
    cfg: Config,
    device: Device,
    frozen_text: Option<(Rc<TextConditioner>, Rc<VarStore>)>,
}

impl StageLoader {
    pub fn new(cfg: &Config, device: Device) -> Self {
        // New prompts are not in the embedding cache: sampling runs the same frozen encoder
        // online.
        let mut cfg = cfg.clone();
        if cfg.text.mode == TextMode::FrozenCached {
            cfg.text.mode = TextMode::FrozenOnline;
        }
        StageLoader { cfg, device, frozen_text: None }
    }

    /// Stage `index` from the newest checkpoint under `run_dir`.
    pub fn latest(&mut self, run_dir: &Path, index: usize) -> Result<LoadedStage> {
        let dir = stage_dir(run_dir, index);
        let ckpt = checkpoint::latest(&dir)?.ok_or_else(|| {
            TrainerError::Checkpoint(format!(
                "stage {index}: no checkpoint in {} (train it with `imagen train --stage {index}`)",
                dir.display()
            ))
        })?;
        self.load(&ckpt, index)
    }

    /// Stage `index` from the EMA weights of `ckpt` (one of that stage's step directories).
    pub fn load(&mut self, ckpt: &Checkpoint, index: usize) -> Result<LoadedStage> {
        let (cfg, device) = (&self.cfg, self.device);
        crate::train::check_compatible(ckpt, cfg, index)?;
        let mut stage = cfg.stage(index)?.clone();
        stage.diffusion = trained_diffusion(ckpt, index, &stage.diffusion)?;
        // The config's sampler against the augmentation the checkpoint trained with.
        stage.validate(index)?;
        let mut weights = VarStore::new(device);
        let unet = averaged_unet(&weights, &stage, cfg)?;
        let (text, frozen_weights) = if cfg.text.mode == TextMode::Finetune {
            (Rc::new(TextConditioner::new(weights.root() / "t5", &cfg.text, device)?), None)
        } else {
            let (text, vs) = match &self.frozen_text {
                Some(shared) => shared.clone(),
                None => {
                    let vs = VarStore::new(device);
                    let text = TextConditioner::new(vs.root() / "t5", &cfg.text, device)?;
                    self.frozen_text.insert((Rc::new(text), Rc::new(vs))).clone()
                }
            };
            (text, Some(vs))
        };
        text.check_width(
            stage.unet.text_embed_dim,
            &format!("stages[{index}].unet.text_embed_dim"),
        )?;
        // The averaged weights are exactly the variables built here, under the same names.
        copy_into(&ckpt.tensors("ema")?, &weights, &ckpt.dir.join("ema.safetensors"))?;
        weights.freeze();
        let diffusion = GaussianDiffusion::new(&stage.diffusion, stage.unet.image_side)?;
        Ok(LoadedStage {
            index,
            cfg: stage,
            unet,
            text,
            diffusion,
            checkpoint: ckpt.dir.clone(),
            _weights: weights,
            _frozen_weights: frozen_weights,
        })
    }
}

/// The diffusion that stage `index` of `ckpt` was trained under (objective, schedule, its
/// log-SNR range and shift, the augmentation's schedule), with `current`'s sampler. Those
/// settings give the network's output its meaning: sampling under others (a config edited since,
/// or another stage's recorded config) would read, say, a noise prediction as a v-prediction.
fn trained_diffusion(
    ckpt: &Checkpoint,
    index: usize,
    current: &DiffusionConfig,
) -> Result<DiffusionConfig> {
    let bad = |e: String| {
        TrainerError::Checkpoint(format!("{}: stored config.toml: {e}", ckpt.dir.display()))
    };
    let saved: Config = toml::from_str(&ckpt.config_toml).map_err(|e| bad(e.to_string()))?;
    let trained = saved.stage(ckpt.trained_stage(index)).map_err(|e| bad(e.to_string()))?;
    let trained = trained.diffusion.clone();
    let sampled = DiffusionConfig { sampler: current.sampler.clone(), ..trained };
    if &sampled != current {
        tracing::info!(
            "stage {index}: sampling under the diffusion it was trained with (objective, schedule \
             and augmentation from {}; the sampler from the config)",
            ckpt.dir.display()
        );
    }
    Ok(sampled)
}

/// Loads stage `index` of the cascade from the newest checkpoint under `run_dir` (one stage
/// alone; [`StageLoader`] shares a frozen encoder between the stages it loads).
pub fn load_stage(
    cfg: &Config,
    run_dir: &Path,
    index: usize,
    device: Device,
) -> Result<LoadedStage> {
    StageLoader::new(cfg, device).latest(run_dir, index)
}

/// Prompts sampled at a time when the command line does not say (`--batch-size`).
pub const DEFAULT_SAMPLE_BATCH: usize = 64;

/// Samples `prompts` through `stages` (base first) with the EMA weights, `batch_size` prompts at
/// a time through the whole cascade (an FID's thousands of prompts would not fit in one batch:
/// the encoder's attention, the U-Nets' activations, both doubled by guidance), and hands each
/// batch to `each` as it is done: the index of its first prompt and every stage's images of it
/// on the host as 8-bit RGB, [B, 3, H, W] u8 (what a PNG holds). Nothing is kept between batches,
/// so the memory does not grow with the number of prompts. Prompt i's noise comes from its own
/// seed ([`image_seeds`]`(seed, i)`), so its image is the same whatever the batch size and
/// whatever prompts come before or after it (for a seed and a device): two runs that differ in
/// batch size give paired images, and one image can be made again alone.
pub fn sample_cascade_each(
    stages: &[LoadedStage],
    prompts: &[String],
    seed: i64,
    batch_size: usize,
    mut each: impl FnMut(usize, Vec<Tensor>) -> Result<()>,
) -> Result<()> {
    if prompts.is_empty() {
        return Err(TrainerError::Config {
            source_name: "sampling".into(),
            message: "no prompts to sample".into(),
        });
    }
    check_cascade(stages.iter().map(|s| s.cfg.unet.lowres_cond))?;
    let batch = batch_size.max(1);
    let mut truncated = 0;
    for (k, chunk) in prompts.chunks(batch).enumerate() {
        let first = k * batch;
        if prompts.len() > batch {
            tracing::info!(
                "sampling prompts {first}..{} of {}",
                first + chunk.len(),
                prompts.len()
            );
        }
        let (outputs, cut) = sample_chunk(stages, chunk, first, seed)?;
        truncated += cut;
        each(
            first,
            outputs.iter().map(|images| quantize(images).to_device(Device::Cpu)).collect(),
        )?;
    }
    if truncated > 0 {
        tracing::warn!(
            "{truncated} of {} prompts were cut to text.max_length tokens; the images follow \
             their beginnings",
            prompts.len()
        );
    }
    Ok(())
}

/// [`sample_cascade_each`]'s images of every prompt, each stage's as one [B, 3, H, W] u8 tensor on
/// the host (for a few prompts: they are all held at once).
pub fn sample_cascade(
    stages: &[LoadedStage],
    prompts: &[String],
    seed: i64,
    batch_size: usize,
) -> Result<Vec<Tensor>> {
    let mut per_stage: Vec<Vec<Tensor>> = stages.iter().map(|_| Vec::new()).collect();
    sample_cascade_each(stages, prompts, seed, batch_size, |_, outputs| {
        for (parts, images) in per_stage.iter_mut().zip(outputs) {
            parts.push(images);
        }
        Ok(())
    })?;
    Ok(per_stage.iter().map(|parts| Tensor::cat(parts, 0)).collect())
}

/// One chunk of [`sample_cascade`]: `prompts` are images `first..` of the run under `seed`.
/// Returns each stage's images and how many of the prompts were cut to the encoder's length.
fn sample_chunk(
    stages: &[LoadedStage],
    prompts: &[String],
    first: usize,
    seed: i64,
) -> Result<(Vec<Tensor>, usize)> {
    let keys: Vec<String> = (first..first + prompts.len()).map(|i| format!("prompt-{i}")).collect();
    let images = image_seeds(seed, first, prompts.len());
    let mut outputs: Vec<Tensor> = Vec::with_capacity(stages.len());
    let mut truncated = 0;
    for (k, stage) in stages.iter().enumerate() {
        // A fine-tuned encoder belongs to its stage, so each stage encodes the prompts itself
        // (with the same tokenizer and length: the first stage's count is every stage's).
        let before = stage.text.truncated();
        let (text, mask) = tch::no_grad(|| stage.text.encode(prompts, &keys))?;
        if k == 0 {
            truncated = stage.text.truncated() - before;
        }
        let out = sample_stage(
            &stage.unet,
            &stage.diffusion,
            &stage.cfg.diffusion.sampler,
            &text,
            &mask,
            outputs.last(),
            &stage_seeds(&images, k),
        );
        outputs.push(out);
    }
    Ok((outputs, truncated))
}
