//! Subcommands, grouped by what a user does. Only commands that work are listed.

mod ablate;
mod bench;
mod checkpoint;
mod config;
mod data;
mod embed;
mod env;
mod eval;
mod eval_run;
mod launch;
mod model;
mod sample;
mod text;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "imagen",
    version,
    about = "Train Imagen-style cascaded text-to-image diffusion models on libtorch.",
    propagate_version = true
)]
struct Cli {
    /// Log filter (tracing syntax, e.g. "debug"); RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark a stage's training step (samples/s, phases, memory, MFU).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check saved checkpoints (`verify`: every file against its recorded size and CRC-32C).
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Inspect configurations.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Synthesise, inspect and benchmark image-caption shards.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Show the libtorch this binary runs on and what it sees (CUDA devices, NCCL, autocast).
    Env(env::EnvArgs),
    /// Cache T5 embeddings of caption shards (for text.mode = "frozen-cached").
    Embed(embed::EmbedArgs),
    /// Inspect model topologies.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Sample images for prompts from a trained cascade (EMA weights).
    Sample(sample::SampleArgs),
    /// Train one stage of the cascade.
    Train(train::TrainArgs),
    /// Run an imagen command (normally `train`) as several data-parallel workers on this node.
    Launch(launch::LaunchArgs),
    /// T5 text encoder tools: encode prompts, make the demo encoder.
    #[command(subcommand)]
    Text(text::TextCommand),
    /// Ablations: `t5` trains a frozen and a fine-tuned text encoder arm and compares them.
    #[command(subcommand)]
    Ablate(ablate::AblateCommand),
    /// Evaluate checkpoints and generated images (FID, conditioning accuracy, reports).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
}

pub fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `imagen ... | head` would panic on its next print; a command line
    // tool ends quietly instead, as others do. (A training killed this way is a kill like any
    // other: its checkpoints are atomic.)
    // SAFETY: restoring a signal's default disposition, before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let launcher = matches!(cli.command, Command::Launch(_));
    imagen_trainer::logging::init(&cli.log_level, !launcher);
    let result = match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
        Command::Checkpoint(cmd) => checkpoint::run(cmd),
        Command::Config(cmd) => config::run(cmd),
        Command::Data(cmd) => data::run(cmd),
        Command::Env(args) => env::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Model(cmd) => model::run(cmd),
        Command::Text(cmd) => text::run(cmd),
        Command::Train(args) => train::run(args),
        Command::Launch(args) => launch::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Eval(cmd) => eval::run(cmd),
        Command::Ablate(cmd) => ablate::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            match err.downcast_ref::<launch::WorkerFailed>() {
                Some(failed) => ExitCode::from(failed.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes, each once: the library's errors already name their cause in their
/// message (`path: No such file or directory`), which `{:#}` would repeat.
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
