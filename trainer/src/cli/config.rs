use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use imagen_trainer::config::{parse_override, Config};

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
        let overrides =
            self.set.iter().map(|s| parse_override(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

pub fn run(cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Show(args) => {
            print!("{}", args.load()?.to_toml());
            Ok(())
        }
    }
}
