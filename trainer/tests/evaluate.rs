//! `imagen eval run` on a tiny trained checkpoint: the report's numbers are the metrics computed
//! directly from the written samples, and bad input gives clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use imagen_eval::conditioning::{score, SceneAttributes};
use imagen_trainer::evaluate::{evaluate, EvalOptions, EvalReport, Metric};
use imagen_trainer::train::{
    copy_into, stage_dir, train, validation_loss_of, Resume, StageModel, StopFlag, TrainOptions,
    Weights,
};

fn train_base(cfg: &imagen_trainer::config::Config, run_dir: &Path, steps: u64) {
    train(
        cfg,
        TrainOptions {
            stage: 0,
            run_dir: run_dir.to_owned(),
            max_steps: Some(steps),
            resume: Resume::Auto,
            stop: StopFlag::default(),
            progress: false,
            inject_nonfinite_at: Vec::new(),
            restart_data: false,
        },
    )
    .unwrap();
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/tests/fixtures").join(rel)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn the_report_holds_the_metrics_of_the_written_samples() {
    let _serial = common::serial();
    let w = common::world();
    let mut cfg = w.config.clone();
    cfg.stages[0].diffusion.sampler.steps = 3;
    let run = w.run_dir("eval");
    train_base(&cfg, &run, 4);

    let captions = common::all_captions();
    let mut prompts: Vec<String> = (0..5).map(|i| captions[i * 37].clone()).collect();
    prompts.push("a photograph of a cat".into());
    let out = w.path().join("report");
    let weights = w.path().join("inception.safetensors");
    common::write_fid_weights(&weights);
    let reference = fixture("fid/images/a");
    let mut opts = EvalOptions::new(run.clone(), prompts.clone(), out.clone());
    opts.stop_at_stage = Some(0);
    opts.metrics = Metric::ALL.to_vec();
    opts.seed = 5;
    opts.clip = Some(fixture("clip"));
    opts.inception = Some(weights.clone());
    opts.reference = Some(reference.clone());
    opts.fid_dims = 64;
    opts.val_batches = Some(2);
    let report = evaluate(&cfg, &opts).unwrap();

    // Files: samples, grid, both reports; the JSON reads back as the returned report.
    for f in ["samples/0005.png", "samples/grid.png", "samples/prompts.txt", "report.md"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let json: EvalReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json.prompts, prompts);
    assert_eq!(json.stages[0].step, Some(4));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("![samples](samples/grid.png)") && md.contains("a photograph of a cat"));
    assert!(md.contains("| conditioning: colour |") && md.contains("| FID (64-d) |"), "{md}");
    let sample = |i: usize| image::open(out.join(format!("samples/{i:04}.png"))).unwrap().to_rgb8();

    // Conditioning: five captions scored, the cat counted.
    let c = report.conditioning.as_ref().unwrap();
    assert_eq!((c.scored, c.unparsed, c.unparsed_prompts.clone()), (5, 1, vec![5]));
    let matches: Vec<_> = (0..5)
        .map(|i| score(&sample(i), &SceneAttributes::from_caption(&prompts[i]).unwrap()))
        .collect();
    let rate = |f: fn(&imagen_eval::conditioning::AttributeMatch) -> bool| {
        matches.iter().filter(|m| f(m)).count() as f64 / 5.0
    };
    assert_eq!(c.colour.unwrap().mean, rate(|m| m.colour));
    assert_eq!(c.shape.unwrap().mean, rate(|m| m.shape));
    assert_eq!(c.size.unwrap().mean, rate(|m| m.size));
    assert_eq!(c.position.unwrap().mean, rate(|m| m.position));
    assert_eq!(c.all.unwrap().mean, rate(|m| m.all()));

    // CLIP score of each written sample against its prompt.
    let scorer = imagen_eval::clip::ClipScorer::load(&fixture("clip"), tch::Device::Cpu).unwrap();
    let clip = report.clip.as_ref().unwrap();
    assert_eq!(clip.per_sample.len(), 6);
    for (i, p) in prompts.iter().enumerate() {
        let direct = scorer.score(&sample(i), p).unwrap();
        assert!(close(direct, clip.per_sample[i]), "{i}: {direct} vs {}", clip.per_sample[i]);
    }
    let mean = clip.per_sample.iter().sum::<f64>() / 6.0;
    assert!(close(clip.summary.mean, mean));

    // FID of the sample PNGs (alone in a folder) against the reference folder.
    let only = w.path().join("only-samples");
    std::fs::create_dir_all(&only).unwrap();
    for i in 0..6 {
        let name = format!("{i:04}.png");
        std::fs::copy(out.join("samples").join(&name), only.join(&name)).unwrap();
    }
    let dims = imagen_eval::FidDims::from_dims(64).unwrap();
    let (model, _vs) = imagen_eval::load_fid_inception(&weights, dims, tch::Device::Cpu).unwrap();
    let side = |p: &Path| imagen_eval::side_statistics(&model, p, 50, tch::Device::Cpu).unwrap();
    let direct = imagen_eval::fid(&side(&only), &side(&reference)).unwrap();
    let fid = report.fid.as_ref().unwrap();
    assert!((direct - fid.value).abs() <= 1e-6 * direct, "{direct} vs {}", fid.value);
    assert!(!fid.reliable, "6 samples for 64-d features");

    // Validation loss of the EMA weights: what the training model's moving average gives over
    // the same fixed batches (the sampler loads only those weights, the trainer both copies).
    let ckpt = imagen_trainer::checkpoint::latest(&stage_dir(&run, 0)).unwrap().unwrap();
    let model = StageModel::new(&cfg, 0, tch::Device::Cpu).unwrap();
    copy_into(&ckpt.tensors("ema").unwrap(), &model.ema_vs, &ckpt.dir).unwrap();
    let val =
        validation_loss_of(&model, Weights::Ema, &cfg.data, 2, tch::Device::Cpu).unwrap().unwrap();
    let v = report.val_loss.as_ref().unwrap();
    assert_eq!(v.mean, val.mean);
    assert_eq!(v.summary.n, 8);
    assert_eq!(v.bucket_counts, val.bucket_counts);
    assert!(close(v.summary.mean, val.mean));
}

