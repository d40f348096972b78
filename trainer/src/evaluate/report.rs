//! The evaluation report: `report.json` (everything, machine-readable) and `report.md` (the
//! metrics table, the sample grid and the prompts).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metric::Metric;
use super::summary::Summary;
use crate::error::{Result, TrainerError};

/// The checkpoint a stage's EMA weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCheckpoint {
    pub stage: usize,
    pub checkpoint: PathBuf,
    pub step: Option<u64>,
}

/// Conditioning accuracy per attribute, over the prompts the scorer could parse. `None` rates
/// when no prompt was a synthetic-scene caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditioningReport {
    pub scored: usize,
    /// Prompts that are not synthetic-scene captions (counted, not scored).
    pub unparsed: usize,
    /// Their indices in the prompt list.
    pub unparsed_prompts: Vec<usize>,
    pub colour: Option<Summary>,
    pub shape: Option<Summary>,
    pub size: Option<Summary>,
    pub position: Option<Summary>,
    /// All four attributes right.
    pub all: Option<Summary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipReport {
    pub weights: PathBuf,
    /// CLIP score (100 * max(cos, 0)) over the samples.
    pub summary: Summary,
    pub per_sample: Vec<f64>,
}

/// FID is a statistic of the whole set: no per-sample spread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidReport {
    pub value: f64,
    pub dims: usize,
    pub samples: usize,
    pub reference: PathBuf,
    /// Images behind the reference statistics (`None` for an .npz).
    pub reference_images: Option<usize>,
    /// More samples than feature dimensions (otherwise the covariance is singular).
    pub reliable: bool,
}

/// Validation loss of the last stage's EMA weights on the held-out shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValLossReport {
    pub stage: usize,
    pub batches: u64,
    /// Over the held-out samples.
    pub summary: Summary,
    pub mean: f64,
    /// Per timestep quarter, t in [0, 0.25) ... [0.75, 1]; `None` for a bucket no sample fell in.
    pub buckets: Vec<Option<f64>>,
    pub bucket_counts: Vec<u64>,
}

/// Everything `imagen eval run` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub stages: Vec<StageCheckpoint>,
    pub seed: i64,
    pub image_side: usize,
    pub prompts: Vec<String>,
    /// Relative to the report's folder.
    pub samples_dir: PathBuf,
    pub grid: PathBuf,
    pub metrics: Vec<Metric>,
    pub conditioning: Option<ConditioningReport>,
    pub clip: Option<ClipReport>,
    pub fid: Option<FidReport>,
    pub val_loss: Option<ValLossReport>,
}

/// One row of a metrics table: a name and its summary (or a single value, for FID).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub summary: Option<Summary>,
    pub value: Option<f64>,
}

/// `report.json` (the value, pretty-printed) and `report.md` in `dir`: the pair every report of
/// `imagen eval run` and `imagen ablate` leaves.
pub fn write_report(dir: &Path, value: &impl Serialize, markdown: &str) -> Result<()> {
    let json = dir.join("report.json");
    let text = serde_json::to_string_pretty(value).expect("report serialises");
    std::fs::write(&json, text + "\n").map_err(io(&json))?;
    let md = dir.join("report.md");
    std::fs::write(&md, markdown).map_err(io(&md))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |source| TrainerError::Io { path: path.to_owned(), source }
}

