//! `imagen ablate t5`: the frozen-cached and the fine-tuned arm of one config, trained with the
//! same seed, data order and budget, evaluated alike, reported side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::plot::{plot, save_png, Series};
use super::report::{AblationReport, ArmReport};
use super::side_by_side::side_by_side;
use crate::config::{parse_override, Config};
use crate::error::{Result, TrainerError};
use crate::evaluate::{evaluate, EvalOptions};
use crate::sample::GRID_IMAGES;
use crate::text::TextMode;
use crate::train::{stage_dir, StopFlag};

/// The two arms, in report order.
pub const ARMS: [TextMode; 2] = [TextMode::FrozenCached, TextMode::Finetune];

/// How long each arm trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// Exactly this many optimizer steps.
    Steps(u64),
    /// Wall-clock minutes of `imagen train` (up to `train.max_steps`); then SIGTERM, which
    /// finishes the step and saves.
    Minutes(f64),
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Steps(n) => write!(f, "{n} steps"),
            Budget::Minutes(m) => write!(f, "{m} minutes"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AblateOptions {
    /// The `imagen` binary that trains each arm (`imagen embed`, `imagen train` as children).
    pub exe: PathBuf,
    /// The config file and `--set` overrides, given to the children as they are.
    pub config: Option<PathBuf>,
    pub overrides: Vec<String>,
    /// Report folder; arm `<mode>` trains into `<out>/<mode>/`.
    pub out: PathBuf,
    /// Stage of the cascade the arms train (0 is the base; earlier stages must exist in the
    /// arm's run directory for a later one).
    pub stage: usize,
    pub budget: Budget,
    /// Evaluation of each arm: prompts, metrics, seed and weights (run_dir and out are set per
    /// arm).
    pub eval: EvalOptions,
    /// Raised by SIGINT or SIGTERM (`StopFlag::on_signals`): the arm training now is stopped
    /// (it saves) and the ablation ends there, with an error.
    pub stop: StopFlag,
}

fn text_mode_name(mode: TextMode) -> &'static str {
    match mode {
        TextMode::FrozenCached => "frozen-cached",
        TextMode::FrozenOnline => "frozen-online",
        TextMode::Finetune => "finetune",
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |source| TrainerError::Io { path: path.to_owned(), source }
}

impl AblateOptions {
    fn command(&self, subcommand: &str, mode: TextMode) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(subcommand);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        for s in &self.overrides {
            cmd.arg("--set").arg(s);
        }
        cmd.arg("--set").arg(format!("text.mode={}", text_mode_name(mode)));
        cmd
    }
}

