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

#[test]
fn sigkill_then_resume_matches_the_uninterrupted_run_bitwise() {
    let w = common::world();
    let config = w.path().join("e2e.toml");
    let steps = 16;
    let straight = w.run_dir("straight");
    let status = imagen(&config, &straight, steps).status().unwrap();
    assert!(status.success());

    // The killed run writes its checkpoints in the background (the straight one in place): the
    // same bytes either way, and a kill during a write leaves the one before it.
    let killed = w.run_dir("killed");
    let background = |mut cmd: Command| {
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
    assert_eq!(a.len(), steps as usize);
    assert_eq!(a, b, "losses differ after resume");
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
