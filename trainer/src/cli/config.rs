use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use imagen_trainer::config::{parse_override, Config, Override};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved configuration (file, defaults and --set overrides) as TOML.
    Show(ConfigArgs),
}

/// The options every config-taking command shares.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML config file; without it, the defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a field: --set train.lr=2e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<Config> {
        Ok(Config::load(self.config.as_deref(), &self.overrides()?)?)
    }

    /// As [`Self::load`]; without `--config`, the config a trained run recorded instead of the
    /// defaults: `checkpoint`'s own, or that of the newest checkpoint under `run_dir`'s
    /// `stage-N/` folders (the cascade's config, the same in every stage), `run_dir` being
    /// `run.dir/run.name` (from `--set`) when not given. What sampling and evaluation of a run
    /// need, as a saved pipeline reloads from its folder.
    pub fn load_for_run(
        &self,
        run_dir: Option<&Path>,
        checkpoint: Option<&Path>,
    ) -> Result<Config> {
        if self.config.is_some() {
            return self.load();
        }
        let recorded = match (checkpoint, run_dir) {
            (Some(step_dir), _) => Some(step_dir.join("config.toml")),
            (None, Some(run_dir)) => newest_recorded_config(run_dir)?,
            (None, None) => newest_recorded_config(&self.load()?.run.run_dir())?,
        };
        let Some(path) = recorded.filter(|p| p.is_file()) else { return self.load() };
        tracing::info!("config: {} (recorded by the run; --config overrides)", path.display());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Config::from_toml_str(&path.display().to_string(), &text, &self.overrides()?)?)
    }

    fn overrides(&self) -> Result<Vec<Override>> {
        Ok(self.set.iter().map(|s| parse_override(s)).collect::<Result<Vec<_>, _>>()?)
    }
}

/// `config.toml` of the newest checkpoint of any stage under `run_dir` that trained as that
/// stage of its config (not a stage trained under a config of its own and copied in).
fn newest_recorded_config(run_dir: &Path) -> Result<Option<PathBuf>> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let Ok(entries) = std::fs::read_dir(run_dir) else { return Ok(None) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(index) = name.strip_prefix("stage-").and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        let latest = imagen_trainer::checkpoint::latest(&entry.path())?;
        if let Some(ckpt) = latest.filter(|c| c.trained_stage(index) == index) {
            let path = ckpt.dir.join("config.toml");
            let when = std::fs::metadata(&path).and_then(|m| m.modified());
            if let Ok(when) = when {
                if newest.as_ref().is_none_or(|(t, _)| when > *t) {
                    newest = Some((when, path));
                }
            }
        }
    }
    Ok(newest.map(|(_, path)| path))
}

pub fn run(cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Show(args) => {
            print!("{}", args.load()?.to_toml());
            Ok(())
        }
    }
}
