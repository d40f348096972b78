//! Data-parallel training through the real binary and `imagen launch`, two workers on loopback
//! with the CPU backend: ranks hold bitwise-identical weights, two ranks of batch B train like
//! one rank of batch 2B (with activation checkpointing and channels-last on one side), a dead
//! worker stops the job, and a stopped two-rank run resumes exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imagen_data::synth::{synthesize, SynthFormat, SynthOptions};
use imagen_trainer::checkpoint::{load_tensors, Checkpoint};
use imagen_trainer::dist::fingerprint;

/// The e2e world, trained on two one-sample shards holding the same sample: whatever the
/// split over ranks, every batch is that sample, so runs differ only in how they are split.
fn same_sample_world() -> (common::World, PathBuf) {
    let w = common::world();
    let data = w.path().join("same");
    let opts = SynthOptions {
        side: 16,
        count: 2,
        shards: 2,
        heldout: 0,
        format: SynthFormat::Parquet,
        ..SynthOptions::default()
    };
    let out = synthesize(&data, &opts).unwrap();
    std::fs::copy(&out.train[0], &out.train[1]).unwrap();
    let mut cfg = w.config.clone();
    cfg.data.shards = out.train.iter().map(|p| p.display().to_string()).collect();
    cfg.data.heldout_shards = Vec::new();
    cfg.train.validate_every = 0;
    cfg.train.sample_every = 0;
    cfg.dist.collective_timeout_secs = 60;
    cfg.dist.rendezvous_timeout_secs = 60;
    let path = w.path().join("dist.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    (w, path)
}

fn train_args(config: &Path, run: &Path, steps: u64, batch: usize) -> Vec<String> {
    [
        "--log-level",
        "warn",
        "train",
        "--config",
        &config.display().to_string(),
        "--run-dir",
        &run.display().to_string(),
        "--max-steps",
        &steps.to_string(),
        "--set",
        &format!("data.batch_size={batch}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn single(config: &Path, run: &Path, steps: u64, batch: usize) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagen"));
    cmd.args(train_args(config, run, steps, batch));
    cmd
}

fn launch(config: &Path, run: &Path, steps: u64, batch: usize) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagen"));
    cmd.args(["--log-level", "warn", "launch", "--nproc-per-node", "2", "--grace-secs", "5", "--"])
        .args(train_args(config, run, steps, batch));
    cmd
}

fn checkpoint(run: &Path, step: u64) -> PathBuf {
    run.join("stage-0").join(format!("step-{step:09}"))
}

fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "exited before {}", path.display());
        assert!(start.elapsed() < Duration::from_secs(300), "timed out on {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn max_weight_diff(a: &Path, b: &Path) -> f64 {
    let sorted = |p: &Path| {
        let mut t = load_tensors(&p.join("model.safetensors")).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    let (a, b) = (sorted(a), sorted(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

#[test]
fn two_ranks_hold_identical_weights_and_train_like_one_rank_with_twice_the_batch() {
    let (w, config) = same_sample_world();
    let steps = 8;
    let one = w.run_dir("one-rank");
    assert!(single(&config, &one, steps, 4).status().unwrap().success());
    // The two-rank run also recomputes its blocks in the backward pass (activation
    // checkpointing), whose inner backward passes fill the reducer's buckets, and keeps its
    // feature maps and convolution weights channels-last (strided gradients, bucket views and
    // AdamW moments, contiguous checkpoints): the result must still be the one-rank run's.
    let two = w.run_dir("two-ranks");
    let mut cmd = launch(&config, &two, steps, 2);
    cmd.args(["--set", "train.activation_checkpointing=true", "--set", "train.channels_last=true"]);
    assert!(cmd.status().unwrap().success());

    // Rank 0 wrote the checkpoint after checking that both ranks' weights are bitwise equal,
    // and the fingerprint is that of the saved weights.
    let ckpt = Checkpoint::open(&checkpoint(&two, steps)).unwrap();
    assert_eq!(ckpt.state.data_cursors.len(), 2);
    let prints = &ckpt.state.weight_fingerprints;
    assert_eq!(prints.len(), 2);
    assert_eq!(prints[0], prints[1]);
    let mut saved = ckpt.tensors("model").unwrap();
    saved.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(prints[0], fingerprint(&saved));
    assert_eq!(ckpt.state.samples_seen, steps * 4);
    // Rank 0 logs the job's data counts, both ranks' loaders summed.
    let good = common::logged(&two.join("stage-0"), "samples_good");
    assert_eq!(good.last(), Some(&(steps, (steps * 4) as f64)));

    // The same samples and per-sample noise, averaged over two ranks instead of one batch:
    // equal up to float summation order. The weights moved far more than that.
    let diff = max_weight_diff(&checkpoint(&one, steps), &checkpoint(&two, steps));
    let moved = max_weight_diff(&checkpoint(&one, steps), &checkpoint(&one, 4));
    eprintln!("2 ranks x 2 vs 1 rank x 4: weights differ by {diff}, moved {moved} in 4 steps");
    assert!(diff < 1e-4, "2 ranks x 2 vs 1 rank x 4: weights differ by {diff}");
    assert!(moved > 100.0 * diff, "weights moved {moved}, differ {diff}");
    let a = common::logged_losses(&one.join("stage-0"));
    let b = common::logged_losses(&two.join("stage-0"));
    assert_eq!(a.len(), b.len());
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "step {s}: loss {x} vs {y}");
    }
}

/// The worker processes the launcher started.
fn workers_of(launcher: &Child) -> Vec<u32> {
    let path = format!("/proc/{0}/task/{0}/children", launcher.id());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A launcher of two workers training for good, once they have saved step 4, and its workers.
fn launched_and_saving(config: &Path, run: &Path) -> (Child, Vec<u32>) {
    let mut launcher = launch(config, run, 100_000, 2).stderr(Stdio::null()).spawn().unwrap();
    wait_for(&checkpoint(run, 4).join("state.json"), &mut launcher);
    let workers = workers_of(&launcher);
    assert_eq!(workers.len(), 2, "{workers:?}");
    (launcher, workers)
}

/// Whether process `pid` still runs (a zombie awaiting its parent's wait does not).
fn running(pid: &u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[test]
fn a_killed_worker_stops_the_other_and_the_launcher_fails() {
    let (w, config) = same_sample_world();
    let (mut launcher, workers) = launched_and_saving(&config, &w.run_dir("killed"));
    // SAFETY: kill(2) on a process this test's launcher started.
    unsafe { libc::kill(workers[1] as i32, libc::SIGKILL) };
    let status = wait_exit(&mut launcher, Duration::from_secs(60));
    // The killed worker's status, as a shell reports it (128 + SIGKILL), is the launcher's.
    assert_eq!(status.code(), Some(137), "the launcher must fail when a worker dies");
    for pid in workers {
        assert!(!running(&pid), "worker {pid} still runs");
    }
}

#[test]
fn workers_whose_launcher_is_killed_finish_their_step_save_and_exit() {
    let (w, config) = same_sample_world();
    let run = w.run_dir("orphaned");
    let (mut launcher, workers) = launched_and_saving(&config, &run);
    // SIGKILL leaves the launcher no chance to forward anything: the kernel's parent-death
    // signal (SIGTERM) tells the workers.
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    let start = Instant::now();
    while workers.iter().any(running) {
        assert!(start.elapsed() < Duration::from_secs(60), "orphaned workers still run");
        std::thread::sleep(Duration::from_millis(50));
    }
    // They stopped together and saved where they stopped: the newest checkpoint is past step 4
    // and off the every-4 grid, or on it if the signal came at a save step.
    let newest = imagen_trainer::checkpoint::list(&run.join("stage-0")).unwrap();
    let (step, _) = newest.last().unwrap();
    assert!(*step > 4, "no save after the launcher died: newest step {step}");
    let ckpt = Checkpoint::open(&checkpoint(&run, *step)).unwrap();
    let prints = &ckpt.state.weight_fingerprints;
    assert!(prints.len() == 2 && prints[0] == prints[1], "{prints:?}");
}

/// A worker as a scheduler would start it (torchrun's variables, nobody watching over the job),
/// with collectives that would wait ten minutes for a missing peer.
fn unwatched_worker(config: &Path, run: &Path, port: u16, rank: usize, extra: &[&str]) -> Worker {
    Worker::spawn(&mut worker_command(config, run, port, rank, 100_000, extra))
}

fn worker_command(
    config: &Path,
    run: &Path,
    port: u16,
    rank: usize,
    steps: u64,
    extra: &[&str],
) -> Command {
    let mut cmd = single(config, run, steps, 2);
    cmd.args(["--set", "dist.collective_timeout_secs=600"])
        .args(["--set", "dist.heartbeat_timeout_secs=3"])
        .args(extra)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::null());
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child whose stderr a thread drains as it comes: a chatty child never blocks on a full pipe
/// while the test waits for it to exit.
struct Worker {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Worker {
    fn spawn(cmd: &mut Command) -> Worker {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
            err
        });
        Worker { child, stderr: Some(stderr) }
    }

    /// All it wrote to stderr: waits for the pipe to close, so call it once it has exited.
    fn stderr(&mut self) -> String {
        self.stderr.take().expect("stderr read twice").join().unwrap()
    }
}

#[test]
fn a_job_suspended_and_resumed_as_a_whole_goes_on() {
    let (w, config) = same_sample_world();
    let run = w.run_dir("suspended");
    let port = free_port();
    let steps = 200;
    let beat = ["--set", "dist.heartbeat_timeout_secs=6"];
    let mut zero = Worker::spawn(&mut worker_command(&config, &run, port, 0, steps, &beat));
    let mut one = Worker::spawn(&mut worker_command(&config, &run, port, 1, steps, &beat));
    wait_for(&checkpoint(&run, 4).join("state.json"), &mut zero.child);
    let signal = |child: &Child, sig: i32| {
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        unsafe { libc::kill(child.id() as i32, sig) };
    };
    // Slurm's suspend, or a paused VM: every rank stopped for longer than the heartbeat timeout
    // (6 s), then resumed, rank 0 a moment before rank 1. Rank 1 stops first, 1.5 s ahead (less
    // than the timeout, and more than rank 0's 1 s between looks, so that rank 0 has seen its
    // last beat): rank 0's first look after the resume finds it silent for 9 s on the clock,
    // and must not take that for a death, since rank 0 was not looking either.
    signal(&one.child, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&zero.child, libc::SIGSTOP);
    assert!(
        !checkpoint(&run, steps).exists(),
        "the run ended before it was suspended: give it more steps"
    );
    std::thread::sleep(Duration::from_secs(8));
    signal(&zero.child, libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(500));
    signal(&one.child, libc::SIGCONT);
    let status = wait_exit(&mut zero.child, Duration::from_secs(120));
    let err = zero.stderr();
    assert!(status.success(), "rank 0 failed after the job was resumed: {err}");
    assert!(wait_exit(&mut one.child, Duration::from_secs(60)).success());
    assert!(checkpoint(&run, steps).join("state.json").exists());
}

#[test]
fn ranks_that_see_different_shard_lists_are_stopped_before_training() {
    let (w, config) = same_sample_world();
    let run = w.run_dir("shard-lists");
    // Rank 1 lists as many shards, but one of them is another file (a listing taken while a
    // dataset was still being written, say).
    let train = w.path().join("same").join("parquet").join("train");
    let mut shards: Vec<PathBuf> = std::fs::read_dir(&train)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    shards.sort();
    let other = w.path().join("other-00001.parquet");
    std::fs::copy(&shards[1], &other).unwrap();
    let list = format!("data.shards=[\"{}\", \"{}\"]", shards[0].display(), other.display());
    let port = free_port();
    let mut zero = unwatched_worker(&config, &run, port, 0, &[]);
    let mut one = unwatched_worker(&config, &run, port, 1, &["--set", &list]);
    let zero_status = wait_exit(&mut zero.child, Duration::from_secs(60));
    let one_status = wait_exit(&mut one.child, Duration::from_secs(60));
    let (zero_err, one_err) = (zero.stderr(), one.stderr());
    assert!(!zero_status.success() && !one_status.success());
    assert!(zero_err.contains("the ranks disagree on the data shard list"), "{zero_err}");
    // Rank 1 hears rank 0's reason through the watchdog.
    assert!(one_err.contains("rank 0 failed: distributed: the ranks disagree"), "{one_err}");
    assert!(!checkpoint(&run, 4).exists());
}

#[test]
fn a_dead_rank_without_a_launcher_stops_the_job_within_the_heartbeat_timeout() {
    let (w, config) = same_sample_world();
    let run = w.run_dir("no-launcher");
    let port = free_port();
    let mut zero = unwatched_worker(&config, &run, port, 0, &[]);
    let mut one = unwatched_worker(&config, &run, port, 1, &[]);
    wait_for(&checkpoint(&run, 4).join("state.json"), &mut zero.child);
    one.child.kill().unwrap();
    one.child.wait().unwrap();
    let killed = Instant::now();
    let status = wait_exit(&mut zero.child, Duration::from_secs(60));
    let waited = killed.elapsed();
    let err = zero.stderr();
    assert!(!status.success(), "rank 0 must fail when rank 1 dies");
    assert!(err.contains("rank 1 has not been heard from"), "{err}");
    eprintln!("rank 0 stopped {waited:?} after rank 1 was killed");
    // Nothing half-written: every checkpoint left reads back against its digests.
    for (_, dir) in imagen_trainer::checkpoint::list(&run.join("stage-0")).unwrap() {
        Checkpoint::open(&dir).unwrap().verify().unwrap();
    }
}

#[test]
fn several_nodes_need_a_master_address_the_others_can_reach() {
    let out = Command::new(env!("CARGO_BIN_EXE_imagen"))
        .args(["launch", "--nproc-per-node", "1", "--nnodes", "2", "--", "train"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach a loopback address"), "{err}");
}

#[test]
fn a_two_rank_run_stopped_by_sigterm_resumes_exactly() {
    let (w, config) = same_sample_world();
    let steps = 12;
    let straight = w.run_dir("straight");
    assert!(launch(&config, &straight, steps, 2).status().unwrap().success());

    // The stopped run's rank 0 writes its checkpoints in the background (the straight run's in
    // place): the same bytes, and the signal's save is waited for before the exit.
    let stopped = w.run_dir("stopped");
    let background = |mut cmd: Command| {
        cmd.args(["--set", "train.checkpoint.write=background"]);
        cmd
    };
    let mut launcher = background(launch(&config, &stopped, steps, 2)).spawn().unwrap();
    wait_for(&checkpoint(&stopped, 4).join("state.json"), &mut launcher);
    // SAFETY: kill(2) on the launcher this test started; it forwards SIGTERM to its workers.
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut launcher, Duration::from_secs(120));
    assert!(status.success(), "workers finish the step, save and exit 0: {status}");
    assert!(!checkpoint(&stopped, steps).exists(), "the run finished before the signal");
    assert!(background(launch(&config, &stopped, steps, 2)).status().unwrap().success());
    for stem in ["model", "ema", "optimizer"] {
        let file = format!("{stem}.safetensors");
        let a = std::fs::read(checkpoint(&straight, steps).join(&file)).unwrap();
        let b = std::fs::read(checkpoint(&stopped, steps).join(&file)).unwrap();
        assert!(a == b, "{file} differs after a two-rank resume");
    }

    // A different world size is refused, naming both sizes.
    let out = single(&config, &stopped, steps + 4, 4).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("written by 2 rank(s) and this run has 1"), "{err}");
    assert!(err.contains("--data-cursor restart"), "{err}");
    // With the stream started afresh, one rank takes the weights, optimizer and step on.
    let out = single(&config, &stopped, steps + 4, 4)
        .args(["--data-cursor", "restart"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(checkpoint(&stopped, steps + 4).join("state.json").is_file());
}

#[test]
fn a_fine_tuned_encoder_is_averaged_with_the_unet_over_accumulation_steps() {
    let (w, config) = same_sample_world();
    let run = w.run_dir("finetune");
    let mut cmd = launch(&config, &run, 4, 2);
    cmd.args([
        "--set",
        "text.mode=finetune",
        "--set",
        "text.finetune_lr=1e-3",
        "--set",
        "train.grad_accum=2",
        // The encoder's and the U-Net's blocks recomputed in the backward passes too.
        "--set",
        "train.activation_checkpointing=true",
    ]);
    assert!(cmd.status().unwrap().success());
    let ckpt = Checkpoint::open(&checkpoint(&run, 4)).unwrap();
    let prints = &ckpt.state.weight_fingerprints;
    assert!(prints.len() == 2 && prints[0] == prints[1], "{prints:?}");
    // 4 steps x 2 micro-batches x 2 ranks x batch 2.
    assert_eq!(ckpt.state.samples_seen, 32);
    let t5 = ckpt.tensors("model").unwrap().into_iter().filter(|(n, _)| n.starts_with("t5."));
    assert!(t5.count() > 0, "the encoder is part of the trained (and reduced) weights");
}

#[test]
fn torchrun_starts_the_workers_and_its_agent_serves_the_store() {
    // torchrun (from the bootstrapped torch wheel) runs its own store at MASTER_PORT and tells
    // its workers so (TORCHELASTIC_USE_AGENT_STORE): rank 0 joins it instead of serving another.
    let torchrun = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/torchrun");
    let (w, config) = same_sample_world();
    let run = w.run_dir("torchrun");
    let steps = 4;
    let out = Command::new(torchrun)
        .args(["--nproc-per-node", "2", "--master-port", &free_port().to_string(), "--no-python"])
        .arg(env!("CARGO_BIN_EXE_imagen"))
        .args(train_args(&config, &run, steps, 2))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "torchrun failed: {stderr}");
    assert!(!stderr.contains("failed to bind"), "rank 0 tried to serve a store: {stderr}");
    let ckpt = Checkpoint::open(&checkpoint(&run, steps)).unwrap();
    assert_eq!(ckpt.state.data_cursors.len(), 2, "both ranks' cursors");
    let prints = &ckpt.state.weight_fingerprints;
    assert_eq!(prints.len(), 2);
    assert_eq!(prints[0], prints[1], "the ranks' weights are bitwise equal");
}

#[test]
fn an_srun_step_trains_as_its_tasks_and_the_batch_script_alone() {
    // What each task of `srun --ntasks 2` sees (no RANK or WORLD_SIZE): rank 0's node from the
    // job's node list; the port set here rather than derived from the job id.
    let (w, config) = same_sample_world();
    let steps = 4;
    let slurm = |cmd: &mut Command, procid: &str, step: bool| {
        cmd.env("SLURM_PROCID", procid)
            .env("SLURM_NTASKS", "2")
            .env("SLURM_LOCALID", procid)
            .env("SLURM_JOB_NODELIST", "localhost")
            .env("SLURM_JOB_ID", "4242")
            .stdout(Stdio::null());
        if step {
            cmd.env("SLURM_STEP_NUM_TASKS", "2").env("SLURM_STEP_ID", "0");
        }
    };
    let run = w.run_dir("srun");
    let port = free_port().to_string();
    let mut tasks: Vec<Worker> = ["0", "1"]
        .iter()
        .map(|procid| {
            let mut cmd = single(&config, &run, steps, 2);
            slurm(cmd.env("MASTER_PORT", &port), procid, true);
            Worker::spawn(&mut cmd)
        })
        .collect();
    for task in &mut tasks {
        let status = wait_exit(&mut task.child, Duration::from_secs(300));
        assert!(status.success(), "{}", task.stderr());
    }
    let ckpt = Checkpoint::open(&checkpoint(&run, steps)).unwrap();
    assert_eq!(ckpt.state.data_cursors.len(), 2, "both tasks' cursors");
    let prints = &ckpt.state.weight_fingerprints;
    assert!(prints.len() == 2 && prints[0] == prints[1], "{prints:?}");

    // The job's batch script (SLURM_PROCID 0 of a 2-task job, but no step) runs alone rather
    // than wait for a rank 1 that nobody starts.
    let run = w.run_dir("batch-script");
    let mut cmd = single(&config, &run, steps, 2);
    slurm(&mut cmd, "0", false);
    let mut alone = Worker::spawn(&mut cmd);
    let status = wait_exit(&mut alone.child, Duration::from_secs(300));
    let err = alone.stderr();
    assert!(status.success(), "{err}");
    assert!(err.contains("not a task of an srun step"), "{err}");
    let ckpt = Checkpoint::open(&checkpoint(&run, steps)).unwrap();
    assert_eq!(ckpt.state.data_cursors.len(), 1, "one process");
}

#[test]
fn embed_takes_its_rank_from_the_launcher_and_needs_no_rendezvous_address() {
    // Rank 1 of a job over two nodes (one worker each) without MASTER_ADDR: embedding splits the
    // shards by rank and never meets the other ranks, so it runs.
    let w = common::world();
    let cache = w.path().join("cache");
    let out = Command::new(env!("CARGO_BIN_EXE_imagen"))
        .args(["--log-level", "warn", "embed", "--config"])
        .arg(w.path().join("e2e.toml"))
        .args(["--set", &format!("text.cache_dir={}", cache.display())])
        .env("RANK", "1")
        .env("WORLD_SIZE", "2")
        .env("LOCAL_WORLD_SIZE", "1")
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("rank 1/2: 1 shards written"), "{stdout}");
}

#[test]
fn ranks_that_reach_the_run_directory_by_other_paths_resume_the_same_checkpoint() {
    let (w, config) = same_sample_world();
    let run = w.run_dir("other-paths");
    std::fs::create_dir_all(&run).unwrap();
    let elsewhere = w.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // Rank 0 names the run directory relative to its working directory, rank 1 by its absolute
    // path from another one, as two nodes that mount the same filesystem at other places.
    let (parent, name) = (run.parent().unwrap(), Path::new(run.file_name().unwrap()));
    let pair = |steps: u64| {
        let port = free_port();
        let mut zero = worker_command(&config, name, port, 0, steps, &[]);
        let mut one = worker_command(&config, &run, port, 1, steps, &[]);
        let mut zero = Worker::spawn(zero.current_dir(parent));
        let mut one = Worker::spawn(one.current_dir(&elsewhere));
        let statuses = [&mut zero, &mut one].map(|w| {
            let status = wait_exit(&mut w.child, Duration::from_secs(120));
            (status.success(), w.stderr())
        });
        for (rank, (ok, err)) in statuses.iter().enumerate() {
            assert!(ok, "rank {rank} failed: {err}");
        }
    };
    pair(4);
    assert!(checkpoint(&run, 4).join("state.json").is_file());
    pair(6);
    assert!(checkpoint(&run, 6).join("state.json").is_file());
}

#[test]
fn a_rank_past_rank_zeros_world_is_refused_at_the_rendezvous() {
    let (w, config) = same_sample_world();
    let run = w.run_dir("bigger-world");
    let port = free_port();
    let mut zero = unwatched_worker(&config, &run, port, 0, &[]);
    let mut one = unwatched_worker(&config, &run, port, 1, &[]);
    // A third worker started as rank 2 of three (its node launched with another --nnodes).
    let mut cmd = worker_command(&config, &run, port, 2, 100_000, &[]);
    let mut stray = Worker::spawn(cmd.env("WORLD_SIZE", "3"));
    let status = wait_exit(&mut stray.child, Duration::from_secs(60));
    let err = stray.stderr();
    assert!(!status.success());
    assert!(err.contains("rank 2 believes the world size is 3") && err.contains("is 2"), "{err}");
    // The job it tried to join goes on.
    wait_for(&checkpoint(&run, 4).join("state.json"), &mut zero.child);
    for worker in [&mut zero, &mut one] {
        worker.child.kill().unwrap();
        worker.child.wait().unwrap();
    }
    // A rank of rank 0's world that believes in another size: rank 0 refuses, and says why to
    // that rank at once.
    let port = free_port();
    let mut zero = unwatched_worker(&config, &w.run_dir("mismatch"), port, 0, &[]);
    let mut cmd = worker_command(&config, &w.run_dir("mismatch"), port, 1, 100_000, &[]);
    let mut one = Worker::spawn(cmd.env("WORLD_SIZE", "3"));
    for worker in [&mut zero, &mut one] {
        assert!(!wait_exit(&mut worker.child, Duration::from_secs(60)).success());
    }
    let (zero_err, one_err) = (zero.stderr(), one.stderr());
    assert!(zero_err.contains("believes the world size is 3, rank 0 that it is 2"), "{zero_err}");
    assert!(one_err.contains("rank 0 stopped the job at the rendezvous: rank 1"), "{one_err}");
}

#[test]
fn a_launcher_in_a_job_step_does_not_label_its_lines_with_a_task_rank() {
    // One launcher per node through srun: the step's task rank (here 1) is its node's, not a
    // worker's, and its lines name the failed worker's rank alone.
    let out = Command::new(env!("CARGO_BIN_EXE_imagen"))
        .args(["launch", "--nproc-per-node", "1", "--", "no-such-subcommand"])
        .env("RANK", "1")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = err.lines().find(|l| l.contains("failed")).expect("no failure line");
    assert!(line.contains("rank 0 failed") && !line.contains("rank 1"), "{err}");
}
