//! `imagen data inspect` and `imagen data bench` report good samples and skips by reason as JSON.

use std::process::Command;

fn imagen(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_imagen"))
        .args(["--log-level", "error"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn inspect_and_bench_count_good_samples_and_skipped_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let out_s = out.to_str().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_imagen"))
        .args(["--log-level", "error", "data", "synth", "--out", out_s])
        .args([
            "--side",
            "32",
            "--count",
            "20",
            "--shards",
            "2",
            "--heldout",
            "4",
            "--format",
            "both",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let train = out.join("parquet/train");
    std::fs::write(train.join("00002.parquet"), b"not a parquet file").unwrap();
    let train = train.to_str().unwrap();

    let report = imagen(&["data", "inspect", train, "--json", "--examples", "3"]);
    assert_eq!(report["total"]["good"], 20);
    assert_eq!(report["total"]["skipped"]["unreadable_shard"], 1);
    assert_eq!(report["example_captions"].as_array().unwrap().len(), 3);
    assert!(report["shards"][0]["columns"].as_array().unwrap().iter().any(|c| c == "caption"));

    let tars = out.join("wds/train");
    let bench = imagen(&[
        "data",
        "bench",
        tars.to_str().unwrap(),
        "--json",
        "--size",
        "16",
        "--passes",
        "1",
    ]);
    assert_eq!(bench["images"], 20);
    assert_eq!(bench["side"], 16);
    assert!(bench["images_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(bench["stats"]["good"], 20);
}

#[test]
fn inspect_reads_other_layouts_by_their_column_names_and_says_why_a_shard_is_skipped() {
    let hf = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/tests/fixtures/hf_datasets.parquet");
    // Under img2dataset's names: the shard is skipped, and the report says which column is
    // missing, which it has, and what to set.
    let report = imagen(&["data", "inspect", hf, "--json", "--no-decode"]);
    assert_eq!(report["total"]["good"], 0);
    let problems = report["shards"][0]["problems"].as_array().unwrap();
    let problem = problems[0].as_str().unwrap();
    assert!(problem.starts_with("unreadable_shard: no caption column \"caption\""), "{problem}");
    assert!(problem.contains("data.columns.caption"), "{problem}");
    let named = ["--image-column", "image", "--caption-column", "text"];
    let report = imagen(&[&["data", "inspect", hf, "--json", "--side", "16"][..], &named].concat());
    assert_eq!(report["total"]["good"], 3);
    assert!(report["shards"][0]["problems"].as_array().unwrap().is_empty());
    let bench = imagen(
        &[&["data", "bench", hf, "--json", "--size", "16", "--passes", "1"][..], &named].concat(),
    );
    assert_eq!(bench["images"], 3);
}
