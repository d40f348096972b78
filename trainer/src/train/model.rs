use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::config::{Config, StageConfig};
use crate::diffusion::GaussianDiffusion;
use crate::error::Result;
use crate::optim::adamw::ParamGroup;
use crate::text::{TextConditioner, TextMode};
use crate::unet::{conv_weights_to_channels_last, UNet};

/// One stage of the cascade, built for training or sampling: the trained weights (U-Net, and the
/// T5 encoder when it is fine-tuned) in one VarStore, their moving average in a second VarStore
/// of the same layout, and the frozen encoder (when frozen) in a third.
pub struct StageModel {
    pub index: usize,
    pub cfg: StageConfig,
    /// Trained variables: `unet.*`, and `t5.*` in "finetune" mode.
    pub vs: VarStore,
    pub unet: UNet,
    /// The text path the trained U-Net sees (fine-tuned or frozen).
    pub text: TextConditioner,
    /// The same layout as `vs`, holding the exponential moving average.
    pub ema_vs: VarStore,
    pub ema_unet: UNet,
    /// The averaged encoder in "finetune" mode (frozen modes share `text`).
    pub ema_text: Option<TextConditioner>,
    pub diffusion: GaussianDiffusion,
    _frozen_text_vs: Option<VarStore>,
}

impl StageModel {
    /// Builds stage `index` of `cfg` on `device`, initialised from `cfg.run.seed`.
    pub fn new(cfg: &Config, index: usize, device: Device) -> Result<Self> {
        let stage = cfg.stage(index)?.clone();
        stage.validate(index)?;
        tch::manual_seed(cfg.run.seed as i64);
        let vs = VarStore::new(device);
        let ema_vs = VarStore::new(device);
        let unet = trained_unet(&vs, &stage, cfg)?;
        let ema_unet = averaged_unet(&ema_vs, &stage, cfg)?;
        let (text, ema_text, frozen_vs) = if cfg.text.mode == TextMode::Finetune {
            let mut text = TextConditioner::new(vs.root() / "t5", &cfg.text, device)?;
            text.set_activation_checkpointing(cfg.train.activation_checkpointing);
            let ema_text = TextConditioner::new(ema_vs.root() / "t5", &cfg.text, device)?;
            (text, Some(ema_text), None)
        } else {
            let frozen = VarStore::new(device);
            let text = TextConditioner::new(frozen.root() / "t5", &cfg.text, device)?;
            (text, None, Some(frozen))
        };
        let field = format!("stages[{index}].unet.text_embed_dim");
        text.check_width(stage.unet.text_embed_dim, &field)?;
        let diffusion = GaussianDiffusion::new(&stage.diffusion, stage.unet.image_side)?;
        let mut ema_vs = ema_vs;
        ema_vs.freeze();
        Ok(Self {
            index,
            cfg: stage,
            vs,
            unet,
            text,
            ema_vs,
            ema_unet,
            ema_text,
            diffusion,
            _frozen_text_vs: frozen_vs,
        })
    }

    /// The text path of the averaged model (used by sampling and evaluation).
    pub fn ema_text(&self) -> &TextConditioner {
        self.ema_text.as_ref().unwrap_or(&self.text)
    }

    /// Named trained variables that take gradients, sorted by name.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// All variables of a VarStore as named tensors, sorted by name (checkpoint order).
    pub fn named(vs: &VarStore) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

/// The U-Net that a training step runs, under `unet.` in `vs`: `stage`'s, with the training
/// config's activation checkpointing and memory layout.
pub fn trained_unet(vs: &VarStore, stage: &StageConfig, cfg: &Config) -> Result<UNet> {
    let mut unet = UNet::new(vs.root() / "unet", &stage.unet)?;
    unet.set_activation_checkpointing(cfg.train.activation_checkpointing);
    if cfg.train.channels_last {
        unet.set_channels_last(true);
        conv_weights_to_channels_last(vs, "unet.");
    }
    Ok(unet)
}

/// The moving average's U-Net, under `unet.` in `ema_vs`, its weights in the trained U-Net's
/// layout (so that each EMA update runs over matching strides).
pub fn averaged_unet(ema_vs: &VarStore, stage: &StageConfig, cfg: &Config) -> Result<UNet> {
    let unet = UNet::new(ema_vs.root() / "unet", &stage.unet)?;
    if cfg.train.channels_last {
        conv_weights_to_channels_last(ema_vs, "unet.");
    }
    Ok(unet)
}

/// Optimizer groups: the U-Net at the stage's rate and the config's weight decay; a fine-tuned
/// T5 at `text.finetune_lr` (held as a multiple of the stage's rate) and
/// `text.finetune_weight_decay`.
pub fn param_groups(model: &StageModel, cfg: &Config) -> Vec<ParamGroup> {
    let stage_lr = model.cfg.lr(cfg.train.lr);
    let (t5, unet): (Vec<_>, Vec<_>) =
        model.trainable().into_iter().partition(|(name, _)| name.starts_with("t5."));
    let mut groups = vec![ParamGroup {
        params: unet,
        lr_scale: 1.0,
        weight_decay: cfg.train.optimizer.weight_decay,
    }];
    if !t5.is_empty() {
        groups.push(ParamGroup {
            params: t5,
            lr_scale: cfg.text.finetune_lr.map_or(1.0, |lr| lr / stage_lr),
            weight_decay: cfg.text.finetune_weight_decay,
        });
    }
    groups
}
