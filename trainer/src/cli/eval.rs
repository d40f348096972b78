//! `imagen eval`: metrics of generated images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use imagen_eval::fid::{side_statistics, FidSide, DEFAULT_BATCH_SIZE};
use imagen_eval::{load_fid_inception, FidDims};
use tch::Device;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Fréchet Inception Distance between two image folders, or a folder and pytorch-fid
    /// statistics (.npz with mu, sigma); the same numbers as pytorch-fid.
    Fid(FidArgs),
    /// Per-attribute accuracy (colour, shape, size, position) of samples for synthetic-scene
    /// captions, scored by a deterministic detector.
    Conditioning(ConditioningArgs),
    /// Sample a trained cascade (EMA weights) for a prompt file, compute metrics
    /// (conditioning, clip, fid, val-loss) and write report.json and report.md.
    Run(super::eval_run::RunArgs),
}

#[derive(Debug, Args)]
pub struct FidArgs {
    /// First image folder (or .npz of statistics).
    a: PathBuf,
    /// Second image folder, or reference statistics in pytorch-fid's .npz layout (mu, sigma).
    b: PathBuf,
    /// pytorch-fid's FID Inception weights as safetensors (InceptionV3([3]).state_dict(), names
    /// unchanged); see README "Evaluation" for the two lines of Python that export them.
    #[arg(long, env = "IMAGEN_FID_INCEPTION")]
    inception: PathBuf,
    /// Feature block, as pytorch-fid's --dims: 64, 192, 768 or 2048.
    #[arg(long, default_value_t = 2048, value_parser = parse_dims)]
    dims: usize,
    /// Write the statistics of A to this .npz (pytorch-fid's layout: mu, sigma).
    #[arg(long, value_name = "OUT.npz")]
    save_stats: Option<PathBuf>,
    /// Images per Inception batch.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Print JSON (FID, dims, image counts) instead of lines.
    #[arg(long)]
    json: bool,
}

fn parse_dims(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|d| FidDims::from_dims(*d).is_some())
        .ok_or_else(|| format!("{s:?}: --dims is one of 64, 192, 768, 2048"))
}

fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("{s:?}: expected auto, cpu, cuda or cuda:N")),
    }
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Fid(args) => fid(args),
        EvalCommand::Conditioning(args) => conditioning(args),
        EvalCommand::Run(args) => super::eval_run::run(args),
    }
}

/// Per-attribute accuracy of a sample folder written by `imagen sample` for synthetic-scene
/// captions (`NNNN.png` and `prompts.txt`).
fn conditioning(args: ConditioningArgs) -> Result<()> {
    use imagen_eval::conditioning::{detect, score, ConditioningAccuracy, SceneAttributes};
    let prompts_path = args.samples.join("prompts.txt");
    let prompts = std::fs::read_to_string(&prompts_path)
        .with_context(|| format!("{}: written by `imagen sample`", prompts_path.display()))?;
    let mut acc = ConditioningAccuracy::default();
    let mut unparsed = 0usize;
    for (i, prompt) in prompts.lines().enumerate() {
        let Some(expected) = SceneAttributes::from_caption(prompt) else {
            unparsed += 1;
            continue;
        };
        let path = args.samples.join(format!("{i:04}.png"));
        let image = image::open(&path).with_context(|| format!("{}", path.display()))?.into_rgb8();
        let matched = score(&image, &expected);
        acc.add(matched);
        if args.details {
            let seen = match detect(&image) {
                Some(d) => format!(
                    "{} {} {} {} (iou {:.2})",
                    d.size.word(),
                    d.colour.word(),
                    d.shape.word(),
                    d.position.word(),
                    d.iou
                ),
                None => "no shape".into(),
            };
            let verdict = if matched.all() { "ok  " } else { "MISS" };
            println!("{verdict} {i:04}.png  asked: {prompt}  saw: {seen}");
        }
    }
    if acc.samples == 0 {
        bail!(
            "{}: no synthetic-scene captions to score ({unparsed} other lines)",
            prompts_path.display()
        );
    }
    let rates = acc.rates();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rates)?);
    } else {
        println!(
            "conditioning accuracy over {} samples: colour {:.0}%, shape {:.0}%, size {:.0}%, position {:.0}%, all four {:.0}%",
            rates.samples,
            100.0 * rates.colour,
            100.0 * rates.shape,
            100.0 * rates.size,
            100.0 * rates.position,
            100.0 * rates.all
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ConditioningArgs {
    /// Folder written by `imagen sample` (NNNN.png and prompts.txt) for synthetic-scene captions.
    samples: PathBuf,
    /// Print the rates as JSON.
    #[arg(long)]
    json: bool,
    /// Also print, per sample, what the caption asked for and what the scorer saw.
    #[arg(long)]
    details: bool,
}

fn fid(args: FidArgs) -> Result<()> {
    let dims = FidDims::from_dims(args.dims).expect("validated by clap");
    if let Device::Cuda(i) = args.device {
        let count = tch::Cuda::device_count();
        if i as i64 >= count {
            bail!("--device cuda:{i}: this machine has {count} CUDA devices");
        }
    }
    let (model, _vs) = load_fid_inception(&args.inception, dims, args.device)?;
    let side = |path: &Path| {
        side_statistics(&model, path, args.batch_size, args.device)
            .with_context(|| format!("statistics of {}", path.display()))
    };
    let a = side(&args.a)?;
    if let Some(out) = &args.save_stats {
        a.stats.write_npz(out)?;
        tracing::info!("wrote the statistics of {} to {}", args.a.display(), out.display());
    }
    let b = side(&args.b)?;
    let value = imagen_eval::fid(&a, &b)?;
    if args.json {
        let report = serde_json::json!({
            "fid": value,
            "dims": args.dims,
            "a": side_json(&args.a, &a),
            "b": side_json(&args.b, &b),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (name, path, s) in [("A", &args.a, &a), ("B", &args.b, &b)] {
            eprintln!("{name}: {}", describe(path, s));
        }
        println!("FID: {value}");
    }
    Ok(())
}

fn side_json(path: &Path, s: &FidSide) -> serde_json::Value {
    serde_json::json!({
        "path": path,
        "images": s.images,
        "skipped_non_images": s.skipped,
        "unreadable_images": s.unreadable,
    })
}

fn describe(path: &Path, s: &FidSide) -> String {
    match s.images {
        None => format!("{} (statistics, {}-d)", path.display(), s.stats.dims),
        Some(n) => format!(
            "{}: {n} images, {} non-image files skipped, {} unreadable images skipped",
            path.display(),
            s.skipped,
            s.unreadable
        ),
    }
}
