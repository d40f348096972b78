//! Exact resume through the real binary: a run killed with SIGKILL and resumed ends with the
//! same losses and bitwise the same weights as a run that was never interrupted; SIGTERM
//! finishes the step, saves and exits 0.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn imagen(config: &Path, run_dir: &Path, max_steps: u64) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagen"));
    cmd.args(["--log-level", "warn", "train", "--config"])
        .arg(config)
        .arg("--run-dir")
        .arg(run_dir)
        .args(["--max-steps", &max_steps.to_string()]);
    cmd
}

fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "training exited before {}", path.display());
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last logged loss of every step (a resumed run logs again what the killed one logged).
fn losses(stage_dir: &Path) -> BTreeMap<u64, f64> {
    common::logged_losses(stage_dir).into_iter().collect()
}

fn checkpoint(run: &Path, step: u64) -> PathBuf {
    run.join("stage-0").join(format!("step-{step:09}"))
}

/// Trains `steps` steps straight, and again killed with SIGKILL after its step-4 checkpoint and
/// resumed, under the same extra settings; the two must end bitwise alike, losses included.
fn kill_and_resume_matches_the_uninterrupted_run(name: &str, settings: &[&str]) {
    let w = common::world();
    let config = w.path().join("e2e.toml");
    let steps = 16;
    let with = |mut cmd: Command| {
        for s in settings {
            cmd.args(["--set", s]);
        }
        cmd
    };
    let straight = w.run_dir(&format!("{name}-straight"));
    let status = with(imagen(&config, &straight, steps)).status().unwrap();
    assert!(status.success());

    // The killed run writes its checkpoints in the background (the straight one in place): the
    // same bytes either way, and a kill during a write leaves the one before it.
    let killed = w.run_dir(&format!("{name}-killed"));
    let background = |cmd: Command| {
        let mut cmd = with(cmd);
        cmd.args(["--set", "train.checkpoint.write=background"]);
        cmd
    };
    let mut child = background(imagen(&config, &killed, steps)).spawn().unwrap();
    wait_for(&checkpoint(&killed, 4).join("state.json"), &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!checkpoint(&killed, steps).exists(), "the run finished before it was killed");
    let status = background(imagen(&config, &killed, steps)).status().unwrap();
    assert!(status.success());

    for stem in ["model", "ema", "optimizer"] {
        let file = format!("{stem}.safetensors");
        let a = std::fs::read(checkpoint(&straight, steps).join(&file)).unwrap();
        let b = std::fs::read(checkpoint(&killed, steps).join(&file)).unwrap();
        assert!(a == b, "{file} differs after resume");
    }
    let a = losses(&straight.join("stage-0"));
    let b = losses(&killed.join("stage-0"));
    assert!(a.len() >= (steps / 4) as usize, "{a:?}");
    assert_eq!(a, b, "losses differ after resume");
}

#[test]
fn sigkill_then_resume_matches_the_uninterrupted_run_bitwise() {
    kill_and_resume_matches_the_uninterrupted_run("plain", &[]);
}

#[test]
fn sigkill_then_resume_is_exact_with_a_cosine_decay_accumulation_and_a_warming_ema() {
    // Every part of the state that steps carry: the cosine's position, two micro-batches a step,
    // an EMA whose decay warms up and that updates every third step, and logging windows (every
    // third step) that do not line up with the saves (every fourth).
    kill_and_resume_matches_the_uninterrupted_run(
        "stateful",
        &[
            "train.schedule=cosine",
            "train.grad_accum=2",
            "train.ema.warmup_gamma=1.0",
            "train.ema.warmup_power=0.75",
            "train.ema.update_every=3",
            "train.ema.update_after_step=2",
            "log.every_steps=3",
        ],
    );
}

#[test]
fn sigterm_finishes_the_step_saves_and_exits_zero() {
    let w = common::world();
    let config = w.path().join("e2e.toml");
    let run = w.run_dir("term");
    let mut child = imagen(&config, &run, 100_000).spawn().unwrap();
    wait_for(&checkpoint(&run, 4).join("state.json"), &mut child);
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let latest = imagen_trainer::checkpoint::latest(&run.join("stage-0")).unwrap().unwrap();
    let logged = losses(&run.join("stage-0"));
    // The final checkpoint is at the last completed step.
    assert_eq!(latest.state.step, *logged.keys().max().unwrap());
    assert!(latest.state.step >= 4);
}
