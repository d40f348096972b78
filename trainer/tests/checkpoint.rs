//! Checkpoint directories: atomic, complete, pruned by the retention rule, never holding a NaN,
//! and readable by Python's safetensors.

use std::path::{Path, PathBuf};
use std::process::Command;

use imagen_trainer::checkpoint::{
    self, prune, Checkpoint, CheckpointWriter, RetentionConfig, TrainState,
};
use imagen_trainer::train::Resume;
use tch::{Kind, Tensor};

fn state(step: u64) -> TrainState {
    TrainState {
        version: checkpoint::STATE_VERSION,
        step,
        samples_seen: step * 4,
        data_cursors: vec![serde_json::json!({"epoch": 0, "pos": step})],
        seed: 1,
        nonfinite_skipped: 0,
        nonfinite_in_row: 0,
        imagen_version: "test".into(),
        stage: Some(0),
        text_encoder: None,
        weight_fingerprints: vec![7],
        files: Default::default(),
    }
}

fn weights(v: f32) -> Vec<(String, Tensor)> {
    vec![
        (
            "unet.conv.weight".into(),
            Tensor::full([2, 3], v as f64, (Kind::Float, tch::Device::Cpu)),
        ),
        ("unet.conv.bias".into(), Tensor::from_slice(&[v, -v])),
    ]
}

fn save(dir: &Path, step: u64) -> PathBuf {
    checkpoint::save(dir, &state(step), "[run]\nseed = 1\n", &vec![("model", weights(step as f32))])
        .unwrap()
}

#[test]
fn save_and_open_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), 12);
    assert_eq!(path.file_name().unwrap(), "step-000000012");
    let ckpt = Checkpoint::open(&path).unwrap();
    // What the caller passed, plus the digest of each tensor file.
    assert_eq!(ckpt.state, TrainState { files: ckpt.state.files.clone(), ..state(12) });
    let names: Vec<&String> = ckpt.state.files.keys().collect();
    assert_eq!(names, ["config.toml", "model.safetensors"]);
    let bytes = std::fs::metadata(path.join("model.safetensors")).unwrap().len();
    assert_eq!(ckpt.state.files["model.safetensors"].bytes, bytes);
    assert_eq!(ckpt.config_toml, "[run]\nseed = 1\n");
    let tensors = ckpt.tensors("model").unwrap();
    let bias = tensors.iter().find(|(n, _)| n == "unet.conv.bias").unwrap();
    assert_eq!(Vec::<f32>::try_from(&bias.1).unwrap(), vec![12.0, -12.0]);
    // Nothing temporary is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["step-000000012"]);
}

#[test]
fn latest_passes_over_a_damaged_newer_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1);
    let newer = save(dir.path(), 2);
    std::fs::write(newer.join("state.json"), b"{ truncated").unwrap();
    let latest = checkpoint::latest(dir.path()).unwrap().unwrap();
    assert_eq!(latest.state.step, 1);
    // A half-written temporary directory is never mistaken for a checkpoint.
    std::fs::create_dir(dir.path().join(".tmp-step-000000003-99")).unwrap();
    assert_eq!(checkpoint::list(dir.path()).unwrap().len(), 2);
}

#[test]
fn a_checkpoint_of_a_newer_format_stops_the_search_instead_of_passing_for_damage() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1);
    let newer = save(dir.path(), 2);
    // A later version that renamed a field: this build cannot parse it as its own state.
    let next = checkpoint::STATE_VERSION + 1;
    std::fs::write(newer.join("state.json"), format!("{{\"version\": {next}, \"stage\": {{}}}}"))
        .unwrap();
    let err = checkpoint::latest_intact(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&format!("version {next}")), "{err}");
    assert!(err.contains("step-000000002"), "{err}");
}

#[test]
fn a_tensor_file_changed_after_the_save_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1);
    let newer = save(dir.path(), 2);
    let file = newer.join("model.safetensors");
    let good = std::fs::read(&file).unwrap();

    // Truncated (a partial copy): the newest is passed over on the size alone.
    std::fs::write(&file, &good[..good.len() - 3]).unwrap();
    let err = Checkpoint::open(&newer).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("bytes"), "{err}");
    assert_eq!(checkpoint::latest(dir.path()).unwrap().unwrap().state.step, 1);

    // One byte of a weight flipped, same size: the CRC-32C catches it where the file is read,
    // and a resume takes the checkpoint before it.
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    std::fs::write(&file, &flipped).unwrap();
    let opened = checkpoint::latest(dir.path()).unwrap().unwrap();
    assert_eq!(opened.state.step, 2, "the cheap check cannot see a flipped byte");
    let err = opened.tensors("model").unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("CRC-32C"), "{err}");
    assert_eq!(checkpoint::latest_intact(dir.path()).unwrap().unwrap().state.step, 1);
    for how in ["auto", "latest"] {
        let found = Resume::parse(how).locate(dir.path()).unwrap().unwrap();
        assert_eq!(found.state.step, 1, "--resume {how}");
    }
    let err = Resume::Path(newer.clone()).locate(dir.path()).unwrap_err().to_string();
    assert!(err.contains("CRC-32C"), "{err}");

    // Put back, the newest is whole again.
    std::fs::write(&file, &good).unwrap();
    assert_eq!(checkpoint::latest_intact(dir.path()).unwrap().unwrap().state.step, 2);
}

