//! Sampling a trained cascade: each stage's EMA weights from its newest checkpoint, the
//! stages run base first, images written as PNGs with their prompts.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use imagen_data::DataConfig;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, Checkpoint};
use crate::config::{Config, StageConfig};
use crate::diffusion::{
    image_seeds, sample_stage, stage_seeds, DiffusionConfig, GaussianDiffusion,
};
use crate::error::{Result, TrainerError};
use crate::text::{TextConditioner, TextMode};
use crate::train::{averaged_unet, copy_into, stage_dir, validation_loss_with, ValidationLoss};
use crate::unet::UNet;

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
    let trained = saved.stage(index).map_err(|e| bad(e.to_string()))?.diffusion.clone();
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

/// The last stage to run for `--stop-at-stage` (all of them without it); a stage the config does
/// not have is refused, not quietly taken as the last one.
pub fn last_stage(stop_at_stage: Option<usize>, stages: usize) -> Result<usize> {
    if stages == 0 {
        return Err(TrainerError::Config {
            source_name: "stages".into(),
            message: "the config has no stage".into(),
        });
    }
    match stop_at_stage {
        Some(s) if s >= stages => Err(TrainerError::Config {
            source_name: "--stop-at-stage".into(),
            message: format!("{s}, but the config has {stages} stage(s), 0 to {}", stages - 1),
        }),
        Some(s) => Ok(s),
        None => Ok(stages - 1),
    }
}

/// Prompts sampled at a time when the command line does not say (`--batch-size`).
pub const DEFAULT_SAMPLE_BATCH: usize = 64;

/// Samples `prompts` through `stages` (base first) with the EMA weights, `batch_size` prompts at
/// a time through the whole cascade (an FID's thousands of prompts would not fit in one batch:
/// the encoder's attention, the U-Nets' activations, both doubled by guidance). Prompt i's noise
/// comes from its own seed ([`image_seeds`]`(seed, i)`), so its image is the same whatever the
/// batch size and whatever prompts come before or after it (for a seed and a device): two
/// runs that differ in batch size give paired images, and one image can be made again alone.
/// Returns each stage's images on the host as 8-bit RGB, [B, 3, H, W] u8 (what a PNG holds; a
/// quarter of f32's host memory, which for thousands of 1024-pixel samples is tens of GB).
pub fn sample_cascade(
    stages: &[LoadedStage],
    prompts: &[String],
    seed: i64,
    batch_size: usize,
) -> Result<Vec<Tensor>> {
    if prompts.is_empty() {
        return Err(TrainerError::Config {
            source_name: "sampling".into(),
            message: "no prompts to sample".into(),
        });
    }
    let batch = batch_size.max(1);
    let mut per_stage: Vec<Vec<Tensor>> = stages.iter().map(|_| Vec::new()).collect();
    for (k, chunk) in prompts.chunks(batch).enumerate() {
        if prompts.len() > batch {
            tracing::info!(
                "sampling prompts {}..{} of {}",
                k * batch,
                k * batch + chunk.len(),
                prompts.len()
            );
        }
        let outputs = sample_chunk(stages, chunk, k * batch, seed)?;
        for (parts, images) in per_stage.iter_mut().zip(outputs) {
            parts.push(quantize(&images).to_device(Device::Cpu));
        }
    }
    Ok(per_stage.iter().map(|parts| Tensor::cat(parts, 0)).collect())
}

/// Images in [-1, 1] as the 8-bit values a PNG stores, [B, 3, H, W] u8 on their device.
fn quantize(images: &Tensor) -> Tensor {
    ((images.to_kind(Kind::Float).clamp(-1.0, 1.0) + 1.0) * 127.5).round().to_kind(Kind::Uint8)
}

