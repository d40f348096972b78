//! The training loop end to end on CPU: the loss falls, the NaN guard, checkpoints and
//! TensorBoard logs.

mod common;

use std::path::Path;

use imagen_trainer::checkpoint::{self, Checkpoint};
use imagen_trainer::diffusion::Objective;
use imagen_trainer::train::{train, Resume, StopFlag, TrainOptions, TrainOutcome};

fn options(run_dir: &Path, stage: usize, max_steps: u64) -> TrainOptions {
    TrainOptions {
        stage,
        run_dir: run_dir.to_owned(),
        max_steps: Some(max_steps),
        resume: Resume::Auto,
        stop: StopFlag::default(),
        progress: false,
        inject_nonfinite_at: Vec::new(),
        restart_data: false,
    }
}

fn losses(stage_dir: &Path) -> Vec<(u64, f64)> {
    common::logged_losses(stage_dir)
}

#[test]
fn base_stage_loss_falls_and_checkpoints_are_written() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.train.checkpoint.every_steps = 75;
    cfg.data.batch_size = 8;
    let out: TrainOutcome = train(&cfg, options(&w.run_dir("falls"), 0, 150)).unwrap();
    assert_eq!(out.step, 150);
    let l = losses(&out.stage_dir);
    assert_eq!(l.len(), 150);
    let first: f64 = l[..25].iter().map(|x| x.1).sum::<f64>() / 25.0;
    let last: f64 = l[125..].iter().map(|x| x.1).sum::<f64>() / 25.0;
    // 150 steps of the tiny U-Net on 64 scenes: the mean loss of the last 25 steps is well below
    // that of the first 25 (measured: 0.564 against 0.753, a ratio of 0.75; deterministic for
    // the seed on CPU).
    assert!(last < 0.8 * first, "loss did not fall: first {first:.4}, last {last:.4}");
    let kept: Vec<u64> = checkpoint::list(&out.stage_dir).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(kept, vec![75, 150]);
    let ckpt = Checkpoint::open(out.last_checkpoint.as_ref().unwrap()).unwrap();
    assert_eq!(ckpt.state.step, 150);
    assert_eq!(ckpt.state.samples_seen, 1200);
    for stem in ["model", "ema", "optimizer"] {
        assert!(!ckpt.tensors(stem).unwrap().is_empty(), "{stem}");
    }
}

#[test]
fn super_resolution_stage_trains() {
    let _serial = common::serial();
    let w = common::world();
    let out = train(&w.config, options(&w.run_dir("sr"), 1, 6)).unwrap();
    assert_eq!(out.step, 6);
    assert!(out.last_loss.unwrap().is_finite());
}

#[test]
fn the_deterministic_mode_turns_on_and_computes_as_before_on_the_cpu() {
    let _serial = common::serial();
    let w = common::world();
    let plain = train(&w.config, options(&w.run_dir("plain"), 0, 3)).unwrap();
    assert!(!imagen_trainer::native::deterministic());
    let mut cfg = w.config.clone();
    cfg.train.deterministic = true;
    let strict = train(&cfg, options(&w.run_dir("deterministic"), 0, 3)).unwrap();
    assert!(imagen_trainer::native::deterministic());
    // The CPU kernels are deterministic already: the same losses, bit for bit.
    assert_eq!(losses(&plain.stage_dir), losses(&strict.stage_dir));
    // The next run's config turns it off again.
    train(&w.config, options(&w.run_dir("plain-again"), 0, 1)).unwrap();
    assert!(!imagen_trainer::native::deterministic());
}

#[test]
fn a_stage_s_own_learning_rate_replaces_train_lr() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.train.warmup_steps = 0;
    cfg.stages[1].lr = Some(3e-3);
    let lrs = |stage: usize, name: &str| {
        let out = train(&cfg, options(&w.run_dir(name), stage, 3)).unwrap();
        common::logged(&out.stage_dir, "train/lr")
    };
    let (sr, base) = (lrs(1, "lr-sr"), lrs(0, "lr-base"));
    assert_eq!(sr.len(), 3);
    assert!(sr.iter().all(|&(_, lr)| (lr - 3e-3).abs() < 1e-12), "{sr:?}");
    assert!(base.iter().all(|&(_, lr)| (lr - cfg.train.lr).abs() < 1e-12), "{base:?}");
    assert_ne!(cfg.train.lr, 3e-3);
}

