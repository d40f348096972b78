//! Reading a config: file, then `--set` overrides, then typed deserialisation whose errors name
//! the file, the field path and the reason.

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::Config;
use crate::error::{Result, TrainerError};

/// One `--set a.b.c=value` override. The value is read as TOML (`2e-4`, `true`, `[1, 2]`,
/// `"text"`), and as a plain string when it is not valid TOML (`run.name=my-run`).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub path: Vec<String>,
    pub value: Value,
}

/// Parses `a.b.c=value`.
pub fn parse_override(text: &str) -> Result<Override> {
    let bad = |why: &str| TrainerError::Config {
        source_name: "--set".into(),
        message: format!("{text:?}: {why}"),
    };
    let (key, raw) = text.split_once('=').ok_or_else(|| bad("expected KEY=VALUE"))?;
    let path: Vec<String> = key.trim().split('.').map(|s| s.trim().to_owned()).collect();
    if path.iter().any(String::is_empty) {
        return Err(bad("the key has an empty part"));
    }
    let raw = raw.trim();
    let value = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()));
    Ok(Override { path, value })
}

impl Config {
    /// Loads `path` (or the defaults when `None`) with `overrides` applied on top.
    pub fn load(path: Option<&Path>, overrides: &[Override]) -> Result<Config> {
        let (source_name, table) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| TrainerError::Io { path: path.to_owned(), source })?;
                let table = toml::from_str::<Table>(&text).map_err(|e| TrainerError::Config {
                    source_name: path.display().to_string(),
                    message: e.to_string().trim_end().to_owned(),
                })?;
                (path.display().to_string(), table)
            }
            None => ("defaults".to_owned(), Table::new()),
        };
        Self::from_table(&source_name, table, overrides)
    }

    /// Parses TOML text (for tests and embedded presets).
    pub fn from_toml_str(source_name: &str, text: &str, overrides: &[Override]) -> Result<Config> {
        let table = toml::from_str::<Table>(text).map_err(|e| TrainerError::Config {
            source_name: source_name.into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Self::from_table(source_name, table, overrides)
    }

    fn from_table(source_name: &str, mut table: Table, overrides: &[Override]) -> Result<Config> {
        let source_name = if overrides.is_empty() {
            source_name.to_owned()
        } else {
            format!("{source_name} (with --set overrides)")
        };
        // An override into a section the file leaves out edits that section's defaults: a list
        // (`stages.0.unet.dim`) must be there to be indexed.
        let defaults: Table =
            toml::from_str(&Config::default().to_toml()).expect("the defaults round-trip");
        for o in overrides {
            if let Some(first) = o.path.first() {
                if let (false, Some(default)) = (table.contains_key(first), defaults.get(first)) {
                    table.insert(first.clone(), default.clone());
                }
            }
            apply_override(&mut table, o).map_err(|message| TrainerError::Config {
                source_name: source_name.clone(),
                message,
            })?;
        }
        deserialize_with_path(Value::Table(table))
            .map_err(|message| TrainerError::Config { source_name, message })
    }
}

fn apply_override(table: &mut Table, o: &Override) -> std::result::Result<(), String> {
    let dotted = o.path.join(".");
    let last = o.path.len() - 1;
    let mut here = table;
    let mut i = 0;
    while i < last {
        let part = &o.path[i];
        let mut entry = here.entry(part.clone()).or_insert_with(|| Value::Table(Table::new()));
        // `stages.1.unet.dim`: a number after a list indexes into it.
        if let Value::Array(items) = entry {
            let so_far = o.path[..=i].join(".");
            let index: usize = o.path[..last]
                .get(i + 1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("--set {dotted}: `{so_far}` is a list; give an index"))?;
            let len = items.len();
            entry = items.get_mut(index).ok_or_else(|| {
                format!("--set {dotted}: `{so_far}` has {len} entries, no index {index}")
            })?;
            i += 1;
        }
        here = entry.as_table_mut().ok_or_else(|| {
            format!("--set {dotted}: `{}` is not a section", o.path[..=i].join("."))
        })?;
        i += 1;
    }
    here.insert(o.path[last].clone(), o.value.clone());
    Ok(())
}

/// Deserialises, reporting the failing field's dotted path and, for an unknown key, the nearest
/// valid one.
fn deserialize_with_path<T: DeserializeOwned>(value: Value) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        // toml appends "in `section`" lines that repeat what the path already says.
        let full = err.into_inner().to_string();
        let reason = full.lines().next().unwrap_or_default().trim_end().to_owned();
        let hint = unknown_field_hint(&reason).unwrap_or_default();
        if path == "." || path.is_empty() {
            format!("{reason}{hint}")
        } else {
            format!("field `{path}`: {reason}{hint}")
        }
    })
}

