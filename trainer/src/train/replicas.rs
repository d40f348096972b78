//! The data-parallel side of a run: joining the job, identical start weights, gradient
//! averaging, reduced figures, and rank 0 speaking for everyone. A single process is a job of
//! one, with every method a no-op.

use std::path::Path;

use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::model::StageModel;
use super::resume::{continues_here, Resume};
use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::dist::env::cuda_index;
use crate::dist::{fingerprint, Dist, GradReducer, WorldInfo};
use crate::error::{Result, TrainerError};
use crate::optim::AdamW;

const MIB: f64 = (1u64 << 20) as f64;

pub struct Replicas {
    dist: Option<Dist>,
    reducer: Option<GradReducer>,
}

impl Replicas {
    /// Joins the job described by the environment (`imagen launch`, torchrun, Slurm), if any.
    /// Workers on CUDA each take the device of their local rank.
    pub fn join(cfg: &Config, device: Device) -> Result<(Self, Device)> {
        let Some(info) = WorldInfo::from_env()? else {
            return Ok((Self { dist: None, reducer: None }, device));
        };
        let device = match device {
            Device::Cuda(_) => {
                Device::Cuda(cuda_index(info.local_rank, tch::Cuda::device_count())?)
            }
            other => other,
        };
        let cuda_device = match device {
            Device::Cuda(i) => Some(i),
            _ => None,
        };
        let dist = Dist::init(info, &cfg.dist, cuda_device)?;
        Ok((Self { dist: Some(dist), reducer: None }, device))
    }