#[test]
fn checkpoints_newer_than_a_restart_are_set_aside_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    for step in 1..=3 {
        save(dir.path(), step);
    }
    let moved = checkpoint::set_aside_after(dir.path(), 1).unwrap();
    let names: Vec<_> = moved.iter().map(|p| p.file_name().unwrap().to_owned()).collect();
    assert_eq!(names, ["superseded-step-000000002", "superseded-step-000000003"]);
    let steps: Vec<u64> = checkpoint::list(dir.path()).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![1], "set-aside checkpoints are neither resumed from nor pruned");
    assert_eq!(Checkpoint::open(&moved[1]).unwrap().state.step, 3, "kept whole");
    // The new timeline reaches step 2 and starts over again: the name taken gets a suffix.
    save(dir.path(), 2);
    let moved = checkpoint::set_aside_after(dir.path(), 0).unwrap();
    let names: Vec<_> = moved.iter().map(|p| p.file_name().unwrap().to_owned()).collect();
    assert_eq!(names, ["superseded-step-000000001", "superseded-step-000000002-2"]);
    assert!(checkpoint::list(dir.path()).unwrap().is_empty());
}

#[test]
fn what_a_killed_save_left_is_put_right_before_a_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 1);
    save(dir.path(), 3);
    // Killed before its rename: a half-written temporary directory.
    let tmp = dir.path().join(".tmp-step-000000002-4242");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(tmp.join("model.safetensors"), b"half").unwrap();
    // A save of step 3 again, killed between moving the old one aside and moving the new one in.
    std::fs::rename(dir.path().join("step-000000003"), dir.path().join(".old-step-000000003-77"))
        .unwrap();
    // ... and one killed after both renames: the new step 1 is in place, the old one lingers.
    std::fs::create_dir(dir.path().join(".old-step-000000001-78")).unwrap();
    // Not a leftover of ours.
    std::fs::create_dir(dir.path().join(".tmp-notes")).unwrap();

    let done = checkpoint::recover_interrupted_saves(dir.path()).unwrap();
    assert_eq!(done.len(), 3, "{done:?}");
    let steps: Vec<u64> = checkpoint::list(dir.path()).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![1, 3]);
    assert_eq!(checkpoint::latest_intact(dir.path()).unwrap().unwrap().state.step, 3);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".tmp-notes", "step-000000001", "step-000000003"]);
    assert!(checkpoint::recover_interrupted_saves(dir.path()).unwrap().is_empty());
}

#[test]
fn a_background_write_holds_the_weights_of_its_step_whatever_training_does_next() {
    for background in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let retention = RetentionConfig { keep_last: 1, ..Default::default() };
        let mut writer = CheckpointWriter::new(background);
        let live = weights(1.0);
        for step in 1..=3u64 {
            let files =
                vec![("model", live.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect())];
            writer.write(dir.path(), state(step), "x = 1\n", files, &retention).unwrap();
            // Training goes on at once and changes the weights in place.
            tch::no_grad(|| {
                for (_, t) in &live {
                    let _ = t.shallow_clone().fill_(step as f64 + 1.0);
                }
            });
            writer.check().unwrap();
        }
        writer.wait().unwrap();
        let last = writer.last().unwrap().clone();
        assert_eq!(last.file_name().unwrap(), "step-000000003");
        let ckpt = Checkpoint::open(&last).unwrap();
        let bias = ckpt.tensors("model").unwrap().into_iter().find(|(n, _)| n == "unet.conv.bias");
        let bias = Vec::<f32>::try_from(&bias.unwrap().1).unwrap();
        assert_eq!(bias, vec![3.0, 3.0], "background {background}: the values at step 3");
        let steps: Vec<u64> = checkpoint::list(dir.path()).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![3], "pruned after each write");
    }
}

#[test]
fn a_host_copy_that_would_crowd_the_host_memory_is_written_in_place_instead() {
    let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\n\
                   MemAvailable:   20000000 kB\nBuffers:          100 kB\n";
    let available = checkpoint::mem_available_in(meminfo);
    assert_eq!(available, Some(20_000_000 * 1024));
    assert!(checkpoint::snapshot_fits(10_000_000 * 1024, available), "half of it fits");
    assert!(!checkpoint::snapshot_fits(10_000_001 * 1024, available));
    assert!(checkpoint::snapshot_fits(u64::MAX, None), "unknown: allowed");
    assert_eq!(checkpoint::mem_available_in("MemTotal: 1 kB\n"), None);
    // This machine's own /proc/meminfo parses.
    if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
        assert!(checkpoint::mem_available_in(&text).is_some_and(|b| b > 0));
    }
}

