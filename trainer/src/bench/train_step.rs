//! Times the training step of one stage's U-Net on synthetic batches: the same diffusion loss,
//! autocast, clipping, AdamW and EMA as `imagen train`, with the device synchronised between
//! phases so each phase's time is its own. Text embeddings are random tensors of the configured
//! width and length (the encoder's cost belongs to `imagen embed`'s benchmark).

use std::time::Instant;

use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::autocast::Autocast;
use crate::config::Config;
use crate::diffusion::{GaussianDiffusion, TrainingDraws};
use crate::error::Result;
use crate::optim::adamw::ParamGroup;
use crate::optim::{clip_grad_norm, AdamW, Ema};
use crate::train::{keep_freed_host_memory, resolve_device, use_bf16};
use crate::unet::{summarize, UNet};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub stage: usize,
    pub batch: usize,
    /// Timed steps, after `warmup` untimed ones.
    pub steps: usize,
    pub warmup: usize,
    /// Peak dense throughput of the device in TFLOP/s for the MFU; None leaves MFU out.
    pub peak_tflops: Option<f64>,
}

/// Median seconds per step of each phase.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PhaseSeconds {
    /// Making the batch and its random draws on the device.
    pub data: f64,
    pub forward: f64,
    pub backward: f64,
    /// Gradient clipping, the AdamW update and zeroing the gradients.
    pub optimizer: f64,
    pub ema: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub config_stage: usize,
    pub device: String,
    pub precision: String,
    /// Whether AdamW ran libtorch's fused kernel.
    pub fused_adamw: bool,
    pub batch: usize,
    pub steps: usize,
    pub params: i64,
    pub flops_per_sample_train: i64,
    /// Median over the timed steps.
    pub samples_per_sec: f64,
    pub step_secs_median: f64,
    pub step_secs_min: f64,
    pub step_secs_max: f64,
    pub phases: PhaseSeconds,
    /// Peak bytes: the CUDA caching allocator's peak on GPUs, the process's peak resident set
    /// (VmHWM) on the CPU.
    pub peak_memory_bytes: i64,
    pub peak_tflops: Option<f64>,
    /// Model FLOPs utilisation: analytic FLOPs per sample x samples/s over the peak.
    pub mfu: Option<f64>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn peak_memory(device: Device) -> i64 {
    match device {
        Device::Cuda(i) => crate::native::cuda_memory(i).map_or(0, |m| m.peak),
        _ => std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<i64>().ok()))
            })
            .map_or(0, |kb| kb * 1024),
    }
}

pub fn bench_train(cfg: &Config, opts: &BenchOptions) -> Result<BenchReport> {
    let device = resolve_device(&cfg.train.device)?;
    if cfg.train.threads > 0 {
        tch::set_num_threads(cfg.train.threads as i32);
    }
    keep_freed_host_memory();
    let bf16 = use_bf16(cfg.train.precision, device);
    let stage = cfg.stage(opts.stage)?.clone();
    let unet_cfg = &stage.unet;
    let stage_lr = stage.lr(cfg.train.lr);
    let text_len = cfg.text.max_length as i64;
    let summary = summarize(unet_cfg, text_len)?;
    tch::manual_seed(cfg.run.seed as i64);
    let vs = VarStore::new(device);
    let mut ema_vs = VarStore::new(device);
    let unet = UNet::new(vs.root() / "unet", unet_cfg)?;
    let _ema_unet = UNet::new(ema_vs.root() / "unet", unet_cfg)?;
    ema_vs.freeze();
    let diffusion = GaussianDiffusion::new(&stage.diffusion, unet_cfg.image_side)?;
    let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let group =
        ParamGroup { params, lr_scale: 1.0, weight_decay: cfg.train.optimizer.weight_decay };
    let mut opt = AdamW::with_groups(&cfg.train.optimizer, vec![group]);
    opt.set_kernel(cfg.train.optimizer_kernel)?;
    let ema = Ema::new(&cfg.train.ema, &vs, &ema_vs)?;

    let b = opts.batch as i64;
    let side = stage.train_crop.unwrap_or(unet_cfg.image_side);
    let lowres_side = stage.train_lowres_side();
    let fopts = (Kind::Float, device);
    if let Device::Cuda(i) = device {
        crate::native::cuda_reset_peak_memory(i)?;
    }
    let (mut steps, mut phases) = (Vec::new(), Vec::new());
    for step in 0..opts.warmup + opts.steps {
        sync(device);
        let t0 = Instant::now();
        let x0 = Tensor::rand([b, 3, side, side], fopts) * 2.0 - 1.0;
        let text = Tensor::randn([b, text_len, unet_cfg.text_embed_dim], fopts);
        let mask = Tensor::ones([b, text_len], (Kind::Bool, device));
        let draws = TrainingDraws::global(b, diffusion.draw_shape(&x0, lowres_side), device);
        sync(device);
        let t1 = Instant::now();
        let losses = {
            let _autocast = Autocast::bf16_if(bf16, device)?;
            diffusion.training_loss_with(&unet, &x0, &text, &mask, lowres_side, &draws).0
        };
        let loss = losses.mean(Kind::Float);
        sync(device);
        let t2 = Instant::now();
        loss.backward();
        sync(device);
        let t3 = Instant::now();
        // As in `imagen train`: clip, step, zero; no host synchronisation inside.
        let _norm = clip_grad_norm(opt.params(), cfg.train.clip_grad_norm);
        opt.step(stage_lr)?;
        opt.zero_grad();
        sync(device);
        let t4 = Instant::now();
        ema.update(step as u64 + 1);
        sync(device);
        let t5 = Instant::now();
        if step >= opts.warmup {
            steps.push((t5 - t0).as_secs_f64());
            phases.push([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4].map(|d| d.as_secs_f64()));
        }
    }
    let column = |i: usize| median(&mut phases.iter().map(|p| p[i]).collect::<Vec<_>>());
    let phases = PhaseSeconds {
        data: column(0),
        forward: column(1),
        backward: column(2),
        optimizer: column(3),
        ema: column(4),
    };
    let step_median = median(&mut steps.clone());
    let samples_per_sec = opts.batch as f64 / step_median;
    let mfu = opts
        .peak_tflops
        .map(|peak| summary.flops_per_sample_train as f64 * samples_per_sec / (peak * 1e12));
    Ok(BenchReport {
        config_stage: opts.stage,
        device: format!("{device:?}"),
        precision: if bf16 { "bf16 autocast" } else { "fp32" }.into(),
        fused_adamw: opt.is_fused(),
        batch: opts.batch,
        steps: opts.steps,
        params: summary.total_params,
        flops_per_sample_train: summary.flops_per_sample_train,
        samples_per_sec,
        step_secs_median: step_median,
        step_secs_min: steps.iter().cloned().fold(f64::INFINITY, f64::min),
        step_secs_max: steps.iter().cloned().fold(0.0, f64::max),
        phases,
        peak_memory_bytes: peak_memory(device),
        peak_tflops: opts.peak_tflops,
        mfu,
    })
}
