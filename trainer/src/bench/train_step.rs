//! Times the training step of one stage's U-Net on synthetic batches: the same diffusion loss,
//! autocast, clipping, AdamW and EMA as `imagen train`. Samples/s come from steps that
//! synchronise the device once, as training does; the split into phases from further steps
//! synchronised after every phase, so each phase's time is its own. Text embeddings are random
//! tensors of the configured width and length (the encoder's cost belongs to `imagen embed`'s
//! benchmark).
//!
//! Started by `imagen launch` (or torchrun, Slurm), every worker joins the process group and
//! hooks DDP's gradient reducer as `imagen train` does, and the timed steps alternate between a
//! synchronised backward pass (gradients all-reduced from autograd hooks while the pass goes on)
//! and a local one; with the same buckets all-reduced on their own after the pass, that says how
//! much of the communication the backward pass hides.

use std::time::Instant;

use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::autocast::Autocast;
use crate::config::Config;
use crate::diffusion::{GaussianDiffusion, LossMode, TrainingDraws};
use crate::error::Result;
use crate::optim::adamw::ParamGroup;
use crate::optim::{clip_grad_norm, AdamW, Ema, EmaConfig};
use crate::train::{
    averaged_unet, prepare_process, resolve_device, sample_seeds, trained_unet, use_bf16, Replicas,
};
use crate::unet::summarize;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub stage: usize,
    pub batch: usize,
    /// Timed steps for samples/s, after `warmup` untimed ones; then ceil(steps / 2), at least 3,
    /// for the phases (twice as many in a group: every other one keeps its gradients local).
    pub steps: usize,
    pub warmup: usize,
    /// Peak dense throughput of the device in TFLOP/s for the MFU; None leaves MFU out.
    pub peak_tflops: Option<f64>,
    /// The device's specified peak, for the MFU as it is usually quoted; None leaves it out.
    pub spec_tflops: Option<f64>,
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
    /// One update of the moving average over `train.ema.update_every`: its cost per step.
    pub ema: f64,
}

/// Gradient communication of a worker in a process group (`imagen launch`, torchrun, Slurm).
#[derive(Debug, Clone, Serialize)]
pub struct CommReport {
    pub world_size: usize,
    pub backend: String,
    /// The reducer's buckets (`dist.bucket_mb`, the first one `dist.first_bucket_mb`).
    pub buckets: usize,
    /// Median backward pass with the reducer's all-reduce hooks armed (as in training).
    pub backward_synced: f64,
    /// Median backward pass of the interleaved steps that keep their gradients local.
    pub backward_local: f64,
    /// Median time to all-reduce the same gradients in `dist.bucket_mb` buckets after the pass,
    /// one bucket after the other, with nothing to overlap.
    pub allreduce_alone: f64,
    /// The communication the backward pass did not hide: synced minus local.
    pub exposed: f64,
    /// 1 - exposed / allreduce_alone, clamped to [0, 1]: the share of the all-reduce that ran
    /// under the backward pass.
    pub overlap: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The worker's rank (0 without a process group); only rank 0's report is printed.
    pub rank: usize,
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
    /// Model FLOPs utilisation: analytic FLOPs per sample (at the side training runs at) x
    /// samples/s over `peak_tflops`.
    pub mfu: Option<f64>,
    pub spec_tflops: Option<f64>,
    /// The same over `spec_tflops`.
    pub mfu_spec: Option<f64>,
    /// Present when the bench runs in a process group.
    pub comm: Option<CommReport>,
}

/// The median, the mean of the middle two for an even count (as Python's `statistics.median`,
/// which the peer script uses).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn peak_memory(device: Device) -> Result<i64> {
    match device {
        Device::Cuda(i) => Ok(crate::native::cuda_memory(i)?.peak),
        _ => {
            let path = std::path::Path::new("/proc/self/status");
            let io = |source| crate::error::TrainerError::Io { path: path.to_owned(), source };
            let status = std::fs::read_to_string(path).map_err(io)?;
            let kb = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<i64>().ok()));
            let missing = || io(std::io::Error::other("no readable VmHWM line"));
            Ok(kb.ok_or_else(missing)? * 1024)
        }
    }
}

/// The first step at or after 0-based `step` + 1 at which the moving average updates (a
/// multiple of `update_every` past `update_after_step`).
fn updating_step(step: usize, ema: &EmaConfig) -> u64 {
    let every = ema.update_every.max(1);
    (step as u64 + 1).max(ema.update_after_step + 1).div_ceil(every) * every
}

