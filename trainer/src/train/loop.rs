use std::path::PathBuf;
use std::time::Instant;

use imagen_data::{Cursor, DataError, Loader};
use serde_json::json;
use tch::{Kind, Tensor};

use super::batch::images_to_tensor;
use super::device::{prepare_process, resolve_device, use_bf16};
use super::metrics::{bucket_tag, StepMetrics};
use super::model::{param_groups, StageModel};
use super::replicas::Replicas;
use super::resume::{check_compatible, check_diffusion_kept, saved_max_steps, Resume};
use super::run_dir::{remove_if_unused, stage_dir, StageLock};
use super::signals::StopFlag;
use super::validate::{log_validation, validation_captions, validation_loss_with};
use crate::autocast::Autocast;
use crate::checkpoint::{self, Checkpoint, CheckpointWriter, TrainState, STATE_VERSION};
use crate::config::Config;
use crate::diffusion::augment::random_crop;
use crate::diffusion::TrainingDraws;
use crate::error::{Result, TrainerError};
use crate::logs::{write_scalars, EventWriter, MetricsJsonl};
use crate::optim::{clip_grad_norm, AdamW, Ema, LrSchedule};

/// What `imagen train` was asked on the command line, beyond the config.
pub struct TrainOptions {
    pub stage: usize,
    /// The cascade's run directory; this stage writes to `<run_dir>/stage-<N>`.
    pub run_dir: PathBuf,
    /// Overrides `train.max_steps`.
    pub max_steps: Option<u64>,
    pub resume: Resume,
    pub stop: StopFlag,
    /// Show a progress bar (when stdout is a terminal).
    pub progress: bool,
    /// Test seam: treat the loss of these steps as non-finite.
    pub inject_nonfinite_at: Vec<u64>,
    /// Resume the weights, optimizer and step, but start the data stream afresh instead of
    /// continuing the checkpoint's (after a change of the data settings).
    pub restart_data: bool,
}

#[derive(Debug)]
pub struct TrainOutcome {
    pub step: u64,
    pub stage_dir: PathBuf,
    pub last_checkpoint: Option<PathBuf>,
    /// Whether this process writes the checkpoints and logs (rank 0 of a job).
    pub writes_checkpoints: bool,
    /// Mean loss of the last logging window.
    pub last_loss: Option<f64>,
    pub nonfinite_skipped: u64,
    /// Stopped by SIGINT/SIGTERM before `max_steps`.
    pub interrupted: bool,
}

/// Every random draw of a step comes from the global generator, re-seeded from (seed, step):
/// a resumed run draws exactly what the uninterrupted one drew, with no generator state to save.
fn step_seed(seed: u64, step: u64) -> i64 {
    crate::seeds::mix(seed, step)
}

/// Mixed into the step's seed for the crop stream (b"crop").
const CROP_STREAM: u64 = 0x6372_6f70;

/// The seeds of samples `first..first + n` of a step's global batch (numbered across ranks and
/// micro-batches): a sample's noise and times do not depend on how the batch is split.
pub(crate) fn sample_seeds(step_seed: i64, first: u64, n: usize) -> Vec<i64> {
    (0..n as u64).map(|i| self::step_seed(step_seed as u64, first + i + 1)).collect()
}

/// What a failing rank lets go of only after the other ranks are told: dropping the checkpoint
/// writer waits for a background save in flight (so the last checkpoint is whole), and dropping
/// the loader joins its reader thread, which may sit in a stalled filesystem read. Either can
/// take minutes, during which the others would wait in a collective for a rank that is gone.
/// The stage lock (rank 0's) comes last, so it is let go after a background save has ended.
#[derive(Default)]
struct SlowToDrop {
    loader: Option<Loader>,
    writer: Option<CheckpointWriter>,
    lock: Option<StageLock>,
}

