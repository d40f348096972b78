//! `imagen ablate t5` end to end on the tiny world: both arms train with the same seed and data,
//! are evaluated, and the report, the loss-curve PNG and the side-by-side image are written.

mod common;

use std::path::PathBuf;

use imagen_trainer::ablate::{ablate_t5, AblateOptions, AblationReport, Budget, CURVE_COLOURS};
use imagen_trainer::evaluate::{EvalOptions, Metric};
use imagen_trainer::train::StopFlag;

/// An ablation of the tiny world's config (its embedding cache, `extra` overrides) into `out`.
fn ablation(
    w: &common::World,
    out: &std::path::Path,
    budget: Budget,
    eval: EvalOptions,
    extra: &[&str],
) -> AblateOptions {
    let mut overrides = vec![format!("text.cache_dir={}", w.path().join("cache").display())];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    AblateOptions {
        exe: env!("CARGO_BIN_EXE_imagen").into(),
        config: Some(w.path().join("e2e.toml")),
        overrides,
        out: out.to_owned(),
        stage: 0,
        budget,
        eval,
        stop: StopFlag::default(),
    }
}

#[test]
fn both_arms_train_alike_and_the_report_shows_them_side_by_side() {
    let _serial = common::serial();
    let w = common::world();
    let out = w.path().join("ablation");
    let captions = common::all_captions();
    let prompts = vec![captions[2].clone(), captions[50].clone(), captions[120].clone()];
    let mut eval = EvalOptions::new(PathBuf::new(), prompts.clone(), PathBuf::new());
    eval.metrics = vec![Metric::Conditioning, Metric::ValLoss];
    eval.val_batches = Some(1);
    eval.seed = 1;
    let extra = ["stages.0.diffusion.sampler.steps=3", "text.finetune_lr=1e-3"];
    let opts = ablation(&w, &out, Budget::Steps(5), eval, &extra);
    let report = ablate_t5(&opts).unwrap();
    let names: Vec<&str> = report.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["frozen-cached", "finetune"]);
    for arm in &report.arms {
        assert_eq!(arm.steps, 5, "{}", arm.name);
        assert!(!arm.stopped_by_budget);
        assert_eq!(arm.eval.prompts, prompts);
        assert_eq!(arm.eval.conditioning.as_ref().unwrap().scored, 3);
        assert!(arm.eval.val_loss.as_ref().unwrap().mean.is_finite());
    }
    // Same seed, initial weights, batches and noise: the first step's loss is the same in both
    // arms (the cache holds what the frozen encoder computes); afterwards the encoder trains.
    let first: Vec<f64> = report
        .arms
        .iter()
        .map(|a| common::logged_losses(&a.run_dir.join("stage-0"))[0].1)
        .collect();
    assert!((first[0] - first[1]).abs() < 1e-5 * first[0], "{first:?}");

    let json: AblationReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json.arms.len(), 2);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in
        ["frozen-cached: mean ± std", "finetune: mean ± std", "loss_curves.png", &prompts[1]]
    {
        assert!(md.contains(needle), "{needle}: {md}");
    }

    let curves = image::open(out.join("loss_curves.png")).unwrap().to_rgb8();
    assert_eq!(curves.dimensions(), (800, 500));
    for colour in &CURVE_COLOURS[..2] {
        let n = curves.pixels().filter(|p| p.0 == *colour).count();
        assert!(n > 100, "colour {colour:?}: {n} pixels");
    }

    // A row per prompt, a column per arm: each cell is that arm's sample, upscaled 16 -> 96.
    let grid = image::open(out.join("samples_side_by_side.png")).unwrap().to_rgb8();
    let (cell, pad, header) = (96u32, 4u32, 20u32);
    assert_eq!(grid.height(), header + pad + 3 * (cell + pad));
    for (col, arm) in report.arms.iter().enumerate() {
        for row in 0..3u32 {
            let sample = image::open(arm.run_dir.join(format!("eval/samples/{row:04}.png")))
                .unwrap()
                .to_rgb8();
            let (x, y) = (pad + col as u32 * (cell + pad), header + pad + row * (cell + pad));
            for (sx, sy) in [(0, 0), (7, 9), (15, 15)] {
                assert_eq!(
                    grid.get_pixel(x + sx * 6 + 3, y + sy * 6 + 3),
                    sample.get_pixel(sx, sy),
                    "arm {col} row {row} pixel ({sx}, {sy})"
                );
            }
        }
    }

    // A second run into the same folder is refused rather than mixed.
    let err = ablate_t5(&opts).unwrap_err().to_string();
    assert!(err.contains("already holds a run"), "{err}");
}

/// The processes whose command line names `path`.
fn processes_naming(path: &std::path::Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

#[test]
fn a_stopped_ablation_stops_its_training_child_which_saves() {
    let _serial = common::serial();
    let w = common::world();
    let out = w.path().join("stopped-ablation");
    let eval =
        EvalOptions::new(PathBuf::new(), vec![common::all_captions()[2].clone()], PathBuf::new());
    let opts = ablation(&w, &out, Budget::Steps(1_000_000), eval, &[]);
    let stop = opts.stop.clone();
    let ablation = std::thread::spawn(move || ablate_t5(&opts));
    let first = out.join("frozen-cached/stage-0/step-000000004/state.json");
    let began = std::time::Instant::now();
    while !first.exists() {
        assert!(began.elapsed().as_secs() < 300, "no checkpoint");
        assert!(!ablation.is_finished(), "the ablation ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.raise();
    let err = ablation.join().unwrap().unwrap_err().to_string();
    assert!(err.contains("stopped by a signal") && err.contains("frozen-cached"), "{err}");
    assert!(processes_naming(&out).is_empty(), "{:?}", processes_naming(&out));
    // It saved where it stopped, and the other arm never started.
    let saved = imagen_trainer::checkpoint::latest(&out.join("frozen-cached/stage-0")).unwrap();
    assert!(saved.unwrap().state.step >= 4);
    assert!(!out.join("finetune").exists());
}

#[test]
fn evaluation_options_that_cannot_work_fail_before_any_arm_trains() {
    let _serial = common::serial();
    let w = common::world();
    let prompt = vec![common::all_captions()[2].clone()];
    let missing = w.path().join("no-such-inception.safetensors");
    let mut no_clip = EvalOptions::new(PathBuf::new(), prompt.clone(), PathBuf::new());
    no_clip.metrics = vec![Metric::Clip];
    let mut missing_weights = EvalOptions::new(PathBuf::new(), prompt.clone(), PathBuf::new());
    missing_weights.metrics = vec![Metric::Fid];
    missing_weights.inception = Some(missing.clone());
    missing_weights.reference = Some(w.path().to_owned());
    let mut one_prompt = missing_weights.clone();
    one_prompt.inception = Some(w.path().join("e2e.toml"));
    let cases = [
        (no_clip, "the clip metric needs --clip DIR".to_owned()),
        (missing_weights, format!("--inception {}: not found; export", missing.display())),
        (one_prompt, "needs at least 2 prompts".to_owned()),
    ];
    for (k, (eval, expected)) in cases.into_iter().enumerate() {
        let out = w.path().join(format!("refused-ablation-{k}"));
        let err = ablate_t5(&ablation(&w, &out, Budget::Steps(5), eval, &[])).unwrap_err();
        let err = err.to_string();
        assert!(err.contains(&expected), "{err}");
        assert!(!out.join("frozen-cached").exists(), "an arm started: {err}");
    }
}