/// Trains both arms, evaluates them and writes `<out>/report.json`, `<out>/report.md`,
/// `<out>/loss_curves.png` and `<out>/samples_side_by_side.png`.
pub fn ablate_t5(opts: &AblateOptions) -> Result<AblationReport> {
    let overrides = opts.overrides.iter().map(|s| parse_override(s)).collect::<Result<Vec<_>>>()?;
    let cfg = Config::load(opts.config.as_deref(), &overrides)?;
    cfg.stage(opts.stage)?;
    // The evaluation's options fail now, not after the first arm has trained for hours.
    crate::evaluate::check_options(&opts.eval)?;
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    for mode in ARMS {
        let dir = stage_dir(&opts.out.join(text_mode_name(mode)), opts.stage);
        if crate::checkpoint::latest(&dir)?.is_some() {
            return Err(TrainerError::Checkpoint(format!(
                "{} already holds a run: give `imagen ablate t5` a new --out",
                dir.display()
            )));
        }
    }
    let mut arms = Vec::new();
    for mode in ARMS {
        let name = text_mode_name(mode);
        // A signal during the last arm's evaluation (which does not watch for one) ends the
        // ablation here, before the next arm starts.
        stopped_between(&opts.stop, name)?;
        let run_dir = opts.out.join(name);
        if mode == TextMode::FrozenCached {
            // The cache is resumable: an up-to-date one costs a hash of the weights.
            tracing::info!("arm {name}: caching the T5 embeddings of the training captions");
            run_child(opts.command("embed", mode), None, "imagen embed", &opts.stop)?;
        }
        tracing::info!("arm {name}: training stage {} for {}", opts.stage, opts.budget);
        let mut cmd = opts.command("train", mode);
        cmd.arg("--stage").arg(opts.stage.to_string()).arg("--run-dir").arg(&run_dir);
        cmd.args(["--resume", "never"]);
        let limit = match opts.budget {
            Budget::Steps(n) => {
                cmd.arg("--max-steps").arg(n.to_string());
                None
            }
            Budget::Minutes(m) => Some(Duration::from_secs_f64(m * 60.0)),
        };
        let start = Instant::now();
        let stopped = run_child(cmd, limit, &format!("arm {name}'s imagen train"), &opts.stop)?;
        let train_secs = start.elapsed().as_secs_f64();
        let stage_dir = stage_dir(&run_dir, opts.stage);
        let losses = read_losses(&stage_dir)?;
        let steps = crate::checkpoint::latest(&stage_dir)?.map_or(0, |c| c.state.step);

        let mut arm_cfg = cfg.clone();
        arm_cfg.text.mode = mode;
        let mut eval = opts.eval.clone();
        eval.run_dir = run_dir.clone();
        eval.out = run_dir.join("eval");
        eval.checkpoint = None;
        eval.stop_at_stage = Some(opts.stage);
        tracing::info!("arm {name}: evaluating step {steps}");
        let report = evaluate(&arm_cfg, &eval)?;
        arms.push(ArmReport {
            name: name.to_owned(),
            run_dir,
            steps,
            train_secs,
            stopped_by_budget: stopped,
            last_train_loss: losses.last().map(|l| l.1),
            eval: report,
        });
    }

    stopped_between(&opts.stop, "the report")?;
    let series: Vec<Series> = arms
        .iter()
        .map(|a| -> Result<Series> {
            let points = read_losses(&stage_dir(&a.run_dir, opts.stage))?;
            Ok(Series {
                label: a.name.clone(),
                points: points.iter().map(|p| (p.0 as f64, p.1)).collect(),
            })
        })
        .collect::<Result<_>>()?;
    let curves = plot(&series, "T5 ablation: training loss", "step", "train/loss");
    save_png(&curves, &opts.out.join("loss_curves.png"))?;
    // The first prompts only, as a sample grid shows them: an FID's thousands would not fit.
    let shown = opts.eval.prompts.len().min(GRID_IMAGES);
    let columns: Vec<Vec<RgbImage>> = arms
        .iter()
        .map(|a| read_samples(&a.run_dir.join("eval").join(&a.eval.samples_dir), shown))
        .collect::<Result<_>>()?;
    let labels: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
    let grid = side_by_side(&labels, &columns, &opts.eval.prompts[..shown]);
    save_png(&grid, &opts.out.join("samples_side_by_side.png"))?;

    let report = AblationReport {
        stage: opts.stage,
        budget: opts.budget.to_string(),
        seed: cfg.run.seed,
        arms,
        loss_curves: "loss_curves.png".into(),
        samples: "samples_side_by_side.png".into(),
    };
    report.write(&opts.out)?;
    Ok(report)
}

/// Ends the ablation before `next` when a signal came while it was not watching for one.
fn stopped_between(stop: &StopFlag, next: &str) -> Result<()> {
    if stop.is_raised() {
        return Err(TrainerError::Text(format!(
            "stopped by a signal before {next}; the arms' checkpoints stay"
        )));
    }
    Ok(())
}

/// Runs a child to completion, or until `limit`, then SIGTERM and wait (a stopped
/// `imagen train` saves and exits 0). Returns whether the limit stopped it. A raised `stop` is
/// passed on to the child the same way (a terminal's Ctrl-C reached it already: a second signal
/// within `REPEAT_WINDOW` is the same request), and ends the ablation once it has exited.
fn run_child(
    mut cmd: Command,
    limit: Option<Duration>,
    what: &str,
    stop: &StopFlag,
) -> Result<bool> {
    crate::launch::terminated_with_parent(&mut cmd);
    let mut child: Child = cmd.spawn().map_err(io(Path::new(what)))?;
    let start = Instant::now();
    let (mut stopped, mut passed_on) = (false, false);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io(Path::new(what)))? {
            break status;
        }
        let over = limit.is_some_and(|l| start.elapsed() >= l);
        if (over && !stopped) || (stop.is_raised() && !passed_on) {
            // SAFETY: kill(2) on the id of a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            stopped |= over;
            passed_on |= stop.is_raised();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if stop.is_raised() {
        return Err(TrainerError::Text(format!(
            "stopped by a signal: {what} exited ({status}; a training saves first); the ablation \
             ends here (start it again with a new --out)"
        )));
    }
    if !status.success() {
        return Err(TrainerError::Text(format!("{what} failed ({status}); see its output above")));
    }
    Ok(stopped)
}

/// (step, train/loss) of a stage directory's metrics.jsonl.
pub fn read_losses(stage_dir: &Path) -> Result<Vec<(u64, f64)>> {
    let path = stage_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["train/loss"].as_f64()?)))
        .collect())
}

fn read_samples(dir: &Path, n: usize) -> Result<Vec<RgbImage>> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("{i:04}.png"));
            image::open(&path)
                .map(|i| i.to_rgb8())
                .map_err(|e| TrainerError::Io { path, source: std::io::Error::other(e) })
        })
        .collect()
}