pub fn train(cfg: &Config, opts: TrainOptions) -> Result<TrainOutcome> {
    // Declared before the replicas, so dropped after them: on a panic too, the others are told
    // (the watchdog's drop) before this rank waits for its save and its reader.
    let mut held = SlowToDrop::default();
    let device = resolve_device(&cfg.train.device)?;
    // Before the process group starts its threads (NCCL's watchdog reads the environment, which
    // this may set).
    prepare_process(&cfg.train, device)?;
    let (mut replicas, device) = Replicas::join(cfg, device)?;
    let dir = stage_dir(&opts.run_dir, opts.stage);
    let new_dir = !dir.exists();
    match train_joined(cfg, opts, &mut replicas, device, &mut held) {
        Ok(outcome) => replicas.finish().map(|()| outcome),
        Err(e) => {
            // The other ranks would wait for this one in their next collective.
            replicas.abort(&e.to_string());
            drop(held);
            if new_dir {
                // A start that failed (a bad path, a refused config) leaves no empty stage
                // directory behind; one that saved anything is not empty and stays.
                remove_if_unused(&dir);
            }
            Err(e)
        }
    }
}

fn train_joined(
    cfg: &Config,
    opts: TrainOptions,
    replicas: &mut Replicas,
    device: tch::Device,
    held: &mut SlowToDrop,
) -> Result<TrainOutcome> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    let main = replicas.is_main();
    let bf16 = use_bf16(cfg.train.precision, device);
    let dir = stage_dir(&opts.run_dir, opts.stage);
    std::fs::create_dir_all(&dir)
        .map_err(|source| TrainerError::Io { path: dir.clone(), source })?;
    // Rank 0 writes the stage directory, so it holds the lock until its writer is done.
    held.lock = main.then(|| StageLock::acquire(&dir)).transpose()?;
    let max_steps = opts.max_steps.unwrap_or(cfg.train.max_steps);
    // Checkpoints record the config the run trains under: --max-steps sets the learning rate's
    // horizon, so it goes in too.
    let config_toml = {
        let mut resolved = cfg.clone();
        resolved.train.max_steps = max_steps;
        resolved.to_toml()
    };

    let model = StageModel::new(cfg, opts.stage, device)?;
    let stage = model.cfg.clone();
    let mut data_cfg = cfg.data.clone();
    if let Some(b) = stage.batch_size {
        data_cfg.batch_size = b;
    }

    // Resume: weights, EMA, optimizer, step and the data cursor.
    if main {
        for what in checkpoint::recover_interrupted_saves(&dir)? {
            tracing::warn!("{what}");
        }
    }
    let (resume_from, continues) = replicas.resume_point(&opts.resume, &dir)?;
    let groups = param_groups(&model, cfg);
    let mut opt = AdamW::with_groups(&cfg.train.optimizer, groups);
    opt.set_kernel(cfg.train.optimizer_kernel)?;
    let ema = Ema::new(&cfg.train.ema, &model.vs, &model.ema_vs)?;
    let mut state = TrainState {
        version: STATE_VERSION,
        step: 0,
        samples_seen: 0,
        data_cursors: Vec::new(),
        seed: cfg.run.seed,
        nonfinite_skipped: 0,
        nonfinite_in_row: 0,
        imagen_version: env!("CARGO_PKG_VERSION").to_owned(),
        stage: None,
        text_encoder: None,
        weight_fingerprints: Vec::new(),
        files: Default::default(),
    };
    let mut cursor: Option<Cursor> = None;
    let mut saved_horizon = None;
    if let Some(ckpt) = &resume_from {
        check_compatible(ckpt, cfg, opts.stage)?;
        check_diffusion_kept(ckpt, cfg, opts.stage, continues)?;
        saved_horizon = saved_max_steps(&ckpt.config_toml);
        if main {
            // The other ranks take it all from rank 0 (`attach`, `share_optimizer_state`).
            restore(&model, &mut opt, ckpt)?;
        }
        state = ckpt.state.clone();
        if state.seed != cfg.run.seed {
            tracing::warn!(
                "run.seed is {} where the checkpoint's run had {}: the noise drawn from here on \
                 is not what the run would have drawn",
                cfg.run.seed,
                state.seed
            );
            state.seed = cfg.run.seed;
        }
        state.imagen_version = env!("CARGO_PKG_VERSION").to_owned();
        // A stream that starts afresh needs no rank's cursor: any world size may resume.
        let saved_cursor = if opts.restart_data { None } else { replicas.cursor_of(ckpt)? };
        if let Some(c) = saved_cursor {
            cursor = Some(serde_json::from_value(c).map_err(|e| {
                TrainerError::Checkpoint(format!("{}: data cursor: {e}", ckpt.dir.display()))
            })?);
        }
        tracing::info!(
            "resuming stage {} from {} (step {})",
            opts.stage,
            ckpt.dir.display(),
            state.step
        );
    }
    if main {
        // Recorded so that the encoder is recognised at another path (a resume from a local
        // copy, sampling on another machine).
        state.text_encoder = crate::text::identity::encoder_fingerprint(&cfg.text.model).ok();
        // This run's index, also when it went on from another config's stage (a warm start).
        state.stage = Some(opts.stage);
    }
    replicas.attach(&model, cfg)?;
    if resume_from.is_some() {
        replicas.share_optimizer_state(&mut opt, cfg)?;
    }
    let side = stage.data_side();
    if world > 1 && data_cfg.epoch_batches == 0 {
        // Counting means reading every shard's marker or metadata: rank 0 counts for the job
        // instead of every rank reading every shard of a shared filesystem.
        let counted = if main { imagen_data::epoch_batches(&data_cfg, world)? } else { 0 };
        let shared = replicas.share_from_main("epoch-batches", &counted.to_string())?;
        data_cfg.epoch_batches = shared.parse().map_err(|_| {
            TrainerError::Dist(format!("rank 0 sent {shared:?} as the batches per epoch"))
        })?;
    }
    if opts.restart_data && resume_from.is_some() {
        tracing::warn!("--data-cursor restart: the data stream starts afresh from its first pass");
    }
    let loader = match model.text.cache() {
        Some(cache) => Loader::with_text_cache(&data_cfg, side, rank, world, cursor, cache),
        None => Loader::new(&data_cfg, side, rank, world, cursor),
    };
    let loader = loader.map_err(|e| match (e, &resume_from) {
        (DataError::CursorMismatch(why), Some(ckpt)) => TrainerError::Checkpoint(format!(
            "{}: {why}. To keep its weights, optimizer and step and start the data stream afresh \
             (samples may come again), resume with --data-cursor restart",
            ckpt.dir.display()
        )),
        (e, _) => e.into(),
    })?;
    let loader = held.loader.insert(loader);
    // Every rank must deal from the same shard list (each resolves the globs itself, and an
    // img2dataset output still being written can change between two listings).
    if let Some(settings) = loader.settings() {
        replicas.check_same_on_every_rank(
            "data shard list (a digest of its file names; a dataset still being written, or \
             nodes that see different files?)",
            &settings.shard_list,
        )?;
    }
    if main {
        // Behind newer checkpoints (a damaged newest one passed over, a --resume PATH rollback,
        // --resume never): they would be pruned as the newest or resumed after a crash. Only
        // once every start-up check has passed: a refused rollback leaves them where they were.
        for path in checkpoint::set_aside_after(&dir, state.step)? {
            tracing::warn!("newer than this run's start, set aside as {}", path.display());
        }
    }

    let schedule = LrSchedule {
        lr: stage.lr(cfg.train.lr),
        warmup_steps: cfg.train.warmup_steps,
        kind: cfg.train.schedule,
        total_steps: max_steps,
        min_lr_ratio: cfg.train.min_lr_ratio,
    };
    if state.step >= max_steps && main {
        tracing::info!(
            "stage {} is at step {} already (max_steps {max_steps}): nothing to train",
            opts.stage,
            state.step
        );
    }
    if let Some(before) = saved_horizon.filter(|&h| h != max_steps && state.step < max_steps) {
        let then = LrSchedule { total_steps: before, ..schedule.clone() };
        let (was, is) = (then.at(state.step), schedule.at(state.step));
        // During warm-up, or on a constant schedule, the rate does not move.
        if (was - is).abs() > 1e-9 * was.abs().max(is.abs()) && main {
            tracing::warn!(
                "the learning rate's horizon moves from {before} steps (the checkpoint's) to \
                 {max_steps}: at step {} it goes from {:.3e} to {:.3e}",
                state.step,
                was,
                is
            );
        }
    }
    // Rank 0 speaks for the run: logs, progress, checkpoints.
    let mut logs = Logs {
        events: main.then(|| EventWriter::create(&dir)).transpose()?,
        jsonl: main.then(|| MetricsJsonl::open(&dir, state.step)).transpose()?,
        bar: if opts.progress && main {
            crate::progress::bar(Some(max_steps), &format!("stage {}", opts.stage))
        } else {
            indicatif::ProgressBar::hidden()
        },
        clock: Instant::now(),
        logged_at: state.step,
        max_steps,
    };
    if let Some(events) = logs.events.as_mut() {
        events.start_session(state.step as i64 + 1)?;
    }
    logs.bar.set_position(state.step);
    // The rate estimate starts here, not at step 0 (a resume's jump is no progress).
    logs.bar.reset_eta();
    tracing::info!(
        "training stage {} on {device:?} ({}), {} parameters, batch {} x {world} rank(s), writing {}",
        opts.stage,
        if bf16 { "bf16 autocast" } else { "fp32" },
        model.trainable().iter().map(|(_, t)| t.numel()).sum::<usize>(),
        data_cfg.batch_size,
        dir.display()
    );
    let accum = cfg.train.grad_accum.max(1);
    let global_batch = (data_cfg.batch_size * world) as u64;

    let lowres_side = stage.train_lowres_side();
    // The cache holds the training captions only. For the held-out captions that validation
    // draws (the same every pass) and the grid's prompts, a "frozen-cached" run loads the frozen
    // encoder once, here, keeps their embeddings and lets the encoder go.
    let wants_validation = cfg.train.validate_every > 0 && data_cfg.heldout().is_some();
    let wants_grid = cfg.train.sample_every > 0 && !cfg.train.sample_prompts.is_empty();
    let cached = cfg.text.mode == crate::text::TextMode::FrozenCached;
    let fixed_text = if cached && main && (wants_validation || wants_grid) {
        let mut captions = cfg.train.sample_prompts.clone();
        if wants_validation {
            captions.extend(validation_captions(&model, &data_cfg, cfg.train.validate_batches)?);
        }
        tracing::info!(
            "text.mode = \"frozen-cached\": encoding {} held-out captions and grid prompts once with the frozen encoder",
            captions.len()
        );
        let mut online = cfg.text.clone();
        online.mode = crate::text::TextMode::FrozenOnline;
        let encoder_vs = tch::nn::VarStore::new(device);
        let encoder = crate::text::TextConditioner::new(encoder_vs.root(), &online, device)?;
        Some(encoder.pre_encode(&captions)?)
    } else {
        None
    };
    let every = cfg.train.checkpoint.every_steps;
    let mut window = StepMetrics::default();
    let mut last_loss = None;
    let writer =
        held.writer.insert(CheckpointWriter::new(cfg.train.checkpoint.write.in_background(device)));
    // Every rank tracks the saved step (only rank 0 has the path), so all join each save. A run
    // going on from its own checkpoint is saved already: a stop before its first step need not
    // save again. A warm start from another run's checkpoint, or one whose data stream starts
    // afresh, is not: a stop before its first step saves it here, so a requeue resumes it.
    let mut saved_at =
        resume_from.as_ref().filter(|_| continues && !opts.restart_data).map(|c| c.state.step);
    let mut interrupted = false;
    let mut lr = schedule.at(state.step);
    // The first window's speed counts training only, not the start-up above.
    logs.clock = Instant::now();

    while state.step < max_steps {
        // A single process stops before starting a step; ranks agree on stopping at the end of
        // a step instead (below), through the all-reduce that carries the loss.
        if world == 1 && opts.stop.is_raised() {
            interrupted = true;
            break;
        }
        let seed = step_seed(cfg.run.seed, state.step);
        let mut loss_total = Tensor::zeros([], (Kind::Float, device));
        // Per-sample losses and times, bucketed into the window once the step is known finite.
        let mut sample_losses = Vec::with_capacity(accum as usize);
        for micro in 0..accum {
            // Crops draw from a per-rank stream; the diffusion draws are per sample. The salt
            // keeps the two families of seeds apart (rank r's crops would otherwise be seeded
            // as sample r - 1's noise).
            tch::manual_seed(step_seed(seed as u64 ^ CROP_STREAM, rank as u64 + (micro << 32)));
            let wait = Instant::now();
            let batch = loader.next_batch()?;
            window.data_wait_secs += wait.elapsed().as_secs_f64();
            let mut x0 = images_to_tensor(&batch.pixels, batch.len(), batch.side, device);
            if let Some(side) = stage.train_crop {
                // Crops aligned to the low-res grid (Imagen §4.4). The low-res condition is made
                // from the crop, so its outermost pixel or two see the crop's edge where sampling's
                // full image has neighbours; the noise augmentation hides that.
                let align = stage.unet.image_side / stage.unet.lowres_side.max(1);
                x0 = random_crop(&x0, side, align.max(1));
            }
            let (text, mask) = model.text.encode_batch(&batch)?;
            let first = micro * global_batch + (rank * data_cfg.batch_size) as u64;
            let draws = TrainingDraws::per_sample(
                &sample_seeds(seed, first, batch.len()),
                model.diffusion.draw_shape(&x0, lowres_side),
                device,
            );
            let (losses, t) = {
                let _autocast = Autocast::bf16_if(bf16, device)?;
                model.diffusion.loss_with(
                    &model.unet,
                    &x0,
                    &text,
                    &mask,
                    lowres_side,
                    &draws,
                    crate::diffusion::LossMode::Train,
                )
            };
            let loss = losses.mean(Kind::Float) / accum as f64;
            if micro + 1 == accum {
                replicas.before_synced_backward()?;
            }
            loss.backward();
            loss_total += loss.detach();
            sample_losses.push((losses.detach(), t));
            window.samples += batch.len() as u64;
            state.samples_seen += (batch.len() * world) as u64;
        }
        let grad_norm = clip_grad_norm(opt.params(), cfg.train.clip_grad_norm);
        // One host synchronisation per step: the finiteness check needs the values. Averaged
        // over the ranks (gradients already are), with the stop flag, so every rank takes the
        // same decisions: skip, stop, or go on.
        // Made on the device: a copy from pageable host memory would wait for the GPU's queue.
        let stop_flag =
            Tensor::full([], f64::from(u8::from(opts.stop.is_raised())), (Kind::Float, device));
        let figures = Tensor::stack(
            &[loss_total.to_device(device), grad_norm.to_device(device), stop_flag],
            0,
        );
        replicas.mean(&[&figures])?;
        let host = Vec::<f64>::try_from(figures.to_kind(Kind::Double).to_device(tch::Device::Cpu))
            .map_err(TrainerError::Torch)?;
        let (loss_value, norm_value) = (host[0], host[1]);
        let stop_now = host[2] > 0.0;
        let injected = opts.inject_nonfinite_at.contains(&state.step);
        lr = schedule.at(state.step);
        if !loss_value.is_finite() || !norm_value.is_finite() || injected {
            opt.zero_grad();
            state.nonfinite_skipped += 1;
            state.nonfinite_in_row += 1;
            tracing::warn!(
                "step {}: non-finite loss {loss_value} or gradient norm {norm_value}; update skipped ({} in a row)",
                state.step, state.nonfinite_in_row
            );
            if state.nonfinite_in_row >= cfg.train.max_nonfinite_in_row.max(1) {
                return Err(TrainerError::Diverged(format!(
                    "{} consecutive steps had a non-finite loss or gradient (up to step {}); \
                     the last good checkpoint is in {}. Lower train.lr or raise train.max_nonfinite_in_row",
                    state.nonfinite_in_row,
                    state.step,
                    dir.display()
                )));
            }
            // The skipped step still consumed its batch; the step counter moves on so that the
            // next step draws fresh noise (and a save, log or validation due on it still happens).
            state.step += 1;
        } else {
            state.nonfinite_in_row = 0;
            opt.step(lr)?;
            opt.zero_grad();
            state.step += 1;
            ema.update(state.step);
            window.loss_sum += loss_value;
            window.steps += 1;
            window.last_grad_norm = norm_value;
            for (losses, t) in &sample_losses {
                window.add_bucketed(losses, t);
            }
        }
        logs.bar.set_position(state.step);

        let due = |k: u64| k > 0 && (state.step % k == 0 || state.step == max_steps);
        // A window also ends at each save, so that a run resumed from that save logs the same
        // windows, and the same averaged losses, as the run that was never stopped.
        let saving = due(every);
        if due(cfg.log.every_steps.max(1)) || saving {
            if let Some(loss) =
                logs.close_window(&mut window, loader, replicas, device, &state, lr)?
            {
                last_loss = Some(loss);
            }
        }
        // Validation, sample grids and saves are not training: their time is left out of the
        // logging window's speed and the ETA.
        let paused = Instant::now();
        // Validation and sample grids run on rank 0 while the others wait at the next
        // collective (dist.collective_timeout_secs bounds how long they may).
        if let (Some(events), Some(jsonl)) = (logs.events.as_mut(), logs.jsonl.as_mut()) {
            if due(cfg.train.validate_every) && wants_validation {
                let text = fixed_text.as_ref().unwrap_or(&model.text);
                let heldout =
                    data_cfg.heldout().expect("held-out shards, as wants_validation says");
                let batches = cfg.train.validate_batches;
                let val = validation_loss_with(
                    &model.cfg,
                    &model.diffusion,
                    &model.unet,
                    text,
                    &heldout,
                    batches,
                    device,
                )?;
                log_validation(&val, state.step, events, jsonl)?;
            }
            if due(cfg.train.sample_every) && wants_grid {
                let text = fixed_text.as_ref().unwrap_or(model.ema_text());
                sample_grid(&model, text, &cfg.train.sample_prompts, events, state.step)?;
            }
        }
        let ckpt = Checkpointing { dir: &dir, config_toml: &config_toml, cfg, replicas };
        if saving || state.step == max_steps {
            let began = Instant::now();
            ckpt.save(writer, &model, &opt, &state, loader)?;
            saved_at = Some(state.step);
            if let (Some(events), Some(jsonl)) = (logs.events.as_mut(), logs.jsonl.as_mut()) {
                // What the save cost the run: the whole write in place; in the background, the
                // copy to host memory and any wait for the previous write.
                let stall = [("perf/checkpoint_stall_secs".into(), began.elapsed().as_secs_f64())];
                write_scalars(events, jsonl, state.step, &[], &stall)?;
            }
        }
        logs.clock += paused.elapsed();
        writer.check()?;
        if stop_now {
            interrupted = true;
            break;
        }
    }
    if interrupted && logs.logged_at < state.step {
        // The steps since the last log, so that a stop loses none of the curve. Every rank
        // comes here at the same step (the stop is agreed), for the window's collectives.
        if let Some(loss) = logs.close_window(&mut window, loader, replicas, device, &state, lr)? {
            last_loss = Some(loss);
        }
    }
    if interrupted && saved_at != Some(state.step) {
        tracing::info!("stopping on signal at step {}: saving", state.step);
        let ckpt = Checkpointing { dir: &dir, config_toml: &config_toml, cfg, replicas };
        ckpt.save(writer, &model, &opt, &state, loader)?;
    }
    writer.wait()?;
    if let Some(events) = logs.events.as_mut() {
        events.flush()?;
    }
    logs.bar.finish_and_clear();
    let stats = loader.stats();
    tracing::info!("data: {} good samples, skipped {:?}", stats.good, stats.skipped);
    if model.text.truncated() > 0 {
        tracing::warn!(
            "{} caption encodings were cut to text.max_length = {} tokens",
            model.text.truncated(),
            cfg.text.max_length
        );
    }
    Ok(TrainOutcome {
        step: state.step,
        stage_dir: dir,
        // Nothing saved (a run already at its last step): the checkpoint it started from.
        last_checkpoint: writer
            .last()
            .cloned()
            .or_else(|| resume_from.as_ref().filter(|_| main).map(|c| c.dir.clone())),
        writes_checkpoints: main,
        last_loss,
        nonfinite_skipped: state.nonfinite_skipped,
        interrupted,
    })
}