/// One chunk of [`sample_cascade`]: `prompts` are images `first..` of the run under `seed`.
fn sample_chunk(
    stages: &[LoadedStage],
    prompts: &[String],
    first: usize,
    seed: i64,
) -> Result<Vec<Tensor>> {
    let keys: Vec<String> = (first..first + prompts.len()).map(|i| format!("prompt-{i}")).collect();
    let images = image_seeds(seed, first, prompts.len());
    let mut outputs: Vec<Tensor> = Vec::with_capacity(stages.len());
    for (k, stage) in stages.iter().enumerate() {
        // A fine-tuned encoder belongs to its stage, so each stage encodes the prompts itself.
        let (text, mask) = tch::no_grad(|| stage.text.encode(prompts, &keys))?;
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
    Ok(outputs)
}

/// NCHW images, [-1, 1] floats or already 8-bit, -> u8 NHWC bytes.
pub fn to_rgb8(images: &Tensor) -> Vec<u8> {
    let bytes =
        if images.kind() == Kind::Uint8 { images.shallow_clone() } else { quantize(images) };
    let bytes = bytes.permute([0, 2, 3, 1]).contiguous().to_device(Device::Cpu);
    Vec::<u8>::try_from(bytes.view([-1])).expect("u8 tensor to bytes")
}

/// Tiles `n` images of `side` (u8 RGB, NHWC) into a grid `cols` wide with a 2-pixel border.
pub fn grid(rgb: &[u8], n: usize, side: usize, cols: usize) -> (Vec<u8>, usize, usize) {
    let pad = 2;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let (w, h) = (cols * (side + pad) + pad, rows * (side + pad) + pad);
    let mut out = vec![255u8; w * h * 3];
    for i in 0..n {
        let (r, c) = (i / cols, i % cols);
        for y in 0..side {
            let src = (i * side * side + y * side) * 3;
            let dst = ((pad + r * (side + pad) + y) * w + pad + c * (side + pad)) * 3;
            out[dst..dst + side * 3].copy_from_slice(&rgb[src..src + side * 3]);
        }
    }
    (out, w, h)
}

fn write_png(path: &Path, rgb: &[u8], w: usize, h: usize) -> Result<()> {
    image::save_buffer(path, rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| TrainerError::Io { path: path.to_owned(), source: std::io::Error::other(e) })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError {
    let path = path.to_owned();
    move |source| TrainerError::Io { path, source }
}

/// Removes what an earlier `write_samples` into `out` wrote (its `prompts.txt` marks it): its
/// numbered images, grid, prompts and page, and the `stage-N/` folders of an earlier cascade's
/// intermediate stages. Called before sampling into `out` again: otherwise a run with fewer
/// prompts, or fewer stages, would leave the old images among the new. Other files are left
/// alone.
pub fn clear_previous_samples(out: &Path) -> Result<()> {
    let prompts = out.join("prompts.txt");
    if !prompts.is_file() {
        return Ok(());
    }
    // The earlier run's images are the names it gave its prompts: 0000.png up to one per line.
    let earlier = std::fs::read_to_string(&prompts).map_err(io(&prompts))?.lines().count();
    for entry in std::fs::read_dir(out).map_err(io(out))? {
        let path = entry.map_err(io(out))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let numbered = name.strip_suffix(".png").is_some_and(|stem| {
            stem.parse::<usize>().is_ok_and(|i| i < earlier && format!("{i:04}") == stem)
        });
        if numbered || ["grid.png", "prompts.txt", "index.html"].contains(&name.as_str()) {
            std::fs::remove_file(&path).map_err(io(&path))?;
        } else if name.starts_with("stage-") && path.join("prompts.txt").is_file() {
            clear_previous_samples(&path)?;
            // Only if nothing else was put there.
            let _ = std::fs::remove_dir(&path);
        }
    }
    Ok(())
}

/// Writes `<out>/<NNNN>.png` per image, `<out>/grid.png`, `<out>/prompts.txt` (line i is the
/// prompt of image i) and `<out>/index.html` (each image above its prompt). Returns the grid's
/// path.
pub fn write_samples(out: &Path, images: &Tensor, prompts: &[String]) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let (n, _, side, _) = images.size4().map_err(TrainerError::Torch)?;
    let (n, side) = (n as usize, side as usize);
    let rgb = to_rgb8(images);
    let mut html = String::from("<!doctype html><meta charset=utf-8><title>imagen samples</title>\n<body style=\"font-family:sans-serif\">\n");
    for i in 0..n {
        let name = format!("{i:04}.png");
        write_png(
            &out.join(&name),
            &rgb[i * side * side * 3..(i + 1) * side * side * 3],
            side,
            side,
        )?;
        let prompt = prompts.get(i).map(String::as_str).unwrap_or("");
        let escaped = prompt.replace('&', "&amp;").replace('<', "&lt;");
        html.push_str(&format!(
            "<figure style=\"display:inline-block;width:160px\"><img src=\"{name}\" width=128 height=128 style=\"image-rendering:pixelated\"><figcaption>{escaped}</figcaption></figure>\n"
        ));
    }
    let cols = (n as f64).sqrt().ceil() as usize;
    let (g, w, h) = grid(&rgb, n, side, cols);
    let grid_path = out.join("grid.png");
    write_png(&grid_path, &g, w, h)?;
    let prompts_path = out.join("prompts.txt");
    std::fs::write(&prompts_path, prompts.join("\n") + "\n").map_err(io(&prompts_path))?;
    let html_path = out.join("index.html");
    std::fs::write(&html_path, html).map_err(io(&html_path))?;
    Ok(grid_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_past_the_cascade_is_refused_by_name() {
        assert_eq!(last_stage(None, 3).unwrap(), 2);
        assert_eq!(last_stage(Some(1), 3).unwrap(), 1);
        let err = last_stage(Some(5), 2).unwrap_err().to_string();
        assert!(err.contains("--stop-at-stage") && err.contains("0 to 1"), "{err}");
    }

    #[test]
    fn grid_places_images_row_major_with_borders() {
        // Two 1x1 images, red and blue, in a grid two wide.
        let rgb = [255, 0, 0, 0, 0, 255];
        let (g, w, h) = grid(&rgb, 2, 1, 2);
        assert_eq!((w, h), (8, 5));
        let px = |x: usize, y: usize| &g[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(px(2, 2), &[255, 0, 0]);
        assert_eq!(px(5, 2), &[0, 0, 255]);
        assert_eq!(px(0, 0), &[255, 255, 255]);
    }

    #[test]
    fn rgb8_maps_the_range_ends() {
        let t =
            Tensor::from_slice(&[-1.0f32, 0.0, 1.0, 2.0]).view([1, 1, 2, 2]).repeat([1, 3, 1, 1]);
        assert_eq!(&to_rgb8(&t)[..3], &[0, 0, 0]);
        assert_eq!(&to_rgb8(&t)[9..12], &[255, 255, 255]);
    }
}
