use serde::{Deserialize, Serialize};

use crate::checkpoint::RetentionConfig;
use crate::optim::{AdamWConfig, EmaConfig, OptimizerKernel, ScheduleKind};

/// Numeric precision of the U-Net's forward and backward passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 autocast on CUDA, fp32 on CPU.
    #[default]
    Auto,
    /// bf16 autocast (fp32 master weights) on any device.
    Bf16,
    /// fp32 throughout.
    Fp32,
}

/// `[train]`: optimisation, precision, EMA, checkpoints and validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Peak learning rate (Imagen: 1e-4). Default: 1e-4.
    pub lr: f64,
    /// Linear warm-up steps (Imagen: 10k). Default: 10000.
    pub warmup_steps: u64,
    /// After warm-up: "constant" or "cosine" (down to `min_lr_ratio * lr` at `max_steps`).
    /// Default: "constant".
    pub schedule: ScheduleKind,
    /// Floor of the cosine schedule as a fraction of `lr`. Default: 0.0.
    pub min_lr_ratio: f64,
    /// Optimizer steps to train (the command line's --max-steps wins). Default: 100000.
    pub max_steps: u64,
    /// Micro-batches accumulated into each optimizer step. Default: 1.
    pub grad_accum: u64,
    /// Clip gradients to this global L2 norm; 0 disables. Default: 1.0.
    pub clip_grad_norm: f64,
    /// "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32". Default: "auto".
    pub precision: Precision,
    /// "auto" (CUDA when available), "cpu", or "cuda" / "cuda:N". Default: "auto".
    pub device: String,
    /// CPU threads for libtorch's kernels; 0 keeps libtorch's default. Default: 0.
    pub threads: usize,
    /// Stop with an error after this many consecutive updates skipped for a non-finite loss or
    /// gradient. Default: 20.
    pub max_nonfinite_in_row: u64,
    /// Compute the validation loss on `data.heldout_shards` every this many steps; 0 disables.
    /// Default: 0.
    pub validate_every: u64,
    /// Held-out batches per validation. Default: 4.
    pub validate_batches: u64,
    /// Write a sample grid of `sample_prompts` to TensorBoard every this many steps (EMA
    /// weights); 0 disables. Default: 0.
    pub sample_every: u64,
    /// Prompts of the periodic sample grid. Default: none.
    pub sample_prompts: Vec<String>,
    /// Recompute each U-Net residual and transformer block (and each T5 block, when the
    /// encoder is fine-tuned) in the backward pass instead of keeping its activations
    /// (activation checkpointing): less memory, so larger batches fit, for about one more
    /// forward pass of compute. Same gradients. Default: false.
    pub activation_checkpointing: bool,
    /// Run the U-Net's feature maps in the channels-last (NHWC) layout, which cuDNN's
    /// tensor-core convolutions use natively. Same results; a GPU lever (no gain measured on the
    /// CPU). Default: false.
    pub channels_last: bool,
    /// Let cuDNN time its convolution algorithms for each new shape and keep the fastest
    /// (`torch.backends.cudnn.benchmark`): a training step's shapes do not change, so its search
    /// is paid once (validation and sample grids pay for their own shapes). `imagen sample` and
    /// `imagen eval run` use it too: every denoising step repeats one shape. CUDA only.
    /// Default: true.
    pub cudnn_benchmark: bool,
    /// libtorch's deterministic mode (`torch.use_deterministic_algorithms(True, warn_only=True)`
    /// with `torch.backends.cudnn.deterministic`, cuDNN autotuning off and cuBLAS's fixed
    /// workspace, `CUBLAS_WORKSPACE_CONFIG=:4096:8`): on CUDA, two runs of one config, or a run
    /// and its resume, then compute alike wherever the kernels allow, at some cost in speed;
    /// ops that have no deterministic kernel warn. The CPU is deterministic without it.
    /// Default: false.
    pub deterministic: bool,
    /// AdamW's betas, eps and weight decay.
    pub optimizer: AdamWConfig,
    /// AdamW's implementation: "auto" (libtorch's fused kernel where it has one for the device,
    /// else the per-parameter loop), "fused" or "loop". Both give the same update and the same
    /// checkpointed state. Default: "auto".
    pub optimizer_kernel: OptimizerKernel,
    /// The exponential moving average of the weights.
    pub ema: EmaConfig,
    /// When to save checkpoints and which to keep.
    pub checkpoint: RetentionConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            warmup_steps: 10_000,
            schedule: ScheduleKind::Constant,
            min_lr_ratio: 0.0,
            max_steps: 100_000,
            grad_accum: 1,
            clip_grad_norm: 1.0,
            precision: Precision::Auto,
            device: "auto".into(),
            threads: 0,
            max_nonfinite_in_row: 20,
            validate_every: 0,
            validate_batches: 4,
            sample_every: 0,
            sample_prompts: Vec::new(),
            activation_checkpointing: false,
            channels_last: false,
            cudnn_benchmark: true,
            deterministic: false,
            optimizer: AdamWConfig::default(),
            optimizer_kernel: OptimizerKernel::Auto,
            ema: EmaConfig::default(),
            checkpoint: RetentionConfig::default(),
        }
    }
}
