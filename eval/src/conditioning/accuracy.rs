//! Conditioning accuracy over many generated images, per attribute.

use serde::{Deserialize, Serialize};

use super::scorer::AttributeMatch;

/// Counts of images whose attribute matched their caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConditioningAccuracy {
    pub samples: usize,
    pub colour: usize,
    pub shape: usize,
    pub size: usize,
    pub position: usize,
    /// Images with all four attributes right.
    pub all: usize,
}

/// Fractions in [0, 1]; 0 for no samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AccuracyRates {
    pub samples: usize,
    pub colour: f64,
    pub shape: f64,
    pub size: f64,
    pub position: f64,
    pub all: f64,
}

impl ConditioningAccuracy {
    pub fn add(&mut self, m: AttributeMatch) {
        self.samples += 1;
        self.colour += usize::from(m.colour);
        self.shape += usize::from(m.shape);
        self.size += usize::from(m.size);
        self.position += usize::from(m.position);
        self.all += usize::from(m.all());
    }

    pub fn rates(&self) -> AccuracyRates {
        let rate = |k: usize| if self.samples == 0 { 0.0 } else { k as f64 / self.samples as f64 };
        AccuracyRates {
            samples: self.samples,
            colour: rate(self.colour),
            shape: rate(self.shape),
            size: rate(self.size),
            position: rate(self.position),
            all: rate(self.all),
        }
    }
}

impl FromIterator<AttributeMatch> for ConditioningAccuracy {
    fn from_iter<I: IntoIterator<Item = AttributeMatch>>(iter: I) -> Self {
        let mut acc = Self::default();
        iter.into_iter().for_each(|m| acc.add(m));
        acc
    }
}
