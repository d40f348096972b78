//! `imagen bench train` through the real binary: alone, and as two workers under `imagen launch`
//! (CPU backend), where it times the gradient all-reduce against the backward pass.

use std::process::Command;

use serde_json::Value;

fn bench(launch: bool) -> Vec<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagen"));
    if launch {
        cmd.args(["launch", "--nproc-per-node", "2", "--"]);
    }
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/tiny.toml");
    let out = cmd
        .args(["--log-level", "warn", "bench", "train", "--config", config])
        .args(["--batch", "2", "--steps", "3", "--warmup", "1", "--json"])
        .args(["--set", "train.threads=1", "--peak-tflops", "0.5", "--spec-tflops", "2"])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::Deserializer::from_str(&stdout).into_iter().map(Result::unwrap).collect()
}

#[test]
fn a_single_process_reports_no_communication() {
    let reports = bench(false);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r["rank"], 0);
    assert!(r["comm"].is_null());
    assert!(r["samples_per_sec"].as_f64().unwrap() > 0.0);
    assert!(r["phases"]["backward"].as_f64().unwrap() > 0.0);
    // MFU over the peak given, and over the specified peak.
    let flops = r["flops_per_sample_train"].as_f64().unwrap();
    let rate = r["samples_per_sec"].as_f64().unwrap();
    let mfu = r["mfu"].as_f64().unwrap();
    assert!((mfu - flops * rate / 0.5e12).abs() <= 1e-9 * mfu, "{r}");
    assert!((r["mfu_spec"].as_f64().unwrap() * 4.0 - mfu).abs() <= 1e-9 * mfu, "{r}");
}

#[test]
fn two_workers_time_the_all_reduce_and_only_rank_0_reports() {
    let reports = bench(true);
    assert_eq!(reports.len(), 1, "rank 1 printed a report too");
    let r = &reports[0];
    assert_eq!(r["rank"], 0);
    let c = &r["comm"];
    assert_eq!(c["world_size"], 2);
    assert_eq!(c["backend"], "CpuStore");
    // The tiny U-Net's 4.6 MB of gradients fit one 25 MiB bucket after the 1 MiB first one.
    assert_eq!(c["buckets"], 2);
    for key in ["backward_synced", "backward_local", "allreduce_alone"] {
        assert!(c[key].as_f64().unwrap() > 0.0, "{key}: {c}");
    }
    let exposed = c["backward_synced"].as_f64().unwrap() - c["backward_local"].as_f64().unwrap();
    assert!((c["exposed"].as_f64().unwrap() - exposed).abs() < 1e-12);
    let overlap = c["overlap"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overlap));
    // Synced steps are what training runs: the reported backward phase is theirs.
    assert_eq!(r["phases"]["backward"], c["backward_synced"]);
}
