//! TensorBoard files: byte-identical to TensorBoard's own writer, and read back by TensorBoard's
//! EventAccumulator (scripts/read_tensorboard.py, run from the .venv-tools that
//! scripts/python_env.sh makes; `make test` makes it).

use std::path::PathBuf;
use std::process::Command;

use imagen_trainer::logs::tensorboard::{
    tfrecord, Event, EventWriter, SessionLog, Summary, SummaryImage, SummaryValue,
};
use prost::Message;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn scalar(tag: &str, v: f32) -> SummaryValue {
    SummaryValue { tag: tag.into(), simple_value: Some(v), image: None }
}

#[test]
fn records_match_tensorboards_writer_byte_for_byte() {
    let reference =
        std::fs::read(repo_root().join("trainer/tests/fixtures/tensorboard_reference.tfevents"))
            .unwrap();
    let events = [
        Event {
            wall_time: 1700000000.5,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
            session_log: None,
        },
        Event {
            wall_time: 1700000001.0,
            step: 7,
            file_version: None,
            summary: Some(Summary { value: vec![scalar("loss", 0.25), scalar("lr", 1e-4)] }),
            session_log: None,
        },
        Event {
            wall_time: 1700000002.0,
            step: 8,
            file_version: None,
            summary: Some(Summary {
                value: vec![SummaryValue {
                    tag: "samples".into(),
                    simple_value: None,
                    image: Some(SummaryImage {
                        height: 2,
                        width: 3,
                        colorspace: 3,
                        encoded_image_string: b"\x89PNGfake".to_vec(),
                    }),
                }],
            }),
            session_log: None,
        },
        Event {
            wall_time: 1700000003.0,
            step: 5,
            file_version: None,
            summary: None,
            session_log: Some(SessionLog { status: 1 }),
        },
    ];
    let ours: Vec<u8> = events.iter().flat_map(|e| tfrecord(&e.encode_to_vec())).collect();
    assert_eq!(ours, reference);
}

#[test]
fn tensorboard_reads_what_the_writer_wrote() {
    let python = repo_root().join(".venv-tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python_env.sh (make test does)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path()).unwrap();
    for step in 1..=5 {
        w.scalars(step, &[("train/loss", 1.0 / step as f64), ("train/lr", 1e-4)]).unwrap();
    }
    let rgb: Vec<u8> = (0..4 * 6 * 3).map(|i| (i * 7 % 256) as u8).collect();
    w.image(5, "samples/grid", &rgb, 6, 4).unwrap();
    w.flush().unwrap();
    let out = Command::new(&python)
        .arg(repo_root().join("scripts/read_tensorboard.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loss = seen["scalars"]["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), 5);
    assert_eq!(loss[4][0], 5);
    assert!((loss[4][1].as_f64().unwrap() - 0.2).abs() < 1e-6);
    assert_eq!(seen["images"]["samples/grid"][0], serde_json::json!([5, 6, 4]));
}