impl EvalReport {
    /// The report's metrics as table rows, in a fixed order.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut push = |name: &str, summary: Option<Summary>| {
            if let Some(summary) = summary {
                rows.push(Row { name: name.into(), summary: Some(summary), value: None });
            }
        };
        if let Some(c) = &self.conditioning {
            push("conditioning: colour", c.colour);
            push("conditioning: shape", c.shape);
            push("conditioning: size", c.size);
            push("conditioning: position", c.position);
            push("conditioning: all four", c.all);
        }
        if let Some(c) = &self.clip {
            push("CLIP score", Some(c.summary));
        }
        if let Some(v) = &self.val_loss {
            push(&format!("val loss (stage {}, EMA)", v.stage), Some(v.summary));
        }
        if let Some(f) = &self.fid {
            rows.push(Row {
                name: format!("FID ({}-d)", f.dims),
                summary: None,
                value: Some(f.value),
            });
        }
        rows
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_report(dir, self, &self.markdown())
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Evaluation\n\n");
        for c in &self.stages {
            let _ = writeln!(s, "- stage {}: EMA weights of `{}`", c.stage, c.checkpoint.display());
        }
        let _ = writeln!(
            s,
            "- {} prompts, one sample each, seed {}, {}x{} images\n",
            self.prompts.len(),
            self.seed,
            self.image_side,
            self.image_side
        );
        s.push_str(&metrics_table(&[("value", self.rows())]));
        s.push_str(SPREAD_NOTE);
        if let Some(c) = &self.conditioning {
            let _ = writeln!(
                s,
                "\nConditioning accuracy: {} prompts scored, {} not synthetic-scene captions \
                 (not scored).",
                c.scored, c.unparsed
            );
        }
        if let Some(f) = &self.fid {
            let _ = writeln!(
                s,
                "\nFID {:.4} ({}-d features) of {} samples against `{}`{}.",
                f.value,
                f.dims,
                f.samples,
                f.reference.display(),
                if f.reliable { "" } else { " (unreliable: fewer samples than dimensions)" }
            );
        }
        if let Some(v) = &self.val_loss {
            s.push_str("\nValidation loss by timestep bucket (EMA weights):\n\n");
            s.push_str("| t | samples | loss |\n|---|---|---|\n");
            for (i, (b, n)) in v.buckets.iter().zip(&v.bucket_counts).enumerate() {
                let _ = writeln!(
                    s,
                    "| [{:.2}, {:.2}) | {n} | {} |",
                    i as f64 / 4.0,
                    (i + 1) as f64 / 4.0,
                    fmt(b.unwrap_or(f64::NAN))
                );
            }
        }
        let _ = writeln!(s, "\n## Samples\n\n![samples]({})\n", self.grid.display());
        let _ = writeln!(
            s,
            "Prompts, in sample order (the grid shows the first {}, row by row):\n",
            crate::sample::GRID_IMAGES
        );
        for (i, p) in self.prompts.iter().enumerate() {
            let _ = writeln!(s, "{}. {}", i + 1, p.replace('\n', " "));
        }
        s
    }
}

/// How the spread columns are computed; quoted under every metrics table.
pub const SPREAD_NOTE: &str = "\nmean ± std over the samples (sample standard deviation); 95% CI \
of the mean: Wilson score interval for the conditioning rates, mean ± 1.96 std / sqrt(n) \
otherwise. Validation-loss samples are held-out images at fixed timesteps and noise (batches x \
batch size, repeating the held-out set when it is smaller). FID is one number for the whole set.\n";

/// A markdown table with one column group per labelled set of rows (one set per arm).
pub fn metrics_table(columns: &[(&str, Vec<Row>)]) -> String {
    let mut s = String::from("| metric |");
    for (label, _) in columns {
        let _ = write!(s, " {label}: mean ± std | n | 95% CI |");
    }
    s.push_str("\n|---|");
    s.push_str(&"---|---|---|".repeat(columns.len()));
    s.push('\n');
    let names: Vec<String> =
        columns.first().map(|c| c.1.iter().map(|r| r.name.clone()).collect()).unwrap_or_default();
    for name in names {
        let _ = write!(s, "| {name} |");
        for (_, rows) in columns {
            match rows.iter().find(|r| r.name == name) {
                Some(Row { summary: Some(m), .. }) => {
                    let _ = write!(
                        s,
                        " {} ± {} | {} | [{}, {}] |",
                        fmt(m.mean),
                        fmt(m.std),
                        m.n,
                        fmt(m.ci95_low),
                        fmt(m.ci95_high)
                    );
                }
                Some(Row { value: Some(v), .. }) => {
                    let _ = write!(s, " {} | | |", fmt(*v));
                }
                _ => s.push_str(" | | |"),
            }
        }
        s.push('\n');
    }
    s
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "n/a".into()
    }
}
