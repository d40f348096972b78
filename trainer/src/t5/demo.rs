//! The demo encoder: a Unigram tokenizer trained on the given captions and a tiny T5 v1.1 with
//! fixed-seed random weights, written as a Hugging Face folder. DEMO ONLY: its embeddings carry
//! no learned meaning beyond telling tokens apart; real runs point `text.model` at a real T5.

use std::path::Path;

use tch::{nn, Device};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::{
    replace::ReplacePattern, NormalizerWrapper, Replace, Sequence, NFKC,
};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::config::T5Config;
use super::encoder::{Freeze, T5Encoder};
use super::init::{init_random, save_safetensors};
use crate::error::{Result, TrainerError};

/// Special tokens at T5's ids: `<pad>` 0, `</s>` 1, `<unk>` 2.
const SPECIALS: [&str; 3] = ["<pad>", "</s>", "<unk>"];

/// Sizes of the demo encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSpec {
    pub d_model: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub d_kv: i64,
    pub d_ff: i64,
    /// Upper bound of the tokenizer's vocabulary.
    pub vocab_size: u32,
    pub seed: i64,
}

impl Default for DemoSpec {
    fn default() -> Self {
        Self {
            d_model: 64,
            num_layers: 2,
            num_heads: 4,
            d_kv: 16,
            d_ff: 128,
            vocab_size: 256,
            seed: 0,
        }
    }
}

/// A T5-style Unigram tokenizer (NFKC, Metaspace, `</s>` appended) trained on `captions`.
pub fn train_tokenizer(captions: &[String], vocab_size: u32) -> Result<Tokenizer> {
    let err =
        |e: tokenizers::Error| TrainerError::Text(format!("training the demo tokenizer: {e}"));
    let mut tokenizer = Tokenizer::new(Unigram::default());
    let spaces = Replace::new(ReplacePattern::Regex(" {2,}".into()), " ").map_err(err)?;
    tokenizer
        .with_normalizer(Some(Sequence::new(vec![NormalizerWrapper::from(NFKC), spaces.into()])));
    tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    tokenizer.with_decoder(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    let mut trainer: TrainerWrapper = UnigramTrainer::builder()
        .vocab_size(vocab_size)
        .special_tokens(SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect())
        .unk_token(Some("<unk>".into()))
        .show_progress(false)
        .build()
        .map_err(|e| TrainerError::Text(format!("demo tokenizer trainer: {e}")))?
        .into();
    tokenizer.train(&mut trainer, captions.iter()).map_err(err)?;
    canonicalize(&mut tokenizer)?;
    let post = TemplateProcessing::builder()
        .try_single("$A </s>")
        .and_then(|b| b.try_pair("$A </s> $B </s>"))
        .map_err(|e| TrainerError::Text(format!("demo post-processor: {e}")))?
        .special_tokens(vec![("</s>", 1)])
        .build()
        .map_err(|e| TrainerError::Text(format!("demo post-processor: {e}")))?;
    tokenizer.with_post_processor(Some(post));
    for (id, s) in SPECIALS.iter().enumerate() {
        if tokenizer.token_to_id(s) != Some(id as u32) {
            return Err(TrainerError::Text(format!(
                "demo tokenizer put {s} at {:?}, not {id}",
                tokenizer.token_to_id(s)
            )));
        }
    }
    Ok(tokenizer)
}

/// Makes the trained vocabulary reproducible: the trainer sums scores in parallel and breaks
/// ties in hash order, so scores are rounded to 1e-6 and pieces ordered by (score, piece),
/// specials first.
fn canonicalize(tokenizer: &mut Tokenizer) -> Result<()> {
    let ModelWrapper::Unigram(model) = tokenizer.get_model() else {
        return Err(TrainerError::Text("the demo tokenizer is not a Unigram model".into()));
    };
    let round = |s: f64| (s * 1e6).round() / 1e6;
    let mut pieces: Vec<(String, f64)> = model
        .iter()
        .filter(|(p, _)| !SPECIALS.contains(&p.as_str()))
        .map(|(p, s)| (p.clone(), round(*s)))
        .collect();
    pieces.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let vocab: Vec<(String, f64)> =
        SPECIALS.iter().map(|s| (s.to_string(), 0.0)).chain(pieces).collect();
    let unigram = Unigram::from(vocab, Some(2), false)
        .map_err(|e| TrainerError::Text(format!("demo tokenizer vocabulary: {e}")))?;
    tokenizer.with_model(unigram);
    Ok(())
}

/// Writes `config.json`, `tokenizer.json`, `model.safetensors` and a DEMO-ONLY `README.md` into
/// `out`, and returns the config.
pub fn make_demo(captions: &[String], out: &Path, spec: &DemoSpec) -> Result<T5Config> {
    if captions.is_empty() {
        return Err(TrainerError::Text("no captions to train the demo tokenizer on".into()));
    }
    let tokenizer = train_tokenizer(captions, spec.vocab_size)?;
    let cfg = T5Config {
        vocab_size: tokenizer.get_vocab_size(true) as i64,
        d_model: spec.d_model,
        d_kv: spec.d_kv,
        d_ff: spec.d_ff,
        num_layers: spec.num_layers,
        num_heads: spec.num_heads,
        feed_forward_proj: "gated-gelu".into(),
        ..T5Config::default()
    };
    std::fs::create_dir_all(out)
        .map_err(|source| TrainerError::Io { path: out.to_owned(), source })?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| TrainerError::Io { path, source })
    };
    let tok_path = out.join("tokenizer.json");
    tokenizer
        .save(&tok_path, true)
        .map_err(|e| TrainerError::Tokenizer { path: tok_path.clone(), message: e.to_string() })?;
    write("config.json", serde_json::to_string_pretty(&cfg.to_hf_json()).expect("json"))?;
    let vs = nn::VarStore::new(Device::Cpu);
    let encoder = T5Encoder::new(vs.root(), &cfg, Freeze::ALL)?;
    init_random(&encoder, spec.seed);
    save_safetensors(&encoder, &out.join("model.safetensors"))?;
    write(
        "README.md",
        format!(
            "# DEMO ONLY: tiny random T5 v1.1 encoder\n\nWritten by `imagen text make-demo` (seed {}, \
             d_model {}, {} layers) with a Unigram tokenizer trained on {} captions. The weights are \
             random, not trained: use it for demos and tests only, never for real runs, which point \
             `text.model` at a Hugging Face T5 folder (e.g. google/t5-v1_1-xxl).\n",
            spec.seed,
            spec.d_model,
            spec.num_layers,
            captions.len()
        ),
    )?;
    Ok(cfg)
}
