//! The metrics `imagen eval run` can compute.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One metric of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Per-attribute accuracy on synthetic-scene captions (other prompts are counted, not scored).
    Conditioning,
    /// CLIP score of each sample against its prompt (needs CLIP weights).
    Clip,
    /// FID of the samples against reference images or statistics (needs Inception weights).
    Fid,
    /// Validation loss of the last stage's EMA weights on the held-out shards, by timestep bucket.
    ValLoss,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Conditioning, Metric::Clip, Metric::Fid, Metric::ValLoss];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Conditioning => "conditioning",
            Metric::Clip => "clip",
            Metric::Fid => "fid",
            Metric::ValLoss => "val-loss",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("{s:?}: a metric is one of conditioning, clip, fid, val-loss"))
    }
}