#[test]
fn nonfinite_steps_are_skipped_and_counted() {
    let _serial = common::serial();
    let w = common::world();
    let mut opts = options(&w.run_dir("nan"), 0, 8);
    opts.inject_nonfinite_at = vec![2, 3];
    let out = train(&w.config, opts).unwrap();
    assert_eq!(out.nonfinite_skipped, 2);
    assert_eq!(out.step, 8);
    let ckpt = Checkpoint::open(out.last_checkpoint.as_ref().unwrap()).unwrap();
    assert_eq!(ckpt.state.nonfinite_skipped, 2);
    // Skipped steps log no loss, but the count of skipped updates is logged at every step.
    let steps: Vec<u64> = losses(&out.stage_dir).iter().map(|x| x.0).collect();
    assert_eq!(steps, vec![1, 2, 5, 6, 7, 8]);
    let skipped = common::logged(&out.stage_dir, "train/nonfinite_skipped");
    let counts: Vec<(u64, f64)> = (1..=8).map(|s| (s, s.clamp(2, 4) as f64 - 2.0)).collect();
    assert_eq!(skipped, counts);
}

#[test]
fn a_resume_continues_a_run_of_non_finite_steps_and_logs_each_step_once() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.train.max_nonfinite_in_row = 3;
    let run = w.run_dir("nan-resume");
    // Steps 2 and 3 are skipped, the save at 4 falls on the second: two in a row so far.
    let mut opts = options(&run, 0, 4);
    opts.inject_nonfinite_at = vec![2, 3];
    let out = train(&cfg, opts).unwrap();
    let ckpt = Checkpoint::open(out.last_checkpoint.as_ref().unwrap()).unwrap();
    assert_eq!((ckpt.state.nonfinite_skipped, ckpt.state.nonfinite_in_row), (2, 2));
    // A run killed after step 6 left records past its checkpoint: the resume writes them again.
    let metrics = out.stage_dir.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"step\":5,\"train/loss\":9.0}\n{\"step\":6,\"train/loss\":9.0}\n{\"st");
    std::fs::write(&metrics, text).unwrap();
    // One more in a row after the resume is the third: the run stops.
    let mut opts = options(&run, 0, 8);
    opts.inject_nonfinite_at = vec![4];
    let err = train(&cfg, opts).unwrap_err().to_string();
    assert!(err.contains("3 consecutive steps"), "{err}");
    let steps: Vec<u64> = common::logged(&out.stage_dir, "train/lr").iter().map(|x| x.0).collect();
    assert_eq!(steps, vec![1, 2, 3, 4], "each step once, in order, nothing of the killed run");
}