/// A grid of the EMA model's samples for the fixed prompts, into TensorBoard. Super-resolution
/// stages have no low-res input here, so only the base stage writes grids.
fn sample_grid(
    model: &StageModel,
    text: &crate::text::TextConditioner,
    prompts: &[String],
    events: &mut EventWriter,
    step: u64,
) -> Result<()> {
    if model.cfg.unet.lowres_cond {
        return Ok(());
    }
    let keys: Vec<String> = (0..prompts.len()).map(|i| format!("prompt-{i}")).collect();
    let (text, mask) = tch::no_grad(|| text.encode(prompts, &keys))?;
    let seeds =
        crate::diffusion::stage_seeds(&crate::diffusion::image_seeds(0, 0, prompts.len()), 0);
    let images = crate::diffusion::sample_stage(
        &model.ema_unet,
        &model.diffusion,
        &model.cfg.diffusion.sampler,
        &text,
        &mask,
        None,
        &seeds,
    );
    let side = model.cfg.unet.image_side as usize;
    let rgb = crate::sample::to_rgb8(&images);
    let cols = (prompts.len() as f64).sqrt().ceil() as usize;
    let (grid, w, h) = crate::sample::grid(&rgb, prompts.len(), side, cols);
    events.image(step as i64, "samples/grid", &grid, w as u32, h as u32)?;
    events.flush()
}

