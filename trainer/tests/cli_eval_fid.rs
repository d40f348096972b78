//! `imagen eval fid` end to end on the FID fixture images (eval/tests/fixtures/fid), with random
//! weights for the first two blocks: FID parity itself is tested in the eval crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::write_fid_weights as write_weights;

fn images(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/tests/fixtures/fid/images").join(set)
}

fn imagen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imagen")).args(args).output().unwrap()
}

fn json_fid(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn fid_of_folders_counts_files_and_round_trips_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    write_weights(&weights);
    let w = weights.to_str().unwrap();
    let stats = dir.path().join("a.npz");
    let (a, b) = (images("a"), images("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let common = ["--inception", w, "--dims", "64", "--device", "cpu", "--json"];

    let ab = json_fid(&imagen(
        &[&["eval", "fid", a, b, "--save-stats", stats.to_str().unwrap()], &common[..]].concat(),
    ));
    let fid_ab = ab["fid"].as_f64().unwrap();
    assert!(fid_ab > 0.0, "{ab}");
    assert_eq!(ab["dims"], 64);
    assert_eq!(ab["a"]["images"], 80);
    assert_eq!(ab["a"]["skipped_non_images"], 1);
    assert_eq!(ab["b"]["images"], 80);

    // B against A's saved statistics: the same distance, and A against itself: zero.
    let ba =
        json_fid(&imagen(&[&["eval", "fid", b, stats.to_str().unwrap()], &common[..]].concat()));
    assert!(ba["a"]["images"] == 80 && ba["b"]["images"].is_null(), "{ba}");
    let fid_ba = ba["fid"].as_f64().unwrap();
    assert!(((fid_ba - fid_ab) / fid_ab).abs() < 1e-9, "{fid_ab} vs {fid_ba}");
    let aa =
        json_fid(&imagen(&[&["eval", "fid", a, stats.to_str().unwrap()], &common[..]].concat()));
    assert!(aa["fid"].as_f64().unwrap().abs() < 1e-6 * fid_ab, "{aa}");

    // Plain output, and the warning for fewer images than dimensions.
    let out = imagen(&["eval", "fid", a, b, "--inception", w, "--dims", "192", "--device", "cpu"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("FID: "), "{stdout}");
    assert!(stderr.contains("80 images for 192-d features"), "{stderr}");
    assert!(stderr.contains("1 non-image files skipped"), "{stderr}");
}

#[test]
fn missing_weights_and_bad_dims_are_explained() {
    let (a, b) = (images("a"), images("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = imagen(&["eval", "fid", a, b, "--inception", "/nonexistent.safetensors"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not found") && stderr.contains("save_file("), "{stderr}");

    let out = imagen(&["eval", "fid", a, b, "--inception", "x", "--dims", "100"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("64, 192, 768, 2048"));
}
