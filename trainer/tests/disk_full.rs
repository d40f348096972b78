//! A full disk during a checkpoint save: the run stops with a non-zero exit and an error naming
//! the file and the cause, the previous checkpoint stays complete and resumable, and no temporary
//! directory is left behind. The disk is real: a small tmpfs mounted in a private user and mount
//! namespace (`unshare --user --map-root-user --mount`), so the kernel itself returns ENOSPC.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use imagen_trainer::checkpoint::{self, Checkpoint};

const BIN: &str = env!("CARGO_BIN_EXE_imagen");

/// Runs `script` (sh) as root of a private user and mount namespace; `args` are $1, $2, ...
fn in_namespace(script: &str, args: &[&Path]) -> std::process::Output {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"])
        .args(args)
        .output()
        .unwrap()
}

fn train_args(config: &Path, run_dir: &Path, max_steps: u64) -> Vec<String> {
    [
        "train",
        "--config",
        config.to_str().unwrap(),
        "--stage",
        "0",
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--max-steps",
        &max_steps.to_string(),
        "--set",
        "train.checkpoint.every_steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Bytes a directory tree takes on tmpfs (each file rounded up to 4 KiB pages).
fn pages_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            pages_bytes(&entry.path())
        } else {
            meta.len().div_ceil(4096) * 4096
        };
    }
    total
}

#[test]
fn a_full_disk_during_a_save_stops_the_run_and_keeps_the_previous_checkpoint() {
    let w = common::world();
    let config = w.path().join("e2e.toml");
    let probe = w.path().join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    let probe_out = in_namespace("mount -t tmpfs -o size=64k tmpfs \"$1\"", &[&probe]);
    if !probe_out.status.success() {
        eprintln!(
            "skipping: this kernel does not let an unprivileged user mount a tmpfs in a private \
             namespace ({})",
            String::from_utf8_lossy(&probe_out.stderr).trim()
        );
        return;
    }

    // The size of one checkpoint and of the logs, measured on an ordinary directory.
    let measured = w.run_dir("measure");
    let status = Command::new(BIN).args(train_args(&config, &measured, 2)).status().unwrap();
    assert!(status.success());
    let stage = measured.join("stage-0");
    let ckpt_bytes = pages_bytes(&stage.join("step-000000002"));
    let all_bytes = pages_bytes(&stage);
    // Room for the logs and one checkpoint and a half: the save at step 4 runs out of space.
    let disk_bytes = all_bytes + ckpt_bytes / 2 + 64 * 1024;
    assert!(disk_bytes < all_bytes + ckpt_bytes, "a checkpoint must not fit twice");

    // The training thread writes, or a background thread from a copy: either way the error
    // stops the run.
    for write in ["in-place", "background"] {
        let mount = w.path().join(format!("disk-{write}"));
        let kept = w.path().join(format!("kept-{write}"));
        for d in [&mount, &kept] {
            std::fs::create_dir_all(d).unwrap();
        }
        let run_dir = mount.join("run");
        let mut args = train_args(&config, &run_dir, 6);
        args.extend(["--set".into(), format!("train.checkpoint.write={write}")]);
        // Mount the small disk, train on it, then copy what is left out before the namespace (and
        // the tmpfs with it) goes away.
        let script = format!(
            "mount -t tmpfs -o size={disk_bytes} tmpfs \"$1\" || exit 90\n\
             \"$2\" {} >\"$3/stdout\" 2>\"$3/stderr\"\n\
             echo $? >\"$3/rc\"\n\
             cp -a \"$1/run\" \"$3/run\"",
            args.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ")
        );
        let out = in_namespace(&script, &[&mount, Path::new(BIN), &kept]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let read = |name: &str| std::fs::read_to_string(kept.join(name)).unwrap();
        let rc: i32 = read("rc").trim().parse().unwrap();
        let stderr = read("stderr");
        assert_ne!(rc, 0, "{write}: the run must fail: {stderr}");
        assert!(stderr.contains("No space left on device"), "the cause is named: {stderr}");
        let tmp_name = ".tmp-step-000000004";
        assert!(stderr.contains(tmp_name), "the path is named: {stderr}");

        // What the disk held: the step-2 checkpoint, complete; no step 4; no temporary directory.
        let stage_dir = kept.join("run/stage-0");
        let names: Vec<String> = std::fs::read_dir(&stage_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "temporary dir left: {names:?}");
        let steps: Vec<u64> = checkpoint::list(&stage_dir).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![2]);
        let ckpt = Checkpoint::open(&stage_dir.join("step-000000002")).unwrap();
        assert_eq!(ckpt.state.step, 2);
        let reference = Checkpoint::open(&stage.join("step-000000002")).unwrap();
        for stem in ["model", "ema", "optimizer"] {
            let sorted = |c: &Checkpoint| {
                let mut t = c.tensors(stem).unwrap();
                t.sort_by(|x, y| x.0.cmp(&y.0));
                t
            };
            let (a, b) = (sorted(&ckpt), sorted(&reference));
            assert_eq!(a.len(), b.len(), "{stem}");
            for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
                assert_eq!(na, nb);
                assert!(ta.equal(tb), "{stem}: {na} differs from the uninterrupted run's");
            }
        }
        // And it resumes: on a roomy disk, the run continues from step 2 to step 4.
        let resumed: PathBuf = kept.join("run");
        let status = Command::new(BIN).args(train_args(&config, &resumed, 4)).status().unwrap();
        assert!(status.success());
        let steps: Vec<u64> = checkpoint::list(&stage_dir).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![2, 4]);
    }
}
