use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use imagen_trainer::t5::demo::{make_demo, DemoSpec};
use imagen_trainer::t5::{load::load_weights, Freeze, T5Config, T5Encoder, T5Tokenizer};
use imagen_trainer::text::{encode_captions, prompts::read_prompts};
use imagen_trainer::train::visible_cuda;
use tch::{nn, Device, Kind, Tensor};

#[derive(Debug, Subcommand)]
pub enum TextCommand {
    /// Encode the prompts of a file (one per line) with a T5 folder; writes `embeddings`
    /// (n x max_length x d_model, f32) and `mask` (n x max_length, int64) to a safetensors file.
    Encode(EncodeArgs),
    /// Write the DEMO-ONLY encoder: a word-level tokenizer trained on the captions and a tiny
    /// random-weight T5 v1.1 (fixed seed), in Hugging Face layout.
    MakeDemo(MakeDemoArgs),
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Hugging Face T5 folder (config.json, tokenizer.json, model.safetensors or index).
    #[arg(long)]
    model: PathBuf,
    /// Text file, one prompt per line.
    #[arg(long)]
    prompts: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Tokens per prompt, EOS included (longer prompts are truncated and counted).
    #[arg(long, default_value_t = imagen_trainer::t5::DEFAULT_MAX_LENGTH)]
    max_length: usize,
    /// Compute dtype: f32 or bf16 (the output is f32 either way).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    dtype: String,
    /// Prompts per encoder call.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Run on this CUDA device index instead of the CPU.
    #[arg(long)]
    cuda: Option<usize>,
}

#[derive(Debug, Args)]
pub struct MakeDemoArgs {
    /// Captions to train the tokenizer on, one per line.
    #[arg(long)]
    captions: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 64)]
    d_model: i64,
    #[arg(long, default_value_t = 2)]
    layers: i64,
    #[arg(long, default_value_t = 4)]
    heads: i64,
    #[arg(long, default_value_t = 16)]
    d_kv: i64,
    #[arg(long, default_value_t = 128)]
    d_ff: i64,
    /// Upper bound of the tokenizer vocabulary.
    #[arg(long, default_value_t = 256)]
    vocab_size: u32,
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

pub fn run(cmd: TextCommand) -> Result<()> {
    match cmd {
        TextCommand::Encode(args) => encode(args),
        TextCommand::MakeDemo(args) => {
            let captions = read_prompts(&args.captions)?;
            let spec = DemoSpec {
                d_model: args.d_model,
                num_layers: args.layers,
                num_heads: args.heads,
                d_kv: args.d_kv,
                d_ff: args.d_ff,
                vocab_size: args.vocab_size,
                seed: args.seed,
            };
            let cfg = make_demo(&captions, &args.out, &spec)?;
            println!(
                "wrote DEMO-ONLY T5 to {} (vocab {}, d_model {}, {} layers)",
                args.out.display(),
                cfg.vocab_size,
                cfg.d_model,
                cfg.num_layers
            );
            Ok(())
        }
    }
}

fn encode(args: EncodeArgs) -> Result<()> {
    let device = match args.cuda {
        Some(index) => visible_cuda(index, "--cuda")?,
        None => Device::Cpu,
    };
    let kind = if args.dtype == "bf16" { Kind::BFloat16 } else { Kind::Float };
    let cfg = T5Config::from_file(&args.model.join("config.json"))?;
    let vs = nn::VarStore::new(device);
    let encoder = T5Encoder::with_kind(vs.root(), &cfg, Freeze::ALL, kind)?;
    load_weights(&encoder, &args.model)?;
    let tokenizer = T5Tokenizer::from_file(
        &args.model.join("tokenizer.json"),
        args.max_length,
        cfg.pad_token_id,
    )?;
    let prompts = read_prompts(&args.prompts)?;
    let mut embeddings = Vec::new();
    let mut masks = Vec::new();
    let mut truncated = 0;
    for batch in prompts.chunks(args.batch_size.max(1)) {
        let out = tch::no_grad(|| {
            encode_captions(&encoder, &tokenizer, batch, Some(args.max_length), device)
        })?;
        truncated += out.truncated;
        embeddings.push(out.hidden.to_kind(Kind::Float).to_device(Device::Cpu));
        masks.push(out.mask.to_device(Device::Cpu));
    }
    let (embeddings, mask) = if prompts.is_empty() {
        let l = args.max_length as i64;
        (
            Tensor::zeros([0, l, cfg.d_model], tch::kind::FLOAT_CPU),
            Tensor::zeros([0, l], tch::kind::INT64_CPU),
        )
    } else {
        (Tensor::cat(&embeddings, 0), Tensor::cat(&masks, 0))
    };
    Tensor::write_safetensors(&[("embeddings", &embeddings), ("mask", &mask)], &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "encoded {} prompts into {} ({} truncated to {} tokens)",
        prompts.len(),
        args.out.display(),
        truncated,
        args.max_length
    );
    Ok(())
}