pub fn bench_train(cfg: &Config, opts: &BenchOptions) -> Result<BenchReport> {
    let device = resolve_device(&cfg.train.device)?;
    // Before the process group's threads start, as `train` does.
    prepare_process(&cfg.train, device)?;
    let (mut replicas, device) = Replicas::join(cfg, device)?;
    let bf16 = use_bf16(cfg.train.precision, device);
    let stage = cfg.stage(opts.stage)?.clone();
    let unet_cfg = &stage.unet;
    let stage_lr = stage.lr(cfg.train.lr);
    let text_len = cfg.text.max_length as i64;
    let summary = summarize(&stage.unet_at_train_side(), text_len)?;
    tch::manual_seed(cfg.run.seed as i64);
    let vs = VarStore::new(device);
    let mut ema_vs = VarStore::new(device);
    let unet = trained_unet(&vs, &stage, cfg)?;
    let _ema_unet = averaged_unet(&ema_vs, &stage, cfg)?;
    ema_vs.freeze();
    let diffusion = GaussianDiffusion::new(&stage.diffusion, unet_cfg.image_side)?;
    let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let group =
        ParamGroup { params, lr_scale: 1.0, weight_decay: cfg.train.optimizer.weight_decay };
    let trained: Vec<Tensor> = group.params.iter().map(|(_, t)| t.shallow_clone()).collect();
    replicas.attach_stores(&vs, &ema_vs, &trained, cfg)?;
    let in_group = replicas.buckets().is_some();
    let mut opt = AdamW::with_groups(&cfg.train.optimizer, vec![group]);
    opt.set_kernel(cfg.train.optimizer_kernel)?;
    let ema = Ema::new(&cfg.train.ema, &vs, &ema_vs)?;

    let b = opts.batch as i64;
    let side = stage.train_side();
    let lowres_side = stage.train_lowres_side();
    let fopts = (Kind::Float, device);
    // The EMA updates every `update_every` steps, and most steps skip it: a median over the
    // phase split's few steps would report nothing, or a whole update, as it happened to fall.
    // So those steps each run a whole update, and the split reports its time over update_every,
    // its cost per step.
    let ema_every = cfg.train.ema.update_every.max(1);
    // One training step. With `per_phase` the device is synchronised after every phase, so each
    // phase's time is its own; without, only at the end, so the host launches the next phase's
    // kernels while the device still runs the last one, as in training. `synced`: the backward
    // pass all-reduces (in a group). Returns the instants before and after each phase.
    let mut run_step = |step: usize, per_phase: bool, synced: bool| -> Result<[Instant; 6]> {
        sync(device);
        let mut marks = [Instant::now(); 6];
        let mut mark = |i: usize| {
            if per_phase || i == 5 {
                sync(device);
            }
            marks[i] = Instant::now();
        };
        let x0 = Tensor::rand([b, unet_cfg.channels, side, side], fopts) * 2.0 - 1.0;
        let text = Tensor::randn([b, text_len, unet_cfg.text_embed_dim], fopts);
        let mask = Tensor::ones([b, text_len], (Kind::Bool, device));
        // Drawn per sample, as `imagen train` draws them (a kernel or three and a re-seed each).
        let seeds = sample_seeds(cfg.run.seed as i64, step as u64 * b as u64, b as usize);
        let draws =
            TrainingDraws::per_sample(&seeds, diffusion.draw_shape(&x0, lowres_side), device);
        mark(1);
        let losses = {
            let _autocast = Autocast::bf16_if(bf16, device)?;
            diffusion.loss_with(&unet, &x0, &text, &mask, lowres_side, &draws, LossMode::Train).0
        };
        let loss = losses.mean(Kind::Float);
        mark(2);
        if synced {
            replicas.before_synced_backward()?;
        }
        loss.backward();
        mark(3);
        // As in `imagen train`: clip, step, zero; no host synchronisation inside.
        let _norm = clip_grad_norm(opt.params(), cfg.train.clip_grad_norm);
        opt.step(stage_lr)?;
        opt.zero_grad();
        mark(4);
        ema.update(if per_phase { updating_step(step, &cfg.train.ema) } else { step as u64 + 1 });
        mark(5);
        Ok(marks)
    };
    let mut step = 0;
    for _ in 0..opts.warmup {
        run_step(step, false, true)?;
        step += 1;
    }
    // The peak of the steps that follow warm-up (cuDNN's autotuning, the allocator's first
    // growth), on both sides of the peer comparison.
    if let Device::Cuda(i) = device {
        crate::native::cuda_reset_peak_memory(i)?;
    }
    // Throughput: one synchronisation per step.
    let mut steps = Vec::new();
    for _ in 0..opts.steps {
        let marks = run_step(step, false, true)?;
        steps.push((marks[5] - marks[0]).as_secs_f64());
        step += 1;
    }
    // The split into phases, from further steps synchronised after each phase; in a group every
    // other one keeps its gradients local (see the module's comment).
    let (mut phases, mut local_backward) = (Vec::new(), Vec::new());
    let phase_steps = opts.steps.div_ceil(2).max(3);
    for k in 0..if in_group { 2 * phase_steps } else { phase_steps } {
        let synced = k % 2 == 0 || !in_group;
        let m = run_step(step, true, synced)?;
        step += 1;
        if synced {
            phases.push([1, 2, 3, 4, 5].map(|i| (m[i] - m[i - 1]).as_secs_f64()));
        } else {
            local_backward.push((m[3] - m[2]).as_secs_f64());
        }
    }
    let column = |i: usize| median(&mut phases.iter().map(|p| p[i]).collect::<Vec<_>>());
    let phases = PhaseSeconds {
        data: column(0),
        forward: column(1),
        backward: column(2),
        optimizer: column(3),
        ema: column(4) / ema_every as f64,
    };
    // Before the all-reduce measurement, whose flattened buckets are a copy of the gradients.
    let peak_memory_bytes = peak_memory(device)?;
    let comm = match replicas.buckets() {
        Some(buckets) => Some(comm_report(
            &replicas,
            buckets,
            &opt.params().collect::<Vec<_>>(),
            cfg,
            device,
            phases.backward,
            median(&mut local_backward),
        )?),
        None => None,
    };
    let step_median = median(&mut steps.clone());
    let samples_per_sec = opts.batch as f64 / step_median;
    let utilisation =
        |peak: f64| summary.flops_per_sample_train as f64 * samples_per_sec / (peak * 1e12);
    let report = BenchReport {
        rank: replicas.rank(),
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
        peak_memory_bytes,
        peak_tflops: opts.peak_tflops,
        mfu: opts.peak_tflops.map(utilisation),
        spec_tflops: opts.spec_tflops,
        mfu_spec: opts.spec_tflops.map(utilisation),
        comm,
    };
    // Rank 0 hosts the store: it waits for the others to end before it goes.
    replicas.finish()?;
    Ok(report)
}

