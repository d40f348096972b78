//! Mean and spread of a metric over the evaluation samples.

use serde::{Deserialize, Serialize};

/// z of a two-sided 95% normal interval.
const Z95: f64 = 1.959_963_984_540_054;

/// A metric's mean over `n` samples, its sample standard deviation (n - 1) and a 95% confidence
/// interval of the mean: normal, `mean ± 1.96 std / sqrt(n)`, or Wilson's for rates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    /// NaN (JSON null) for fewer than two samples, as are the interval's ends.
    #[serde(deserialize_with = "nan_if_null")]
    pub std: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub ci95_low: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub ci95_high: f64,
}

/// serde_json writes NaN as null; read it back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Summary {
    /// Summary of per-sample values; NaN spread for fewer than two values.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n < 2 {
            f64::NAN
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        let half = Z95 * std / (n as f64).sqrt();
        Self { n, mean, std, ci95_low: mean - half, ci95_high: mean + half }
    }

    /// Summary of 0/1 outcomes (a rate): mean and std as [`Summary::of`], but the Wilson score
    /// interval (Wilson 1927), which stays inside [0, 1] and is not empty at a rate of 0 or 1.
    pub fn of_bools(values: &[bool]) -> Self {
        let mut s = Self::of(&values.iter().map(|b| f64::from(u8::from(*b))).collect::<Vec<_>>());
        let (n, p, z2) = (s.n as f64, s.mean, Z95 * Z95);
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
        s.ci95_low = centre - half;
        s.ci95_high = centre + half;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_closed_form() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32, sample std sqrt(32 / 7).
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.n, 8);
        assert_eq!(s.mean, 5.0);
        assert!((s.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        let half = 1.959963984540054 * s.std / 8f64.sqrt();
        assert!((s.ci95_high - 5.0 - half).abs() < 1e-12);
        assert!((5.0 - s.ci95_low - half).abs() < 1e-12);
        let r = Summary::of_bools(&[true, false, true, true]);
        assert_eq!(r.mean, 0.75);
        // Wilson interval of 3 in 4: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n).
        assert!((r.ci95_low - 0.3006418).abs() < 1e-6 && (r.ci95_high - 0.9544127).abs() < 1e-6);
        let none = Summary::of_bools(&[false; 10]);
        assert!(none.ci95_low.abs() < 1e-12 && (none.ci95_high - 0.277533).abs() < 1e-6);
        assert!(Summary::of(&[1.0]).std.is_nan());
    }
}