/// Rank 0's outputs (TensorBoard, `metrics.jsonl`; none on the other ranks), the progress bar
/// and the logging window's clock.
struct Logs {
    events: Option<EventWriter>,
    jsonl: Option<MetricsJsonl>,
    bar: indicatif::ProgressBar,
    clock: Instant,
    /// The step of the last log (the run's start before the first).
    logged_at: u64,
    max_steps: u64,
}

impl Logs {
    /// Ends the logging window at `state.step`: its figures are summed over the ranks (every
    /// rank calls this at the same step) and written. Returns the window's mean loss, none when
    /// every step of it was skipped.
    fn close_window(
        &mut self,
        window: &mut StepMetrics,
        loader: &Loader,
        replicas: &Replicas,
        device: tch::Device,
        state: &TrainState,
        lr: f64,
    ) -> Result<Option<f64>> {
        let now = Instant::now();
        window.elapsed_secs = (now - self.clock).as_secs_f64();
        window.gpu_memory_gb = crate::native::cuda_memory_allocated_gb(device);
        self.clock = now;
        let steps = state.step - std::mem::replace(&mut self.logged_at, state.step);
        let data = loader.stats();
        (window.data_good, window.data_skipped) = (data.good, data.total_skipped());
        window.reduce_over_ranks(device, |t| replicas.sum(t))?;
        let loss = (window.steps > 0).then(|| window.mean_loss());
        if let (Some(events), Some(jsonl)) = (self.events.as_mut(), self.jsonl.as_mut()) {
            let scalars = window_scalars(window, lr, state.nonfinite_skipped);
            // Counted by every rank's loader since the run began, summed over the ranks.
            let counts = [
                ("samples_good", json!(window.data_good)),
                ("samples_skipped", json!(window.data_skipped)),
            ];
            write_scalars(events, jsonl, state.step, &counts, &scalars)?;
            let speed = window.samples as f64 / window.elapsed_secs.max(1e-9);
            let shown = loss.map_or("skipped".to_owned(), |l| format!("{l:.4}"));
            self.bar.set_message(format!("loss {shown} | {speed:.1} samples/s"));
            if self.bar.is_hidden() {
                // No bar off a terminal (Slurm, nohup, a redirected log): a line per log step.
                let per_step = window.elapsed_secs / steps.max(1) as f64;
                let eta = per_step * self.max_steps.saturating_sub(state.step) as f64;
                tracing::info!(
                    "step {}/{}: loss {shown}, lr {lr:.3e}, {speed:.1} samples/s, eta {}",
                    state.step,
                    self.max_steps,
                    indicatif::HumanDuration(std::time::Duration::from_secs_f64(eta))
                );
            }
        }
        *window = StepMetrics::default();
        Ok(loss)
    }
}