/// serde reports "unknown field `x`, expected one of `a`, `b`"; suggest the closest of those.
fn unknown_field_hint(reason: &str) -> Option<String> {
    let rest = reason.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = candidates.iter().map(|c| (strsim::damerau_levenshtein(unknown, c), *c)).min()?;
    let close_enough = best.0 <= (unknown.len().max(best.1.len()) / 2).max(1);
    close_enough.then(|| format!("; did you mean `{}`?", best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, sets: &[&str]) -> String {
        let overrides: Vec<Override> = sets.iter().map(|s| parse_override(s).unwrap()).collect();
        Config::from_toml_str("test.toml", text, &overrides).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::from_toml_str("x", "", &[]).unwrap(), Config::default());
    }

    #[test]
    fn overrides_index_the_default_stages_of_a_file_without_any() {
        let set = [parse_override("stages.0.unet.dim=64").unwrap()];
        let cfg = Config::from_toml_str("x", "[run]\nname = \"a\"\n", &set).unwrap();
        assert_eq!(cfg.stages.len(), Config::default().stages.len());
        assert_eq!(cfg.stages[0].unet.dim, 64);
        assert_eq!(cfg.run.name, "a");
        // Nothing else of the defaults moves.
        let mut expected = Config::default();
        expected.run.name = "a".into();
        expected.stages[0].unet.dim = 64;
        assert_eq!(cfg, expected);
    }

    #[test]
    fn unknown_key_names_file_path_and_nearest_key() {
        let e = err("[run]\nnmae = \"x\"\n", &[]);
        assert!(e.starts_with("test.toml: field `run.nmae`: unknown field `nmae`"), "{e}");
        assert!(e.ends_with("did you mean `name`?"), "{e}");
        let e = err("[lgo]\n", &[]);
        assert!(e.contains("did you mean `log`?"), "{e}");
        // Nothing close: no suggestion.
        let e = err("[run]\nzzzzzzzz = 1\n", &[]);
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn wrong_type_names_field() {
        let e = err("[run]\nseed = \"abc\"\n", &[]);
        assert!(e.contains("field `run.seed`") && e.contains("expected u64"), "{e}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let e = err("[run]\nseed = = 1\n", &[]);
        assert!(e.starts_with("test.toml: ") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn overrides_apply_on_top_of_the_file() {
        let sets =
            [parse_override("run.seed=7").unwrap(), parse_override("run.name=my-run").unwrap()];
        let cfg = Config::from_toml_str("x", "[run]\nseed = 1\nname = \"a\"\n", &sets).unwrap();
        assert_eq!(cfg.run.seed, 7);
        assert_eq!(cfg.run.name, "my-run");
        assert_eq!(cfg.log, crate::config::LogConfig::default());
    }

    #[test]
    fn override_values_are_toml_or_strings() {
        assert_eq!(parse_override("a.b=2e-4").unwrap().value, Value::Float(2e-4));
        assert_eq!(parse_override("a=true").unwrap().value, Value::Boolean(true));
        assert_eq!(parse_override("a=x y").unwrap().value, Value::String("x y".into()));
        assert_eq!(parse_override("a.b=\"q\"").unwrap().path, vec!["a", "b"]);
        assert!(parse_override("novalue").is_err());
        assert!(parse_override("a..b=1").is_err());
    }

    #[test]
    fn override_into_a_scalar_is_refused() {
        let e = err("[run]\nseed = 1\n", &["run.seed.x=1"]);
        assert!(e.contains("`run.seed` is not a section"), "{e}");
        assert!(e.starts_with("test.toml (with --set overrides): "), "{e}");
    }

    #[test]
    fn overrides_index_into_stage_lists() {
        let text = "[[stages]]\n[stages.unet]\ndim = 8\n[[stages]]\n[stages.unet]\ndim = 16\n";
        let sets = [parse_override("stages.1.unet.dim=64").unwrap()];
        let cfg = Config::from_toml_str("x", text, &sets).unwrap();
        assert_eq!(cfg.stages[0].unet.dim, 8);
        assert_eq!(cfg.stages[1].unet.dim, 64);
        let e = err(text, &["stages.5.unet.dim=1"]);
        assert!(e.contains("`stages` has 2 entries, no index 5"), "{e}");
        let e = err(text, &["stages.unet.dim=1"]);
        assert!(e.contains("`stages` is a list; give an index"), "{e}");
        let e = err(text, &["stages.0.unet.dmi=1"]);
        assert!(
            e.contains("field `stages[0].unet.dmi`") && e.contains("did you mean `dim`?"),
            "{e}"
        );
    }

    #[test]
    fn resolved_config_round_trips_through_toml() {
        let cfg = Config::from_toml_str("x", "[run]\nseed = 5\n", &[]).unwrap();
        assert_eq!(Config::from_toml_str("y", &cfg.to_toml(), &[]).unwrap(), cfg);
    }
}
