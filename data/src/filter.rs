//! Metadata filters: the columns each configured threshold needs, and the per-sample test.

use crate::config::FilterConfig;
use crate::reader::SampleMeta;

/// One value a filter reads from a sample's metadata.
type MetaValue = fn(&SampleMeta) -> Option<f64>;

/// A threshold of `[data.filters]`: the columns it reads (each entry: any one of its names) and
/// where its value is in a sample's metadata (both sides, for the side and aspect filters).
struct Filter {
    name: &'static str,
    columns: &'static [&'static [&'static str]],
    value: MetaValue,
}

const SIDES: &[&[&str]] = &[&["original_width"], &["original_height"]];

const FILTERS: [Filter; 6] = [
    Filter {
        name: "min_original_side",
        columns: SIDES,
        value: |m| m.original_width.and(m.original_height),
    },
    Filter {
        name: "max_aspect_ratio",
        columns: SIDES,
        value: |m| m.original_width.and(m.original_height),
    },
    Filter { name: "max_punsafe", columns: &[&["punsafe"]], value: |m| m.punsafe },
    Filter { name: "max_pwatermark", columns: &[&["pwatermark"]], value: |m| m.pwatermark },
    Filter { name: "min_similarity", columns: &[&["similarity"]], value: |m| m.similarity },
    Filter {
        name: "min_aesthetic",
        columns: &[&["aesthetic", "AESTHETIC_SCORE"]],
        value: |m| m.aesthetic,
    },
];

impl FilterConfig {
    /// The threshold named `name`, when configured.
    fn limit(&self, name: &str) -> Option<f64> {
        match name {
            "min_original_side" => self.min_original_side,
            "max_aspect_ratio" => self.max_aspect_ratio,
            "max_punsafe" => self.max_punsafe,
            "max_pwatermark" => self.max_pwatermark,
            "min_similarity" => self.min_similarity,
            "min_aesthetic" => self.min_aesthetic,
            _ => None,
        }
    }

    fn configured(&self) -> impl Iterator<Item = &'static Filter> + '_ {
        FILTERS.iter().filter(|f| self.limit(f.name).is_some())
    }

    /// For each configured threshold, the column(s) it reads (any one of them suffices).
    pub fn required_columns(&self) -> Vec<(&'static str, &'static [&'static str])> {
        self.configured().flat_map(|f| f.columns.iter().map(|c| (f.name, *c))).collect()
    }

    /// The configured filters whose value none of `metas` has (a column of text that is not a
    /// number, or one null throughout): under them every sample would be filtered out.
    pub fn without_values(&self, metas: &[SampleMeta]) -> Vec<&'static str> {
        self.configured()
            .filter(|f| !metas.iter().any(|m| (f.value)(m).is_some()))
            .map(|f| f.name)
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