    pub fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, Dist::rank)
    }

    /// This rank cannot go on: every other rank is told why and stops.
    pub fn abort(&mut self, why: &str) {
        if let Some(dist) = &mut self.dist {
            dist.abort(why);
        }
    }

    /// This rank's work ended normally (rank 0 waits for the others to say the same before its
    /// store goes away).
    pub fn finish(mut self) -> Result<()> {
        self.reducer = None;
        self.dist.take().map_or(Ok(()), Dist::finish)
    }

    pub fn world_size(&self) -> usize {
        self.dist.as_ref().map_or(1, Dist::world_size)
    }

    /// Rank 0 writes checkpoints, logs and the progress bar.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// The checkpoint every rank resumes from, and whether it is one of this stage directory's
    /// (a run going on rather than a warm start). Rank 0 chooses (`resume.locate`) and the others
    /// open the same checkpoint, so one written meanwhile cannot split them. A checkpoint of the
    /// stage directory goes by its name, joined to each rank's own `stage_dir`: nodes may mount
    /// the run directory at other paths, and a relative `--run-dir` reads from each rank's
    /// working directory.
    pub fn resume_point(
        &self,
        resume: &Resume,
        stage_dir: &Path,
    ) -> Result<(Option<Checkpoint>, bool)> {
        let located = || {
            let found = resume.locate(stage_dir)?;
            let here = found.as_ref().is_some_and(|c| continues_here(c, stage_dir));
            Ok((found, here))
        };
        let Some(dist) = &self.dist else { return located() };
        if dist.is_main() {
            let found = located();
            let shared = match &found {
                Ok((c, here)) => json!({
                    "name": c.as_ref().and_then(|c| c.dir.file_name()).map(|n| n.to_string_lossy()),
                    "here": here,
                }),
                Err(e) => json!({"error": e.to_string()}),
            };
            dist.share_from_main("resume", &shared.to_string())?;
            return found;
        }
        let shared: Value = serde_json::from_str(&dist.share_from_main("resume", "")?)
            .map_err(|e| TrainerError::Dist(format!("rank 0's resume choice: {e}")))?;
        if let Some(e) = shared["error"].as_str() {
            return Err(TrainerError::Dist(format!("rank 0 could not resume: {e}")));
        }
        let Some(name) = shared["name"].as_str() else { return Ok((None, false)) };
        let here = shared["here"].as_bool() == Some(true);
        let dir = match resume {
            _ if here => stage_dir.join(name),
            // Another run's checkpoint, given on every rank's command line.
            Resume::Path(dir) => dir.clone(),
            _ => {
                return Err(TrainerError::Dist(format!(
                    "rank 0 resumes from {name} outside {}",
                    stage_dir.display()
                )))
            }
        };
        // Rank 0 read every file of it against its digest ([`Resume::locate`]).
        let ckpt = Checkpoint::open(&dir).map(Checkpoint::verified_by_rank_zero)?;
        Ok((Some(ckpt), here))
    }

    /// Every rank's data cursor from the checkpoint: this rank's, refusing a different world
    /// size (each rank's position in its own shards cannot be re-dealt exactly).
    pub fn cursor_of(&self, ckpt: &Checkpoint) -> Result<Option<Value>> {
        let cursors = &ckpt.state.data_cursors;
        if cursors.is_empty() {
            return Ok(None);
        }
        if cursors.len() != self.world_size() {
            return Err(TrainerError::Checkpoint(format!(
                "{} was written by {} rank(s) and this run has {}: each rank's data position is \
                 saved on its own, so an exact resume needs the same world size. To resume the \
                 weights, optimizer and step on this world size with the data stream started \
                 afresh, pass --data-cursor restart",
                ckpt.dir.display(),
                cursors.len(),
                self.world_size()
            )));
        }
        Ok(Some(cursors[self.rank()].clone()))
    }

    /// Rank 0's weights (and moving average) on every rank, and DDP's gradient reducer hooked
    /// on the trained parameters.
    pub fn attach(&mut self, model: &StageModel, cfg: &Config) -> Result<()> {
        let params: Vec<Tensor> = model.trainable().into_iter().map(|(_, t)| t).collect();
        self.attach_stores(&model.vs, &model.ema_vs, &params, cfg)
    }

    /// `attach` for a model held as two VarStores: every variable of `vs` and `ema_vs` takes
    /// rank 0's value, and `params` (trained, the same list in the same order on every rank) get
    /// the gradient reducer.
    pub fn attach_stores(
        &mut self,
        vs: &VarStore,
        ema_vs: &VarStore,
        params: &[Tensor],
        cfg: &Config,
    ) -> Result<()> {
        let Some(dist) = &self.dist else { return Ok(()) };
        let bucket = (cfg.dist.bucket_mb * MIB) as usize;
        // Sorted by name (`StageModel::named`), so every rank broadcasts the same list.
        let vars: Vec<Tensor> = StageModel::named(vs)
            .into_iter()
            .chain(StageModel::named(ema_vs))
            .map(|(_, t)| t)
            .collect();
        tch::no_grad(|| dist.pg.broadcast(&vars.iter().collect::<Vec<_>>(), 0, bucket))?;
        let first = (cfg.dist.first_bucket_mb * MIB) as usize;
        let reducer = GradReducer::new(&dist.pg, params, bucket, first)?;
        tracing::info!(
            "gradients all-reduced in {} bucket(s) of up to {} MiB",
            reducer.buckets,
            cfg.dist.bucket_mb
        );
        self.reducer = Some(reducer);
        Ok(())
    }

    /// Rank 0's optimizer state (moments and step count) on every rank. On a resume rank 0 alone
    /// reads the optimizer file, twice the weights' size in fp32 (16 GB for a 2B-parameter
    /// U-Net): one read from the shared filesystem for the job instead of one per node or rank,
    /// and a broadcast over the group's links instead.
    pub fn share_optimizer_state(&self, opt: &mut AdamW, cfg: &Config) -> Result<()> {
        let Some(dist) = &self.dist else { return Ok(()) };
        let bucket = (cfg.dist.bucket_mb * MIB) as usize;
        tch::no_grad(|| dist.pg.broadcast(&opt.moments(), 0, bucket))?;
        let steps = dist.share_from_main("optimizer-steps", &opt.steps().to_string())?;
        opt.set_steps(steps.parse().map_err(|_| {
            TrainerError::Dist(format!("rank 0 sent {steps:?} as the optimizer's step count"))
        })?);
        Ok(())
    }

    /// The number of gradient buckets, once attached to a group.
    pub fn buckets(&self) -> Option<usize> {
        self.reducer.as_ref().map(|r| r.buckets)
    }

    /// The backend of the group, if any.
    pub fn backend(&self) -> Option<String> {
        self.dist.as_ref().map(|d| format!("{:?}", d.pg.backend))
    }

    /// Call before the backward pass whose gradients are averaged (a step's last micro-batch).
    pub fn before_synced_backward(&self) -> Result<()> {
        self.reducer.as_ref().map_or(Ok(()), GradReducer::prepare_for_backward)
    }

    /// Averages each tensor over the ranks, in place.
    pub fn mean(&self, tensors: &[&Tensor]) -> Result<()> {
        match &self.dist {
            Some(dist) => tch::no_grad(|| dist.pg.all_reduce(tensors, true)),
            None => Ok(()),
        }
    }

    /// Sums each tensor over the ranks, in place.
    pub fn sum(&self, tensors: &[&Tensor]) -> Result<()> {
        match &self.dist {
            Some(dist) => tch::no_grad(|| dist.pg.all_reduce(tensors, false)),
            None => Ok(()),
        }
    }

    /// Rank 0's `value` on every rank (`value` is read on rank 0 only); `key` names it.
    pub fn share_from_main(&self, key: &str, value: &str) -> Result<String> {
        match &self.dist {
            Some(dist) => dist.share_from_main(key, value),
            None => Ok(value.to_owned()),
        }
    }

    /// Refuses to go on when `value` (a digest, say) differs between ranks; rank 0 compares
    /// and names the ranks that differ (its error stops the others through the watchdog).
    pub fn check_same_on_every_rank(&self, what: &str, value: &str) -> Result<()> {
        let Some(dist) = &self.dist else { return Ok(()) };
        let Some(all) = dist.gather_json(&format!("same/{what}"), &json!(value))? else {
            return Ok(());
        };
        let differ: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(_, v)| v.as_str() != Some(value))
            .map(|(r, v)| format!("rank {r} has {v}"))
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(TrainerError::Dist(format!(
            "the ranks disagree on the {what}: rank 0 has {value:?}, {}",
            differ.join(", ")
        )))
    }

    /// Every rank's data cursor and weight fingerprint at `step`, on rank 0. Refuses to go on
    /// when the ranks' weights differ: a checkpoint of one rank would not be the run's.
    pub fn gather_for_checkpoint(
        &self,
        step: u64,
        cursor: Value,
        model: &StageModel,
    ) -> Result<Option<(Vec<Value>, Vec<i64>)>> {
        let mine = fingerprint(&StageModel::named(&model.vs));
        let Some(dist) = &self.dist else { return Ok(Some((vec![cursor], vec![mine]))) };
        let all = dist.gather_json(
            &format!("checkpoint-{step}"),
            &json!({"cursor": cursor, "fingerprint": mine}),
        )?;
        let Some(all) = all else { return Ok(None) };
        let cursors: Vec<Value> = all.iter().map(|v| v["cursor"].clone()).collect();
        let prints: Vec<i64> = all.iter().map(|v| v["fingerprint"].as_i64().unwrap_or(0)).collect();
        if let Some(r) = prints.iter().position(|&p| p != prints[0]) {
            return Err(TrainerError::Dist(format!(
                "at step {step} rank {r}'s weights differ from rank 0's (fingerprints {} vs {}): \
                 the replicas diverged, so no checkpoint is written",
                prints[r], prints[0]
            )));
        }
        Ok(Some((cursors, prints)))
    }
}
