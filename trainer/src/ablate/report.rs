//! The ablation report: both arms' metrics with their spread, their loss curves and samples.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::evaluate::{metrics_table, write_report, EvalReport, SPREAD_NOTE};

/// One arm: how it was trained and what its evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    /// The `text.mode` of the arm ("frozen-cached", "finetune").
    pub name: String,
    pub run_dir: PathBuf,
    /// Optimizer steps trained.
    pub steps: u64,
    /// Wall-clock seconds of its `imagen train`.
    pub train_secs: f64,
    /// Whether a wall-clock budget stopped it.
    pub stopped_by_budget: bool,
    /// Mean training loss of the last logged window.
    pub last_train_loss: Option<f64>,
    pub eval: EvalReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationReport {
    pub stage: usize,
    /// "N steps" or "M minutes", the same for every arm.
    pub budget: String,
    pub seed: u64,
    pub arms: Vec<ArmReport>,
    /// Relative to the report's folder.
    pub loss_curves: PathBuf,
    pub samples: PathBuf,
}

impl AblationReport {
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_report(dir, self, &self.markdown())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from("# T5 ablation: frozen (cached) against fine-tuned\n\n");
        let _ = writeln!(
            s,
            "Stage {} trained per arm from the same config, seed {} and data order, budget {}; \
             each arm evaluated with its EMA weights on the same prompts and sampling seed.\n",
            self.stage, self.seed, self.budget
        );
        s.push_str(
            "| arm | steps | train time (s) | last train loss | run |\n|---|---|---|---|---|\n",
        );
        for a in &self.arms {
            let _ = writeln!(
                s,
                "| {} | {}{} | {:.0} | {} | `{}` |",
                a.name,
                a.steps,
                if a.stopped_by_budget { " (time budget)" } else { "" },
                a.train_secs,
                a.last_train_loss.map_or("n/a".into(), |l| format!("{l:.4}")),
                a.run_dir.display()
            );
        }
        s.push_str("\n## Metrics\n\n");
        let columns: Vec<(&str, _)> =
            self.arms.iter().map(|a| (a.name.as_str(), a.eval.rows())).collect();
        s.push_str(&metrics_table(&columns));
        s.push_str(SPREAD_NOTE);
        for a in &self.arms {
            if let Some(c) = &a.eval.conditioning {
                if c.unparsed > 0 {
                    let _ = writeln!(
                        s,
                        "\n{}: {} prompts are not synthetic-scene captions (not scored).",
                        a.name, c.unparsed
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "\n## Training loss\n\n![loss curves]({})\n\n## Samples\n\n![samples]({})\n\n\
             A row per prompt, a column per arm ({}). Prompts:\n",
            self.loss_curves.display(),
            self.samples.display(),
            self.arms.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        if let Some(a) = self.arms.first() {
            for (i, p) in a.eval.prompts.iter().enumerate() {
                let _ = writeln!(s, "{}. {}", i + 1, p.replace('\n', " "));
            }
        }
        s
    }
}