#[test]
fn a_run_with_periodic_saves_off_saves_at_its_end_and_a_resume_stopped_at_once_saves_nothing() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.train.checkpoint.every_steps = 0;
    let run = w.run_dir("saves-off");
    let out = train(&cfg, options(&run, 0, 6)).unwrap();
    let steps: Vec<u64> =
        checkpoint::list(&out.stage_dir).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![6]);
    // The save's hold-up is logged at the step it saved.
    let stall = common::logged(&out.stage_dir, "perf/checkpoint_stall_secs");
    assert!(stall.len() == 1 && stall[0].0 == 6 && stall[0].1 > 0.0, "{stall:?}");
    // The command line's horizon is what the checkpoint records as the run's.
    let ckpt = Checkpoint::open(out.last_checkpoint.as_ref().unwrap()).unwrap();
    assert!(ckpt.config_toml.contains("max_steps = 6"), "{}", ckpt.config_toml);
    let saved = std::fs::metadata(out.stage_dir.join("step-000000006/state.json"))
        .unwrap()
        .modified()
        .unwrap();
    let opts = options(&run, 0, 10);
    opts.stop.raise();
    let again = train(&cfg, opts).unwrap();
    assert!(again.interrupted && again.step == 6);
    // Nothing new was saved: the checkpoint the run stands on is the one it resumed from.
    assert_eq!(again.last_checkpoint, Some(out.stage_dir.join("step-000000006")));
    let now = std::fs::metadata(out.stage_dir.join("step-000000006/state.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(saved, now, "the checkpoint resumed from is not written again");
}

#[test]
fn a_stage_directory_whose_checkpoints_are_all_damaged_is_not_silently_started_over() {
    let _serial = common::serial();
    let w = common::world();
    let run = w.run_dir("all-damaged");
    let out = train(&w.config, options(&run, 0, 4)).unwrap();
    let model = out.stage_dir.join("step-000000004/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let err = train(&w.config, options(&run, 0, 8)).unwrap_err().to_string();
    assert!(err.contains("none is intact") && err.contains("--resume never"), "{err}");
    assert!(out.stage_dir.join("step-000000004").is_dir(), "nothing set aside");
    // Asked for, the run starts afresh, the damaged checkpoint kept aside.
    let mut opts = options(&run, 0, 4);
    opts.resume = Resume::Never;
    assert_eq!(train(&w.config, opts).unwrap().step, 4);
    assert!(out.stage_dir.join("superseded-step-000000004").is_dir());
}

#[test]
fn a_save_that_falls_due_on_a_skipped_step_still_happens() {
    let _serial = common::serial();
    let w = common::world();
    assert_eq!(w.config.train.checkpoint.every_steps, 4);
    // Steps 3 and 7 are skipped: the step counter reaches 4 and 8 (the last) on them.
    let mut opts = options(&w.run_dir("nan-at-saves"), 0, 8);
    opts.inject_nonfinite_at = vec![3, 7];
    let out = train(&w.config, opts).unwrap();
    assert_eq!((out.step, out.nonfinite_skipped), (8, 2));
    let steps: Vec<u64> =
        checkpoint::list(&out.stage_dir).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![4, 8]);
    assert_eq!(out.last_checkpoint, Some(out.stage_dir.join("step-000000008")));
}

#[test]
fn a_resume_under_other_data_settings_is_refused_unless_the_stream_restarts() {
    let _serial = common::serial();
    let w = common::world();
    let run = w.run_dir("data-settings");
    train(&w.config, options(&run, 0, 4)).unwrap();
    let mut changed = w.config.clone();
    changed.data.shuffle_buffer += 8;
    let err = train(&changed, options(&run, 0, 8)).unwrap_err().to_string();
    assert!(err.contains("step-000000004"), "{err}");
    assert!(err.contains("data.shuffle_buffer: 16 -> 24"), "{err}");
    assert!(err.contains("--data-cursor restart"), "{err}");
    // Nor is a rollback to a checkpoint whose stream it cannot continue: the checkpoints after
    // it stay where they were.
    train(&w.config, options(&run, 0, 8)).unwrap();
    let mut rollback = options(&run, 0, 8);
    rollback.resume = Resume::Path(run.join("stage-0/step-000000004"));
    assert!(train(&changed, rollback).is_err());
    let kept: Vec<u64> =
        checkpoint::list(&run.join("stage-0")).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(kept, vec![4, 8]);
    let mut opts = options(&run, 0, 10);
    opts.restart_data = true;
    let out = train(&changed, opts).unwrap();
    assert_eq!(out.step, 10);
    // The restarted stream's cursor carries the new settings: the next resume is exact again.
    let out = train(&changed, options(&run, 0, 12)).unwrap();
    assert_eq!(out.step, 12);
}

#[test]
fn too_many_nonfinite_steps_in_a_row_stop_with_a_clear_error() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.train.max_nonfinite_in_row = 3;
    let mut opts = options(&w.run_dir("diverge"), 0, 20);
    opts.inject_nonfinite_at = (5..20).collect();
    let err = train(&cfg, opts).unwrap_err().to_string();
    assert!(err.contains("3 consecutive steps"), "{err}");
    // The checkpoint taken before the trouble is intact and finite.
    let latest = checkpoint::latest(&w.run_dir("diverge").join("stage-0")).unwrap().unwrap();
    assert_eq!(latest.state.step, 4);
}

#[test]
fn a_stop_request_finishes_the_step_and_saves() {
    let _serial = common::serial();
    let w = common::world();
    let opts = options(&w.run_dir("stop"), 0, 50);
    opts.stop.raise();
    let stop = opts.stop.clone();
    let out = train(&w.config, opts).unwrap();
    assert!(stop.is_raised());
    assert!(out.interrupted);
    assert_eq!(out.step, 0);
    assert!(out.last_checkpoint.is_some());
}