/// A window's scalars, by TensorBoard tag. The loss, its buckets and the gradient norm are left
/// out of a window whose every step was skipped (they would be NaN); the count of skipped
/// updates since the run began is always there.
fn window_scalars(window: &StepMetrics, lr: f64, nonfinite_skipped: u64) -> Vec<(String, f64)> {
    let elapsed = window.elapsed_secs.max(1e-9);
    let mut scalars: Vec<(String, f64)> = Vec::new();
    if window.steps > 0 {
        scalars.push(("train/loss".into(), window.mean_loss()));
    }
    scalars.push(("train/lr".into(), lr));
    if window.steps > 0 {
        scalars.push(("train/grad_norm".into(), window.last_grad_norm));
    }
    scalars.push(("train/nonfinite_skipped".into(), nonfinite_skipped as f64));
    scalars.push(("perf/samples_per_sec".into(), window.samples as f64 / elapsed));
    scalars.push(("perf/data_wait_fraction".into(), window.data_wait_secs / elapsed));
    for (i, b) in window.bucket_means().iter().enumerate() {
        if b.is_finite() {
            scalars.push((bucket_tag("train", i), *b));
        }
    }
    if let Some(mem) = window.gpu_memory_gb {
        scalars.push(("perf/gpu_memory_gb".into(), mem));
    }
    scalars
}

