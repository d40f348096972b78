//! The demo encoder: a word-level tokenizer trained on the given captions and a tiny T5 v1.1 with
//! fixed-seed random weights, written as a Hugging Face folder. DEMO ONLY: its embeddings carry
//! no learned meaning beyond telling tokens apart; real runs point `text.model` at a real T5.

use std::path::Path;

use tch::{nn, Device};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Sequence, NFKC};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
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

/// A word-level tokenizer (NFKC, lowercase, whitespace and punctuation split, `</s>` appended)
/// whose vocabulary is every word of `captions`, most frequent first (ties by word), up to
/// `vocab_size` entries with the specials. On a small caption grammar a subword (Unigram) trainer
/// ends near character level (about 60 tokens a caption); whole words keep captions short
/// (about 14 tokens) and give the random encoder one input vector per word.
pub fn train_tokenizer(captions: &[String], vocab_size: u32) -> Result<Tokenizer> {
    let err =
        |e: tokenizers::Error| TrainerError::Text(format!("training the demo tokenizer: {e}"));
    let model = WordLevel::builder().unk_token(SPECIALS[2].into()).build().map_err(err)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(Sequence::new(vec![
        NormalizerWrapper::from(NFKC),
        NormalizerWrapper::from(Lowercase),
    ])));
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    // The trainer orders words by (count descending, word), so the ids are reproducible.
    let mut trainer: TrainerWrapper = WordLevelTrainer::builder()
        .vocab_size(vocab_size as usize)
        .special_tokens(SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect())
        .show_progress(false)
        .build()
        .map_err(|e| TrainerError::Text(format!("demo tokenizer trainer: {e}")))?
        .into();
    tokenizer.train(&mut trainer, captions.iter()).map_err(err)?;
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
             d_model {}, {} layers) with a word-level tokenizer trained on {} captions. The weights are \
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