#[test]
fn a_rollback_sets_the_newer_checkpoints_aside_and_continues_its_own_timeline() {
    let _serial = common::serial();
    let w = common::world();
    let run = w.run_dir("rollback");
    let out = train(&w.config, options(&run, 0, 12)).unwrap();
    let dir = out.stage_dir.clone();
    let steps = |d: &Path| -> Vec<u64> {
        checkpoint::list(d).unwrap().iter().map(|c| c.0).collect::<Vec<_>>()
    };
    assert_eq!(steps(&dir), vec![4, 8, 12]);
    // Back to step 4 (say, before a loss spike), run to 6: 8 and 12 belong to the old timeline.
    let mut opts = options(&run, 0, 6);
    opts.resume = Resume::Path(dir.join("step-000000004"));
    train(&w.config, opts).unwrap();
    assert_eq!(steps(&dir), vec![4, 6]);
    // TensorBoard shows the new timeline alone: the old run's steps 5 to 12 are dropped.
    let board = common::read_tensorboard(&dir);
    let logged: Vec<u64> = board["scalars"]["train/loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(logged, (1..=6).collect::<Vec<u64>>());
    assert!(dir.join("superseded-step-000000008/model.safetensors").is_file());
    assert!(dir.join("superseded-step-000000012/model.safetensors").is_file());
    // A newest checkpoint damaged after its save is passed over, and set aside.
    let model = dir.join("step-000000006/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let out = train(&w.config, options(&run, 0, 8)).unwrap();
    assert_eq!(out.step, 8);
    assert_eq!(steps(&dir), vec![4, 8]);
    assert!(dir.join("superseded-step-000000006").is_dir());
}

#[test]
fn resuming_with_a_different_unet_is_refused_with_the_fields() {
    let _serial = common::serial();
    let w = common::world();
    train(&w.config, options(&w.run_dir("shape"), 0, 4)).unwrap();
    let mut cfg = w.config.clone();
    cfg.stages[0].unet.dim = 16;
    let err = train(&cfg, options(&w.run_dir("shape"), 0, 8)).unwrap_err().to_string();
    assert!(err.contains("stages[0].unet.dim (8 -> 16)"), "{err}");
}

#[test]
fn a_checkpoint_from_before_a_unet_field_existed_resumes_with_its_default() {
    let _serial = common::serial();
    let w = common::world();
    let run = w.run_dir("older-config");
    let out = train(&w.config, options(&run, 0, 2)).unwrap();
    let ckpt = Checkpoint::open(out.last_checkpoint.as_ref().unwrap()).unwrap();
    // The same checkpoint as an older version wrote it: its config lacks a field the U-Net has
    // since gained (here `dropout`, at its default).
    assert_eq!(w.config.stages[0].unet.dropout, 0.0);
    let mut older: toml::Value = toml::from_str(&ckpt.config_toml).unwrap();
    let unet = older["stages"][0]["unet"].as_table_mut().unwrap();
    assert!(unet.remove("dropout").is_some());
    let tensors = vec![("model", ckpt.tensors("model").unwrap())];
    let dir = w.path().join("older");
    let path =
        checkpoint::save(&dir, &ckpt.state, &toml::to_string(&older).unwrap(), &tensors).unwrap();
    let older = Checkpoint::open(&path).unwrap();
    imagen_trainer::train::check_compatible(&older, &w.config, 0).unwrap();
    // A field it had, changed, is still refused.
    let mut cfg = w.config.clone();
    cfg.stages[0].unet.dropout = 0.1;
    let err = imagen_trainer::train::check_compatible(&older, &cfg, 0).unwrap_err().to_string();
    assert!(err.contains("stages[0].unet.dropout (0.0 -> 0.1)"), "{err}");
}

#[test]
fn a_start_that_fails_leaves_no_empty_stage_directory() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.data.shards = vec![w.path().join("no-such-shards/*.parquet").display().to_string()];
    let run = w.run_dir("failed-start");
    let err = train(&cfg, options(&run, 0, 4)).unwrap_err().to_string();
    assert!(err.contains("no-such-shards"), "{err}");
    assert!(!run.join("stage-0").exists(), "an empty stage-0/ left behind");
    // A stage directory that holds checkpoints stays whatever the next start does.
    train(&w.config, options(&run, 0, 4)).unwrap();
    assert!(train(&cfg, options(&run, 0, 8)).is_err());
    assert!(checkpoint::latest(&run.join("stage-0")).unwrap().is_some());
}

#[test]
fn the_text_encoder_copied_elsewhere_is_recognised_and_another_one_refused() {
    let _serial = common::serial();
    let w = common::world();
    let run = w.run_dir("encoder-moved");
    train(&w.config, options(&run, 0, 4)).unwrap();
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(&w.config.text.model).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    };
    // Copied to another disk: the same files, so the run resumes (and its stages sample).
    let moved = w.dir.path().join("local-disk/t5");
    copy(&moved);
    let mut cfg = w.config.clone();
    cfg.text.model = moved.clone();
    assert_eq!(train(&cfg, options(&run, 0, 6)).unwrap().step, 6);
    // Another encoder (here, another tokenizer) at that path is refused, naming the field.
    let other = w.dir.path().join("other/t5");
    copy(&other);
    let tokenizer = other.join("tokenizer.json");
    let text = std::fs::read_to_string(&tokenizer).unwrap();
    std::fs::write(&tokenizer, format!("{text}\n")).unwrap();
    cfg.text.model = other;
    let err = train(&cfg, options(&run, 0, 8)).unwrap_err().to_string();
    assert!(err.contains("text.model ("), "{err}");
    // So is another encoder put in place of the one at the checkpoint's own path.
    let tokenizer = moved.join("tokenizer.json");
    std::fs::write(&tokenizer, format!("{text}\n")).unwrap();
    cfg.text.model = moved;
    let err = train(&cfg, options(&run, 0, 8)).unwrap_err().to_string();
    assert!(err.contains("holds another encoder than the checkpoint trained with"), "{err}");
    // A path that holds no encoder at all is said to be that, not another encoder (a run on
    // the embedding cache does not load the encoder to find out).
    cfg.text.model = w.dir.path().join("no-such-folder/t5");
    let ckpt = checkpoint::latest(&run.join("stage-0")).unwrap().unwrap();
    let err = imagen_trainer::train::check_compatible(&ckpt, &cfg, 0).unwrap_err().to_string();
    assert!(err.contains("no-such-folder/t5 has no readable encoder"), "{err}");
}

