//! Metadata filters: the columns each configured threshold needs, and the per-sample test.

use crate::config::FilterConfig;
use crate::reader::SampleMeta;

impl FilterConfig {
    /// For each configured threshold, the column(s) it reads (any one of them suffices).
    pub fn required_columns(&self) -> Vec<(&'static str, &'static [&'static str])> {
        let mut need: Vec<(&'static str, &'static [&'static str])> = Vec::new();
        if self.min_original_side.is_some() {
            need.push(("min_original_side", &["original_width"]));
            need.push(("min_original_side", &["original_height"]));
        }
        if self.max_aspect_ratio.is_some() {
            need.push(("max_aspect_ratio", &["original_width"]));
            need.push(("max_aspect_ratio", &["original_height"]));
        }
        if self.max_punsafe.is_some() {
            need.push(("max_punsafe", &["punsafe"]));
        }
        if self.max_pwatermark.is_some() {
            need.push(("max_pwatermark", &["pwatermark"]));
        }
        if self.min_similarity.is_some() {
            need.push(("min_similarity", &["similarity"]));
        }
        if self.min_aesthetic.is_some() {
            need.push(("min_aesthetic", &["aesthetic", "AESTHETIC_SCORE"]));
        }
        need
    }

    /// Whether a sample passes every configured threshold (a missing value fails).
    pub fn passes(&self, m: &SampleMeta) -> bool {
        let at_least =
            |limit: Option<f64>, v: Option<f64>| limit.is_none_or(|l| v.is_some_and(|v| v >= l));
        let at_most =
            |limit: Option<f64>, v: Option<f64>| limit.is_none_or(|l| v.is_some_and(|v| v <= l));
        let short = match (m.original_width, m.original_height) {
            (Some(w), Some(h)) => Some(w.min(h)),
            _ => None,
        };
        let aspect = match (m.original_width, m.original_height) {
            (Some(w), Some(h)) if w.min(h) > 0.0 => Some(w.max(h) / w.min(h)),
            _ => None,
        };
        at_least(self.min_original_side, short)
            && at_most(self.max_aspect_ratio, aspect)
            && at_most(self.max_punsafe, m.punsafe)
            && at_most(self.max_pwatermark, m.pwatermark)
            && at_least(self.min_similarity, m.similarity)
            && at_least(self.min_aesthetic, m.aesthetic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_missing_values() {
        let f = FilterConfig {
            min_original_side: Some(256.0),
            max_aspect_ratio: Some(2.0),
            max_punsafe: Some(0.5),
            ..Default::default()
        };
        let ok = SampleMeta {
            original_width: Some(512.0),
            original_height: Some(300.0),
            punsafe: Some(0.1),
            ..Default::default()
        };
        assert!(f.passes(&ok));
        assert!(!f.passes(&SampleMeta { original_height: Some(200.0), ..ok.clone() }));
        assert!(!f.passes(&SampleMeta { original_width: Some(900.0), ..ok.clone() }));
        assert!(!f.passes(&SampleMeta { punsafe: Some(0.9), ..ok.clone() }));
        assert!(!f.passes(&SampleMeta { punsafe: None, ..ok.clone() }));
        assert!(FilterConfig::default().passes(&SampleMeta::default()));
        assert_eq!(f.required_columns().len(), 5);
    }
}