/// Where and how a step's checkpoint is written: every rank takes part (cursors and weight
/// fingerprints travel to rank 0), rank 0 writes.
struct Checkpointing<'a> {
    dir: &'a std::path::Path,
    config_toml: &'a str,
    cfg: &'a Config,
    replicas: &'a Replicas,
}

impl Checkpointing<'_> {
    /// Rank 0 hands the checkpoint to `writer`; the other ranks only send their part.
    fn save(
        &self,
        writer: &mut CheckpointWriter,
        model: &StageModel,
        opt: &AdamW,
        state: &TrainState,
        loader: &Loader,
    ) -> Result<()> {
        let cursor = serde_json::to_value(loader.cursor()).expect("cursor serialises");
        let Some((cursors, prints)) =
            self.replicas.gather_for_checkpoint(state.step, cursor, model)?
        else {
            return Ok(());
        };
        let mut state = state.clone();
        state.data_cursors = cursors;
        state.weight_fingerprints = prints;
        let files = vec![
            ("model", StageModel::named(&model.vs)),
            ("ema", StageModel::named(&model.ema_vs)),
            ("optimizer", opt.state_tensors()),
        ];
        writer.write(self.dir, state, self.config_toml, files, &self.cfg.train.checkpoint)
    }
}

/// Loads the weights, their average and the optimizer's state on rank 0 (or a single process):
/// the other ranks of a job receive them from rank 0's broadcasts (`Replicas::attach`,
/// `Replicas::share_optimizer_state`), so they need not read them from a shared filesystem too.
fn restore(model: &StageModel, opt: &mut AdamW, ckpt: &Checkpoint) -> Result<()> {
    copy_into(&ckpt.tensors("model")?, &model.vs, &ckpt.dir.join("model.safetensors"))?;
    copy_into(&ckpt.tensors("ema")?, &model.ema_vs, &ckpt.dir.join("ema.safetensors"))?;
    opt.load_state_tensors(ckpt.tensors("optimizer")?)
}

/// Copies named tensors into a VarStore's variables, refusing missing, unexpected or misshapen
/// entries by name.
pub fn copy_into(
    tensors: &[(String, Tensor)],
    vs: &tch::nn::VarStore,
    path: &std::path::Path,
) -> Result<()> {
    let vars = vs.variables();
    let mut problems = Vec::new();
    let names: std::collections::BTreeSet<&String> = tensors.iter().map(|(n, _)| n).collect();
    for name in vars.keys() {
        if !names.contains(name) {
            problems.push(format!("missing `{name}`"));
        }
    }
    tch::no_grad(|| {
        for (name, src) in tensors {
            match vars.get(name) {
                None => problems.push(format!("unexpected `{name}`")),
                Some(dst) if dst.size() != src.size() => problems.push(format!(
                    "`{name}` has shape {:?} in the file, {:?} in the model",
                    src.size(),
                    dst.size()
                )),
                Some(dst) => {
                    dst.shallow_clone().copy_(&src.to_kind(dst.kind()));
                }
            }
        }
    });
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TrainerError::Checkpoint(format!("{}: {}", path.display(), problems.join("; "))))
    }
}