#[test]
fn tensorboard_reads_the_training_logs() {
    let _serial = common::serial();
    let w = common::world();
    let out = train(&w.config, options(&w.run_dir("tb"), 0, 3)).unwrap();
    let seen = common::read_tensorboard(&out.stage_dir);
    for tag in ["train/loss", "train/lr", "train/grad_norm", "perf/samples_per_sec"] {
        assert_eq!(seen["scalars"][tag].as_array().map(Vec::len), Some(3), "{tag}: {seen}");
    }
}

#[test]
fn a_frozen_cached_run_validates_and_samples_its_grid_from_embeddings_made_at_its_start() {
    let _serial = common::serial();
    let w = common::world();
    let mut online = w.config.clone();
    online.train.validate_every = 3;
    online.train.validate_batches = 2;
    online.train.sample_every = 6;
    online.train.sample_prompts = vec![common::all_captions()[0].clone()];
    online.stages[0].diffusion.sampler.steps = 2;
    let mut cached = online.clone();
    cached.text.mode = imagen_trainer::text::TextMode::FrozenCached;
    let cache = w.path().join("cache");
    cached.text.cache_dir = Some(cache.clone());
    let shards = imagen_trainer::text::embed::data_shards(&cached.data).unwrap();
    imagen_trainer::text::embed::embed_shards(
        &cached.text,
        &cache,
        &shards,
        0,
        1,
        tch::Device::Cpu,
    )
    .unwrap();
    let with_cache = train(&cached, options(&w.run_dir("cached-val"), 0, 6)).unwrap();
    let with_encoder = train(&online, options(&w.run_dir("online-val"), 0, 6)).unwrap();
    let val = |dir: &Path| common::logged(dir, "val/loss");
    let (a, b) = (val(&with_cache.stage_dir), val(&with_encoder.stage_dir));
    assert_eq!(a.iter().map(|v| v.0).collect::<Vec<_>>(), vec![3, 6]);
    // The same embeddings either way, so the same validation losses.
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "cached {a:?} against online {b:?}");
    }
    // One grid of the 16x16 base stage at step 6 (one prompt: 16 px and a 2 px border).
    let seen = common::read_tensorboard(&with_cache.stage_dir);
    let grids = seen["images"]["samples/grid"].as_array().cloned().unwrap_or_default();
    assert_eq!(grids.len(), 1, "{seen}");
    assert_eq!(grids[0][0], 6);
}