fn imagen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imagen")).args(args).output().unwrap()
}

#[test]
fn the_cli_evaluates_a_step_directory_and_refuses_missing_weights() {
    let _serial = common::serial();
    let w = common::world();
    let run = w.run_dir("cli");
    let mut cfg = w.config.clone();
    cfg.stages[0].diffusion.sampler.steps = 2;
    cfg.train.checkpoint.every_steps = 2;
    train_base(&cfg, &run, 4);
    let config = w.path().join("cfg.toml");
    std::fs::write(&config, cfg.to_toml()).unwrap();
    let prompts = w.path().join("prompts.txt");
    std::fs::write(&prompts, format!("{}\nnot a scene\n", common::all_captions()[9])).unwrap();
    let out = w.path().join("cli-report");
    let step2 = run.join("stage-0/step-000000002");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["eval", "run", "--config", config.to_str().unwrap(), "--prompts"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(prompts.display().to_string());
        a.extend(["--out".into(), out.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let ok = Command::new(env!("CARGO_BIN_EXE_imagen"))
        .args(args(&["--checkpoint", step2.to_str().unwrap(), "--json", "--val-batches", "1"]))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["stages"][0]["step"], 2);
    assert_eq!(report["conditioning"]["scored"], 1);
    assert_eq!(report["conditioning"]["unparsed"], 1);
    assert_eq!(report["val_loss"]["summary"]["n"], 4);

    let no_clip = imagen(
        &args(&["--run-dir", run.to_str().unwrap(), "--metrics", "clip"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let err = String::from_utf8_lossy(&no_clip.stderr);
    assert!(!no_clip.status.success() && err.contains("--clip DIR"), "{err}");
    let no_inception = Command::new(env!("CARGO_BIN_EXE_imagen"))
        .args(args(&["--metrics", "fid", "--reference", "x"]))
        .env_remove("IMAGEN_FID_INCEPTION")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&no_inception.stderr);
    assert!(err.contains("pt_inception-2015-12-05.safetensors"), "{err}");
    let both = imagen(
        &args(&["--checkpoint", step2.to_str().unwrap(), "--stop-at-stage", "0"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let err = String::from_utf8_lossy(&both.stderr);
    assert!(!both.status.success() && err.contains("give one"), "{err}");
    let bad =
        imagen(&args(&["--metrics", "fid,nope"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("one of conditioning, clip, fid, val-loss")
    );

    // Without --config, sampling a run takes the config its checkpoints recorded (not the
    // defaults, whose U-Net would not fit the weights).
    let samples = w.path().join("cli-samples");
    let (run_arg, out_arg) = (run.to_str().unwrap(), samples.to_str().unwrap());
    let caption = &common::all_captions()[9];
    let sampled = imagen(&[
        "sample",
        "--run-dir",
        run_arg,
        "--prompt",
        caption,
        "--out",
        out_arg,
        "--stop-at-stage",
        "0",
    ]);
    assert!(sampled.status.success(), "{}", String::from_utf8_lossy(&sampled.stderr));
    assert!(samples.join("0000.png").is_file());
    // So does a run named by `run.dir` and `run.name`.
    let named = w.path().join("named-samples");
    let (dir, name) = (run.parent().unwrap().to_str().unwrap(), run.file_name().unwrap());
    let sampled = imagen(&[
        "sample",
        "--set",
        &format!("run.dir={dir}"),
        "--set",
        &format!("run.name={}", name.to_str().unwrap()),
        "--prompt",
        caption,
        "--out",
        named.to_str().unwrap(),
        "--stop-at-stage",
        "0",
    ]);
    assert!(sampled.status.success(), "{}", String::from_utf8_lossy(&sampled.stderr));
    assert!(named.join("0000.png").is_file());
}