#[test]
fn a_failed_background_write_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("not-a-directory");
    std::fs::write(&blocked, b"a file where the run directory should be").unwrap();
    let mut writer = CheckpointWriter::new(true);
    let files = vec![("model", weights(1.0))];
    writer.write(&blocked, state(1), "", files, &RetentionConfig::default()).unwrap();
    let err = writer.wait().unwrap_err().to_string();
    assert!(err.contains("not-a-directory"), "{err}");
    assert!(writer.last().is_none());
}

#[test]
fn imagen_checkpoint_verify_reads_every_file_and_names_the_damaged_one() {
    let run = tempfile::tempdir().unwrap();
    let stage = run.path().join("stage-0");
    save(&stage, 1);
    let newer = save(&stage, 2);
    let verify = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_imagen"))
            .args(["--log-level", "warn", "checkpoint", "verify", "--json"])
            .arg(path)
            .output()
            .unwrap()
    };
    let reports = |out: &std::process::Output| -> Vec<serde_json::Value> {
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    // A run directory: both checkpoints of its stage, whole.
    let out = verify(run.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = reports(&out);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|c| c["ok"] == true && c["files"] == 2), "{r:?}");

    let file = newer.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let out = verify(&stage);
    assert!(!out.status.success(), "a damaged checkpoint fails the command");
    let r = reports(&out);
    assert_eq!((r[0]["step"].as_u64(), r[0]["ok"].as_bool()), (Some(1), Some(true)));
    assert_eq!(r[1]["ok"], false);
    let error = r[1]["error"].as_str().unwrap();
    assert!(error.contains("model.safetensors") && error.contains("CRC-32C"), "{error}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 checkpoint(s) damaged"));

    // The config is checked too: one digit changed is caught.
    let older = stage.join("step-000000001");
    std::fs::write(older.join("config.toml"), "[run]\nseed = 2\n").unwrap();
    let r = reports(&verify(&older));
    let error = r[0]["error"].as_str().unwrap();
    assert!(error.contains("config.toml") && error.contains("CRC-32C"), "{error}");

    // A directory without checkpoints is an error, not an empty success.
    let out = verify(&run.path().join("stage-0/step-000000001/missing"));
    assert!(!out.status.success());
}

#[test]
fn retention_keeps_last_n_and_every_kth() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RetentionConfig { keep_last: 2, keep_every: Some(4), ..Default::default() };
    for step in 1..=8 {
        save(dir.path(), step);
        prune(dir.path(), &cfg).unwrap();
    }
    let kept: Vec<u64> =
        checkpoint::list(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(kept, vec![4, 7, 8]);
}

#[test]
fn a_nan_is_never_saved_and_the_previous_checkpoint_survives() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 5);
    let mut bad = weights(1.0);
    bad.push(("unet.norm.weight".into(), Tensor::from_slice(&[1.0f32, f32::NAN])));
    let err = checkpoint::save(dir.path(), &state(6), "", &vec![("model", bad)]).unwrap_err();
    assert!(err.to_string().contains("unet.norm.weight"), "{err}");
    let kept: Vec<u64> =
        checkpoint::list(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(kept, vec![5]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
}

#[test]
fn saving_the_same_step_again_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), 3);
    let path =
        checkpoint::save(dir.path(), &state(3), "x = 1\n", &vec![("model", weights(9.0))]).unwrap();
    assert_eq!(Checkpoint::open(&path).unwrap().config_toml, "x = 1\n");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn python_safetensors_opens_the_weights() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let python = root.join(".venv-tools/bin/python");
    assert!(python.exists(), "run scripts/python_env.sh (make test does)");
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), 4);
    // The digest in state.json is the standard CRC-32C: a bitwise implementation of the
    // Castagnoli polynomial, checked on the standard check value, recomputes it.
    let script = r#"
import json, sys
from safetensors.numpy import load_file
def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
assert crc32c(b"123456789") == 0xE3069283
t = load_file(sys.argv[1] + "/model.safetensors")
recorded = json.load(open(sys.argv[1] + "/state.json"))["files"]["model.safetensors"]
data = open(sys.argv[1] + "/model.safetensors", "rb").read()
assert recorded == {"bytes": len(data), "crc32c": crc32c(data)}, recorded
print(sorted(t), t['unet.conv.bias'].tolist(), t['unet.conv.weight'].shape)
"#;
    let out = Command::new(python).args(["-c", script]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "['unet.conv.bias', 'unet.conv.weight'] [4.0, -4.0] (2, 3)"
    );
}