#[test]
fn validation_loss_and_sample_grids_are_logged() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.train.validate_every = 3;
    cfg.train.validate_batches = 2;
    cfg.train.sample_every = 6;
    cfg.train.sample_prompts =
        vec![common::all_captions()[0].clone(), common::all_captions()[7].clone()];
    cfg.stages[0].diffusion.sampler.steps = 4;
    let out = train(&cfg, options(&w.run_dir("val"), 0, 6)).unwrap();
    let val = common::logged(&out.stage_dir, "val/loss");
    assert_eq!(val.iter().map(|v| v.0).collect::<Vec<_>>(), vec![3, 6]);
    assert!(val.iter().all(|v| v.1.is_finite() && v.1 > 0.0));
    // The same weights give the same validation loss: fixed batches, timesteps and noise.
    let model = imagen_trainer::train::StageModel::new(&cfg, 0, tch::Device::Cpu).unwrap();
    let a = imagen_trainer::train::validation_loss(&model, &cfg.data, 2, tch::Device::Cpu).unwrap();
    let b = imagen_trainer::train::validation_loss(&model, &cfg.data, 2, tch::Device::Cpu).unwrap();
    let (a, b) = (a.unwrap(), b.unwrap());
    // Bit-identical overall, per bucket (an empty bucket is NaN) and per sample.
    let bits = |v: &imagen_trainer::train::ValidationLoss| {
        let all = [vec![v.mean], v.buckets.clone(), v.per_sample.clone()].concat();
        (all.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.bucket_counts.clone())
    };
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a.buckets.len(), 4);
    assert_eq!(a.per_sample.len(), 8, "2 batches of 4");
    assert_eq!(a.bucket_counts.iter().sum::<u64>(), 8);
    // The buckets partition the samples: their count-weighted mean is the overall loss.
    let weighted: f64 = a
        .buckets
        .iter()
        .zip(&a.bucket_counts)
        .filter(|(_, c)| **c > 0)
        .map(|(m, c)| m * *c as f64)
        .sum::<f64>()
        / 8.0;
    assert!((weighted - a.mean).abs() < 1e-6 * a.mean, "{weighted} vs {}", a.mean);
    // Each logged bucket is in metrics.jsonl at both validation steps, and TensorBoard reads
    // the same values from the event file.
    let logged_buckets: Vec<Vec<(u64, f64)>> =
        (0..4).map(|i| common::logged(&out.stage_dir, &format!("val/loss_t{i}"))).collect();
    assert!(logged_buckets.iter().any(|b| b.len() == 2), "{logged_buckets:?}");
    let seen = common::read_tensorboard(&out.stage_dir);
    let tb = &seen["scalars"]["val/loss"];
    assert_eq!(tb.as_array().map(Vec::len), Some(2), "{seen}");
    for (i, bucket) in logged_buckets.iter().enumerate() {
        let tb = seen["scalars"][format!("val/loss_t{i}")].as_array().cloned().unwrap_or_default();
        assert_eq!(tb.len(), bucket.len(), "val/loss_t{i}: {seen}");
        for (e, (step, value)) in tb.iter().zip(bucket) {
            assert_eq!(e[0].as_u64(), Some(*step));
            // TensorBoard keeps f32.
            assert!((e[1].as_f64().unwrap() - value).abs() <= 1e-6 * value.abs());
        }
    }
    let events = std::fs::read_dir(&out.stage_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents"))
        .unwrap();
    let bytes = std::fs::read(events).unwrap();
    assert!(bytes.windows(12).any(|w| w == b"samples/grid"), "no sample grid in the event file");
}

#[test]
fn a_super_resolution_stage_trained_under_a_config_of_its_own_samples_in_a_cascade() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    for stage in &mut cfg.stages {
        stage.diffusion.sampler.steps = 2;
    }
    let cascade = w.run_dir("assembled");
    train(&cfg, options(&cascade, 0, 2)).unwrap();
    // The SR stage trained alone, as its one-stage preset would be (its stage 0), then put in
    // the cascade's run as stage 1.
    let mut alone = cfg.clone();
    alone.stages.remove(0);
    let out = train(&alone, options(&w.run_dir("sr-alone"), 0, 2)).unwrap();
    let trained = out.last_checkpoint.unwrap();
    let placed = cascade.join("stage-1").join(trained.file_name().unwrap());
    std::fs::create_dir_all(&placed).unwrap();
    for file in std::fs::read_dir(&trained).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), placed.join(file.file_name())).unwrap();
    }
    let mut loader = imagen_trainer::sample::StageLoader::new(&cfg, tch::Device::Cpu);
    let stages: Vec<_> = (0..2).map(|i| loader.latest(&cascade, i).unwrap()).collect();
    let prompts = vec![common::all_captions()[3].clone()];
    let images = imagen_trainer::sample::sample_cascade(&stages, &prompts, 7, 64).unwrap();
    assert_eq!(images[1].size(), vec![1, 3, 16, 16]);
    // The command line without --config takes the cascade's recorded config, not the copied
    // stage's one-stage config (the newest file).
    let out = w.path().join("assembled-samples");
    let sampled = std::process::Command::new(env!("CARGO_BIN_EXE_imagen"))
        .args(["--log-level", "warn", "sample", "--run-dir"])
        .arg(&cascade)
        .args(["--prompt", &prompts[0], "--prompt", &[prompts[0].as_str(); 3].join(" "), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&sampled.stderr);
    assert!(sampled.status.success(), "{err}");
    assert!(out.join("stage-0/0000.png").is_file() && out.join("0001.png").is_file());
    // The second prompt is longer than text.max_length (24 tokens), and the user is told.
    assert!(err.contains("1 of 2 prompts were cut to text.max_length"), "{err}");
    // Its U-Net is still compared with the one the cascade's config gives that stage.
    let mut other = cfg.clone();
    other.stages[1].unet.dim = 16;
    let mut loader = imagen_trainer::sample::StageLoader::new(&other, tch::Device::Cpu);
    let err = loader.latest(&cascade, 1).err().unwrap().to_string();
    assert!(err.contains("stages[1].unet.dim (8 -> 16)"), "{err}");
}