/// Times the all-reduce of the trained parameters' gradients in `dist.bucket_mb` buckets with
/// nothing else running, and sets it against the backward passes measured with and without the
/// reducer's hooks.
fn comm_report(
    replicas: &Replicas,
    buckets: usize,
    params: &[&Tensor],
    cfg: &Config,
    device: Device,
    backward_synced: f64,
    backward_local: f64,
) -> Result<CommReport> {
    let limit = (cfg.dist.bucket_mb * (1u64 << 20) as f64) as i64;
    let mut flat: Vec<Tensor> = Vec::new();
    let mut pending: Vec<Tensor> = Vec::new();
    let mut bytes = 0i64;
    // Gradients become ready last layer first, so buckets are filled in reverse, as DDP does.
    for p in params.iter().rev() {
        let g = p.grad();
        let g = if g.defined() { g } else { p.zeros_like() };
        bytes += g.numel() as i64 * g.kind().elt_size_in_bytes() as i64;
        pending.push(g.flatten(0, -1));
        if bytes >= limit {
            flat.push(Tensor::cat(&pending, 0));
            pending.clear();
            bytes = 0;
        }
    }
    if !pending.is_empty() {
        flat.push(Tensor::cat(&pending, 0));
    }
    let refs: Vec<&Tensor> = flat.iter().collect();
    let mut times = Vec::new();
    for round in 0..6 {
        sync(device);
        let t = Instant::now();
        replicas.mean(&refs)?;
        sync(device);
        if round > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let allreduce_alone = median(&mut times);
    let exposed = backward_synced - backward_local;
    let overlap =
        if allreduce_alone > 0.0 { (1.0 - exposed / allreduce_alone).clamp(0.0, 1.0) } else { 1.0 };
    Ok(CommReport {
        world_size: replicas.world_size(),
        backend: replicas.backend().unwrap_or_default(),
        buckets,
        backward_synced,
        backward_local,
        allreduce_alone,
        exposed,
        overlap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_split_times_steps_that_update_the_average() {
        let every = |update_every, update_after_step| EmaConfig {
            update_every,
            update_after_step,
            ..EmaConfig::default()
        };
        // Each step updates: the step's own number.
        assert_eq!(updating_step(4, &every(1, 0)), 5);
        // Every fourth: the next multiple of four.
        assert_eq!(updating_step(4, &every(4, 0)), 8);
        assert_eq!(updating_step(7, &every(4, 0)), 8);
        // Not before update_after_step (up to which the average is a copy, not an update).
        assert_eq!(updating_step(0, &every(4, 10)), 12);
        // update_every 0 is read as 1, as `Ema::update` reads it.
        assert_eq!(updating_step(2, &every(0, 0)), 3);
    }
}
