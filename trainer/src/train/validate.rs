use imagen_data::{DataConfig, Loader};
use tch::{Device, Kind, Tensor};

use super::batch::images_to_tensor;
use super::model::StageModel;
use crate::diffusion::augment::random_crop;
use crate::error::Result;

/// Fixed seed of the validation draws: the same timesteps, noise and condition dropout every
/// time, so that successive validation losses differ only by the weights.
const VALIDATION_SEED: i64 = 0x5EED;

/// Mean loss of the trained weights over the first `batches` held-out batches, at fixed timesteps
/// and noise. A fresh loader from the start of the held-out shards each time, so the batches are
/// the same too.
pub fn validation_loss(
    model: &StageModel,
    data: &DataConfig,
    batches: u64,
    device: Device,
) -> Result<Option<f64>> {
    let Some(heldout) = data.heldout() else {
        return Ok(None);
    };
    let stage = &model.cfg;
    let mut loader = Loader::new(&heldout, stage.data_side(), 0, 1, None)?;
    tch::manual_seed(VALIDATION_SEED);
    let mut total = 0.0;
    let mut count = 0u64;
    for _ in 0..batches.max(1) {
        let batch = loader.next_batch()?;
        let mut x0 = images_to_tensor(&batch.pixels, batch.len(), batch.side, device);
        if let Some(side) = stage.train_crop {
            let align = stage.unet.image_side / stage.unet.lowres_side.max(1);
            x0 = random_crop(&x0, side, align.max(1));
        }
        let loss = tch::no_grad(|| -> Result<Tensor> {
            let (text, mask) = model.text.encode(&batch.captions, &batch.keys)?;
            let (losses, _) = model.diffusion.training_loss(
                &model.unet,
                &x0,
                &text,
                &mask,
                stage.train_lowres_side(),
            );
            Ok(losses.mean(Kind::Float))
        })?;
        total += loss.double_value(&[]);
        count += 1;
    }
    Ok(Some(total / count as f64))
}