#[test]
fn a_trained_cascade_samples_deterministically_and_writes_its_prompts() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    for stage in &mut cfg.stages {
        stage.diffusion.sampler.steps = 3;
    }
    let run = w.run_dir("cascade");
    train(&cfg, options(&run, 0, 4)).unwrap();
    train(&cfg, options(&run, 1, 4)).unwrap();
    let mut loader = imagen_trainer::sample::StageLoader::new(&cfg, tch::Device::Cpu);
    let stages: Vec<_> = (0..2).map(|i| loader.latest(&run, i).unwrap()).collect();
    // One frozen encoder serves both stages.
    assert!(std::rc::Rc::ptr_eq(&stages[0].text, &stages[1].text));
    let prompts = vec![common::all_captions()[3].clone(), common::all_captions()[100].clone()];
    let a = imagen_trainer::sample::sample_cascade(&stages, &prompts, 7, 64).unwrap();
    let b = imagen_trainer::sample::sample_cascade(&stages, &prompts, 7, 64).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].size(), vec![2, 3, 16, 16]);
    assert!(a[1].equal(&b[1]), "same seed, different images");
    assert_eq!(a[1].kind(), tch::Kind::Uint8, "8-bit on the host");
    // What a stage was trained under (objective, schedule) comes from its checkpoint: a config
    // edited since samples the same images, and only its sampler settings apply.
    let mut edited = cfg.clone();
    for stage in &mut edited.stages {
        stage.diffusion.objective = match stage.diffusion.objective {
            Objective::Eps => Objective::V,
            _ => Objective::Eps,
        };
    }
    let mut loader = imagen_trainer::sample::StageLoader::new(&edited, tch::Device::Cpu);
    let reloaded: Vec<_> = (0..2).map(|i| loader.latest(&run, i).unwrap()).collect();
    assert_eq!(reloaded[0].cfg.diffusion, cfg.stages[0].diffusion);
    let c = imagen_trainer::sample::sample_cascade(&reloaded, &prompts, 7, 64).unwrap();
    assert!(a[1].equal(&c[1]), "sampled under the edited objective");
    // Each prompt's image comes from its own seed: three prompts one at a time, two then one,
    // or all at once are the same images, through both stages; the second image made alone (at
    // its place in the run) is that image too.
    let three = [prompts.clone(), vec![common::all_captions()[7].clone()]].concat();
    let at_once = imagen_trainer::sample::sample_cascade(&stages, &three, 7, 64).unwrap();
    assert_eq!(at_once[1].size(), vec![3, 3, 16, 16]);
    // (Equal up to a rounding of the 8-bit values: a convolution's kernels may add in another
    // order at another batch size.)
    let close = |x: &tch::Tensor, y: &tch::Tensor| {
        let diff = (x.to_kind(tch::Kind::Int) - y.to_kind(tch::Kind::Int)).abs();
        diff.max().int64_value(&[]) <= 1
    };
    for batch in [1, 2] {
        let chunked = imagen_trainer::sample::sample_cascade(&stages, &three, 7, batch).unwrap();
        for stage in 0..2 {
            assert!(close(&chunked[stage], &at_once[stage]), "batch {batch}, stage {stage}");
        }
    }
    assert!(close(&at_once[1].narrow(0, 0, 2), &a[1]), "the first two prompts as before");
    let seeds = imagen_trainer::diffusion::image_seeds(7, 1, 1);
    assert_eq!(seeds, imagen_trainer::diffusion::image_seeds(7, 0, 3)[1..2]);
    let other = imagen_trainer::sample::sample_cascade(&stages, &three, 8, 64).unwrap();
    assert!(!other[1].equal(&at_once[1]), "another seed, the same images");
    let out = w.path().join("samples");
    let grid = imagen_trainer::sample::write_samples(&out, &a[1], &prompts).unwrap();
    assert!(grid.exists() && out.join("0001.png").exists());
    let recorded = std::fs::read_to_string(out.join("prompts.txt")).unwrap();
    assert_eq!(
        recorded.lines().collect::<Vec<_>>(),
        prompts.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // Sampling into that folder again with one prompt and one stage leaves none of the old
    // images, and nothing that is not a sample is touched.
    imagen_trainer::sample::write_samples(&out.join("stage-0"), &a[0], &prompts).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    // As a 10,001-prompt run would have left its last image, beside files of the user's whose
    // names no run of that many prompts writes.
    std::fs::write(out.join("prompts.txt"), "a scene\n".repeat(10_001)).unwrap();
    std::fs::write(out.join("10000.png"), b"").unwrap();
    std::fs::write(out.join("123.png"), b"").unwrap();
    std::fs::write(out.join("20240101.png"), b"").unwrap();
    imagen_trainer::sample::clear_previous_samples(&out).unwrap();
    imagen_trainer::sample::write_samples(&out, &a[1].narrow(0, 0, 1), &prompts[..1]).unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "0000.png",
            "123.png",
            "20240101.png",
            "grid.png",
            "index.html",
            "notes.txt",
            "prompts.txt"
        ]
    );
    // No checkpoint for a stage is a clear error.
    let err = imagen_trainer::sample::load_stage(&cfg, &w.run_dir("none"), 0, tch::Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

#[test]
fn finetune_mode_trains_and_checkpoints_the_encoder_with_its_average() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.text.mode = imagen_trainer::text::TextMode::Finetune;
    cfg.text.finetune_lr = Some(1e-3);
    cfg.train.grad_accum = 2;
    let before = imagen_trainer::train::StageModel::new(&cfg, 0, tch::Device::Cpu).unwrap();
    let t5_before: std::collections::BTreeMap<String, tch::Tensor> = before
        .trainable()
        .into_iter()
        .filter(|(n, _)| n.starts_with("t5."))
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    assert!(!t5_before.is_empty(), "the encoder is trainable in finetune mode");
    let out = train(&cfg, options(&w.run_dir("finetune"), 0, 4)).unwrap();
    let ckpt = Checkpoint::open(out.last_checkpoint.as_ref().unwrap()).unwrap();
    // Two micro-batches per step.
    assert_eq!(ckpt.state.samples_seen, 4 * 2 * 4);
    let model: std::collections::BTreeMap<String, tch::Tensor> =
        ckpt.tensors("model").unwrap().into_iter().collect();
    let ema: std::collections::BTreeMap<String, tch::Tensor> =
        ckpt.tensors("ema").unwrap().into_iter().collect();
    let changed = t5_before.iter().filter(|(n, t)| !model[*n].equal(t)).count();
    assert!(changed > 0, "no encoder weight moved");
    for name in t5_before.keys() {
        assert!(ema.contains_key(name), "EMA lacks {name}");
    }
}

