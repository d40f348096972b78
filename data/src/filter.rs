//! Metadata filters: the columns each configured threshold needs, and the per-sample test.

use crate::config::FilterConfig;
use crate::reader::SampleMeta;

/// One value a filter reads from a sample's metadata.
type MetaValue = fn(&SampleMeta) -> Option<f64>;

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

    /// The configured filters whose value none of `metas` has (a column of text that is not a
    /// number, or one null throughout): under them every sample would be filtered out.
    pub fn without_values(&self, metas: &[SampleMeta]) -> Vec<&'static str> {
        let side = |m: &SampleMeta| m.original_width.and(m.original_height);
        let checks: [(&'static str, bool, MetaValue); 6] = [
            ("min_original_side", self.min_original_side.is_some(), side),
            ("max_aspect_ratio", self.max_aspect_ratio.is_some(), side),
            ("max_punsafe", self.max_punsafe.is_some(), |m| m.punsafe),
            ("max_pwatermark", self.max_pwatermark.is_some(), |m| m.pwatermark),
            ("min_similarity", self.min_similarity.is_some(), |m| m.similarity),
            ("min_aesthetic", self.min_aesthetic.is_some(), |m| m.aesthetic),
        ];
        checks
            .into_iter()
            .filter(|(_, on, value)| *on && !metas.iter().any(|m| value(m).is_some()))
            .map(|(name, ..)| name)
            .collect()
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
