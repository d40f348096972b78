use serde::{Deserialize, Serialize};

use crate::diffusion::DiffusionConfig;
use crate::error::{Result, TrainerError};
use crate::unet::UNetConfig;

/// `[[stages]]`: one U-Net of the cascade and its diffusion process. Stage 0 generates from
/// text alone; later stages also take the previous stage's output (`unet.lowres_cond`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageConfig {
    /// The stage's U-Net topology (`image_side` is the side it generates and trains at).
    pub unet: UNetConfig,
    /// The stage's diffusion process and sampler.
    pub diffusion: DiffusionConfig,
    /// Samples per batch on each rank for this stage; none means `data.batch_size`.
    /// Default: none.
    pub batch_size: Option<usize>,
    /// Peak learning rate of this stage; none means `train.lr` (imagen-pytorch's trainer also
    /// takes one rate per U-Net: the stages differ in size and objective). Default: none.
    pub lr: Option<f64>,
    /// Train on random square crops of this side instead of whole images (Imagen trains the
    /// 256->1024 stage on 256 crops, with 64 low-res crops); none means whole images.
    /// Default: none.
    pub train_crop: Option<i64>,
}

impl StageConfig {
    /// The stage's peak learning rate: its own, else the run's `train.lr`.
    pub fn lr(&self, train_lr: f64) -> f64 {
        self.lr.unwrap_or(train_lr)
    }

    /// The side of the images the data loader must deliver for this stage.
    pub fn data_side(&self) -> u32 {
        self.unet.image_side as u32
    }

    /// Checks the U-Net and the diffusion, and, for a super-resolution stage, that the sampler
    /// noises the low-res condition at a level training drew (the U-Net learnt only those).
    /// A base stage never reads `sampler.aug_level`.
    pub fn validate(&self, index: usize) -> Result<()> {
        self.unet.validate()?;
        self.diffusion.validate()?;
        let d = &self.diffusion;
        if self.unet.lowres_cond && d.sampler.aug_level > d.noise_aug_max {
            return Err(TrainerError::Config {
                source_name: format!("stages[{index}].diffusion"),
                message: format!(
                    "sampler.aug_level {} exceeds noise_aug_max {}: the low-res condition would \
                     be noised beyond any level the stage was trained on",
                    d.sampler.aug_level, d.noise_aug_max
                ),
            });
        }
        Ok(())
    }

    /// Side of the training inputs after the optional crop.
    pub fn train_side(&self) -> i64 {
        self.train_crop.unwrap_or(self.unet.image_side)
    }

    /// The U-Net as training runs it: at the crop's side where the stage trains on crops (what
    /// the FLOPs of a training step are counted at).
    pub fn unet_at_train_side(&self) -> UNetConfig {
        UNetConfig { image_side: self.train_side(), ..self.unet.clone() }
    }

    /// Side of the low-res condition during training (scaled down with the crop).
    pub fn train_lowres_side(&self) -> Option<i64> {
        self.unet
            .lowres_cond
            .then(|| self.unet.lowres_side * self.train_side() / self.unet.image_side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_trained_on_crops_is_counted_at_the_crop() {
        let mut stage = StageConfig::default();
        stage.unet.image_side = 1024;
        assert_eq!(stage.unet_at_train_side().image_side, 1024);
        stage.train_crop = Some(256);
        let at_crop = stage.unet_at_train_side();
        assert_eq!((at_crop.image_side, at_crop.dim), (256, stage.unet.dim));
    }
}