#[test]
fn a_run_going_on_under_another_objective_is_refused_but_a_warm_start_may_change_it() {
    let _serial = common::serial();
    let w = common::world();
    let run = w.run_dir("objective");
    train(&w.config, options(&run, 0, 4)).unwrap();
    let mut flipped = w.config.clone();
    flipped.stages[0].diffusion.objective = match flipped.stages[0].diffusion.objective {
        Objective::Eps => Objective::V,
        _ => Objective::Eps,
    };
    let err = train(&flipped, options(&run, 0, 8)).unwrap_err().to_string();
    assert!(err.contains("stages[0].diffusion.objective ("), "{err}");
    assert!(err.contains("--run-dir") && err.contains("step-000000004"), "{err}");
    // Conditioning dropout is a training choice: the run goes on under the new one.
    let mut dropout = w.config.clone();
    dropout.stages[0].diffusion.cond_drop_prob += 0.05;
    assert_eq!(train(&dropout, options(&run, 0, 6)).unwrap().step, 6);
    // The run's own checkpoint named from inside its stage directory is refused alike.
    let flipped_toml = w.path().join("flipped.toml");
    std::fs::write(&flipped_toml, flipped.to_toml()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imagen"))
        .current_dir(run.join("stage-0"))
        .args(["--log-level", "warn", "train", "--config"])
        .arg(&flipped_toml)
        .arg("--run-dir")
        .arg(&run)
        .args(["--max-steps", "8", "--resume", "step-000000004"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stages[0].diffusion.objective ("), "{err}");
    // A new run may start from those weights under the other objective. Stopped before its
    // first step, it saves where it starts, so a requeue goes on from there.
    let warm = w.run_dir("objective-warm");
    let mut opts = options(&warm, 0, 8);
    opts.resume = Resume::Path(run.join("stage-0/step-000000004"));
    opts.stop.raise();
    let out = train(&flipped, opts).unwrap();
    assert!(out.interrupted && out.step == 4);
    assert_eq!(out.last_checkpoint, Some(warm.join("stage-0/step-000000004")));
    assert_eq!(train(&flipped, options(&warm, 0, 8)).unwrap().step, 8);
}

#[test]
fn a_logging_window_ends_at_each_save_so_a_resumed_run_logs_the_same_losses() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.log.every_steps = 3;
    let whole = train(&cfg, options(&w.run_dir("windows-whole"), 0, 8)).unwrap();
    let logged = losses(&whole.stage_dir);
    let steps: Vec<u64> = logged.iter().map(|x| x.0).collect();
    assert_eq!(steps, vec![3, 4, 6, 8], "every third step, and the saves at 4 and 8");
    let run = w.run_dir("windows-resumed");
    train(&cfg, options(&run, 0, 4)).unwrap();
    let resumed = train(&cfg, options(&run, 0, 8)).unwrap();
    assert_eq!(losses(&resumed.stage_dir), logged);
}
