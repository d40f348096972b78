use imagen_data::{DataConfig, Loader};
use tch::{Device, Kind};

use super::batch::images_to_tensor;
use super::metrics::{bucket_tag, BucketedLoss};
use super::model::StageModel;
use crate::config::StageConfig;
use crate::diffusion::augment::random_crop;
use crate::diffusion::{GaussianDiffusion, LossMode};
use crate::error::{Result, TrainerError};
use crate::logs::{write_scalars, EventWriter, MetricsJsonl};
use crate::text::TextConditioner;
use crate::unet::UNet;

/// Fixed seed of the validation draws: the same timesteps, noise and condition dropout every
/// time, so that successive validation losses differ only by the weights.
const VALIDATION_SEED: i64 = 0x5EED;

/// Which weights of a stage a validation pass measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// The weights the optimizer trains (what the training loop logs).
    Trained,
    /// Their moving average (what sampling and `imagen eval` use).
    Ema,
}

/// The validation loss of one pass: overall, per timestep bucket, and per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationLoss {
    /// Mean over every held-out sample of the pass.
    pub mean: f64,
    /// Mean per timestep quarter (`LOSS_BUCKETS`; NaN for a bucket no sample fell in).
    pub buckets: Vec<f64>,
    /// Samples per bucket; `mean` is the count-weighted mean of `buckets`.
    pub bucket_counts: Vec<u64>,
    /// Each sample's loss, in batch order (the spread of the mean).
    pub per_sample: Vec<f64>,
}

impl ValidationLoss {
    /// `val/loss` and `val/loss_t0..3` (buckets with samples only).
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let mut out = vec![("val/loss".to_owned(), self.mean)];
        for (i, b) in self.buckets.iter().enumerate() {
            if b.is_finite() {
                out.push((bucket_tag("val", i), *b));
            }
        }
        out
    }
}

/// Loss of the trained weights over the first `batches` held-out batches, at fixed timesteps
/// and noise. A fresh loader from the start of the held-out shards each time, so the batches are
/// the same too. `None` when the config has no held-out shards.
pub fn validation_loss(
    model: &StageModel,
    data: &DataConfig,
    batches: u64,
    device: Device,
) -> Result<Option<ValidationLoss>> {
    validation_loss_of(model, Weights::Trained, data, batches, device)
}

/// [`validation_loss`] of the chosen weights.
pub fn validation_loss_of(
    model: &StageModel,
    weights: Weights,
    data: &DataConfig,
    batches: u64,
    device: Device,
) -> Result<Option<ValidationLoss>> {
    let Some(heldout) = data.heldout() else {
        return Ok(None);
    };
    let (unet, text): (&UNet, &TextConditioner) = match weights {
        Weights::Trained => (&model.unet, &model.text),
        Weights::Ema => (&model.ema_unet, model.ema_text()),
    };
    validation_loss_with(&model.cfg, &model.diffusion, unet, text, &heldout, batches, device)
        .map(Some)
}

/// The held-out captions of the batches a validation pass draws (the same every pass), for a
/// "frozen-cached" run to encode once at its start ([`TextConditioner::pre_encode`]).
pub fn validation_captions(
    model: &StageModel,
    data: &DataConfig,
    batches: u64,
) -> Result<Vec<String>> {
    let Some(heldout) = data.heldout() else { return Ok(Vec::new()) };
    let mut loader = Loader::new(&heldout, model.cfg.data_side(), 0, 1, None)?.quiet();
    let mut captions = Vec::new();
    for _ in 0..batches.max(1) {
        captions.extend(loader.next_batch()?.captions);
    }
    Ok(captions)
}

/// A validation pass of `unet` (stage `stage` under `diffusion`) with `text`'s conditioning over
/// the held-out data `heldout`.
pub fn validation_loss_with(
    stage: &StageConfig,
    diffusion: &GaussianDiffusion,
    unet: &UNet,
    text: &TextConditioner,
    heldout: &DataConfig,
    batches: u64,
    device: Device,
) -> Result<ValidationLoss> {
    let mut loader = Loader::new(heldout, stage.data_side(), 0, 1, None)?.quiet();
    tch::manual_seed(VALIDATION_SEED);
    let mut buckets = BucketedLoss::default();
    let mut per_sample = Vec::new();
    for _ in 0..batches.max(1) {
        let batch = loader.next_batch()?;
        let mut x0 = images_to_tensor(&batch.pixels, batch.len(), batch.side, device);
        if let Some(side) = stage.train_crop {
            let align = stage.unet.image_side / stage.unet.lowres_side.max(1);
            x0 = random_crop(&x0, side, align.max(1));
        }
        let (losses, t) = tch::no_grad(|| -> Result<_> {
            let (emb, mask) = text.encode(&batch.captions, &batch.keys)?;
            let side = stage.train_lowres_side();
            Ok(diffusion.loss(unet, &x0, &emb, &mask, side, LossMode::Validate))
        })?;
        buckets.add(&losses, &t);
        let host = losses.to_kind(Kind::Double).to_device(Device::Cpu);
        per_sample.extend(Vec::<f64>::try_from(host).map_err(TrainerError::Torch)?);
    }
    let mean = per_sample.iter().sum::<f64>() / per_sample.len().max(1) as f64;
    Ok(ValidationLoss {
        mean,
        buckets: buckets.means(),
        bucket_counts: buckets.counts(),
        per_sample,
    })
}

/// The training loop's periodic validation: logs a pass's `val/loss` and its buckets to
/// TensorBoard and metrics.jsonl at `step`.
pub fn log_validation(
    val: &ValidationLoss,
    step: u64,
    events: &mut EventWriter,
    jsonl: &mut MetricsJsonl,
) -> Result<()> {
    write_scalars(events, jsonl, step, &[], &val.scalars())?;
    tracing::info!("step {step}: validation loss {:.5}", val.mean);
    Ok(())
}
