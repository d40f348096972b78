//! The three text modes behind one `TextConditioner`, the embed job, and the demo encoder.

use std::path::{Path, PathBuf};

use imagen_trainer::t5::demo::{make_demo, DemoSpec};
use imagen_trainer::text::embed::{embed_shards, CaptionShard, JsonlShard};
use imagen_trainer::text::identity::sha256_files;
use imagen_trainer::text::prompts::read_prompts;
use imagen_trainer::text::{TextConditioner, TextConfig, TextDtype, TextMode, TEXT_ENCODER_GROUP};
use tch::{nn, Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/t5")
}

fn captions() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("captions.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["captions"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().into()).collect()
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:05}")).collect()
}

fn config(mode: TextMode, dtype: TextDtype) -> TextConfig {
    TextConfig {
        mode,
        model: fixtures().join("v1_1"),
        max_length: 56,
        dtype,
        ..TextConfig::default()
    }
}

fn conditioner(cfg: &TextConfig) -> (nn::VarStore, TextConditioner) {
    let vs = nn::VarStore::new(Device::Cpu);
    let c = TextConditioner::new(vs.root(), cfg, Device::Cpu).unwrap();
    (vs, c)
}

/// Max abs difference over real tokens only.
fn masked_diff(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.unsqueeze(-1).to_kind(Kind::Float);
    ((a - b) * m).abs().max().double_value(&[])
}

/// Shards as JSON-lines files: captions split into two shards.
fn write_shards(dir: &Path, captions: &[String]) -> Vec<Box<dyn CaptionShard>> {
    let keys = keys(captions.len());
    let half = captions.len() / 2;
    [(0, half), (half, captions.len())]
        .iter()
        .enumerate()
        .map(|(s, &(a, b))| {
            let path = dir.join(format!("{s:05}.jsonl"));
            let lines: Vec<String> = (a..b)
                .map(|i| serde_json::json!({"key": keys[i], "caption": captions[i]}).to_string())
                .collect();
            std::fs::write(&path, lines.join("\n")).unwrap();
            Box::new(JsonlShard(path)) as Box<dyn CaptionShard>
        })
        .collect()
}

#[test]
fn frozen_online_matches_hugging_face_and_counts_truncation() {
    let exp: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixtures().join("expected_v1_1.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let caps = captions();
    let (_vs, c) = conditioner(&config(TextMode::FrozenOnline, TextDtype::F32));
    let (emb, mask) = c.encode(&caps, &keys(caps.len())).unwrap();
    assert_eq!((emb.kind(), mask.kind()), (Kind::Float, Kind::Bool));
    assert_eq!(mask.to_kind(Kind::Int64), exp["attention_mask"]);
    assert!(!emb.requires_grad());
    let err = masked_diff(&emb, &exp["last_hidden_state"], &mask);
    assert!(err < 1e-5, "{err}");
    assert_eq!(c.truncated(), 2);
    // Padding to the batch's longest caption does not change real tokens' outputs.
    let (short, short_mask) = c.encode(&caps[2..4], &keys(2)).unwrap();
    assert_eq!(short.size()[1], 13);
    let err = masked_diff(&short, &emb.narrow(0, 2, 2).narrow(1, 0, 13), &short_mask);
    assert!(err < 1e-5, "{err}");
}

#[test]
fn finetune_trains_all_but_the_frozen_parts_in_their_own_group() {
    let cfg = TextConfig {
        freeze_embedding: true,
        freeze_lowest_blocks: 1,
        ..config(TextMode::Finetune, TextDtype::Bf16)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let c = TextConditioner::new(vs.root() / "text_encoder", &cfg, Device::Cpu).unwrap();
    let (emb, _) = c.encode(&captions()[..2], &keys(2)).unwrap();
    emb.sum(Kind::Float).backward();
    let vars = vs.variables();
    let q1 = &vars["text_encoder.encoder.block.1.layer.0.SelfAttention.q.weight"];
    assert_eq!(q1.kind(), Kind::Float, "finetune keeps the VarStore's dtype");
    assert!(q1.grad().defined() && q1.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(!vars["text_encoder.shared.weight"].requires_grad());
    assert!(!vars["text_encoder.encoder.block.0.layer.0.SelfAttention.q.weight"].requires_grad());
    // Block 1 (q, k, v, o, wi_0, wi_1, wo, 2 norms) and the final norm.
    assert_eq!(vs.trainable_variables().len(), 10);
    let groups: Vec<usize> =
        vs.variables_.lock().unwrap().trainable_variables.iter().map(|v| v.group).collect();
    assert!(groups.iter().all(|&g| g == TEXT_ENCODER_GROUP), "{groups:?}");
}

#[test]
fn frozen_cached_serves_what_frozen_online_computes() {
    let dir = tempfile::tempdir().unwrap();
    let caps = captions();
    let shards = write_shards(dir.path(), &caps);
    let cache_dir = dir.path().join("cache");
    for dtype in [TextDtype::F32, TextDtype::Bf16] {
        let cache = cache_dir.join(format!("{dtype:?}"));
        let cfg =
            TextConfig { cache_dir: Some(cache.clone()), ..config(TextMode::FrozenCached, dtype) };
        let report = embed_shards(&cfg, &cache, &shards, 0, 1, Device::Cpu).unwrap();
        assert_eq!((report.shards_written, report.captions, report.truncated), (2, caps.len(), 2));
        let (_vs, cached) = conditioner(&cfg);
        let (_vs2, online) =
            conditioner(&TextConfig { mode: TextMode::FrozenOnline, ..cfg.clone() });
        let order: Vec<usize> = vec![5, 0, 2, 7];
        let (c, k): (Vec<String>, Vec<String>) =
            order.iter().map(|&i| (caps[i].clone(), keys(8)[i].clone())).unzip();
        let (emb, mask) = cached.encode(&c, &k).unwrap();
        let (want, want_mask) = online.encode(&c, &k).unwrap();
        assert_eq!(mask, want_mask);
        let err = masked_diff(&emb, &want, &mask);
        assert!(err == 0.0, "{dtype:?}: cache differs from the encoder by {err}");
        // A changed caption misses the cache with a clear error.
        let err = cached.encode(&["a new caption".into()], &k[..1]).unwrap_err().to_string();
        assert!(err.contains("not in the embedding cache"), "{err}");
    }
}

#[test]
fn embed_resumes_per_shard_and_splits_shards_across_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let shards = write_shards(dir.path(), &captions());
    let cache = dir.path().join("cache");
    let cfg = TextConfig {
        cache_dir: Some(cache.clone()),
        ..config(TextMode::FrozenCached, TextDtype::Bf16)
    };
    let r0 = embed_shards(&cfg, &cache, &shards, 0, 2, Device::Cpu).unwrap();
    assert_eq!((r0.shards_written, r0.captions), (1, 4));
    let cached = |i: usize| cache.join(format!("{}.safetensors", shards[i].name()));
    assert!(cached(0).exists() && !cached(1).exists());
    let r1 = embed_shards(&cfg, &cache, &shards, 0, 1, Device::Cpu).unwrap();
    assert_eq!((r1.shards_written, r1.shards_skipped), (1, 1));
    // A killed run leaves at most a temporary file, which is ignored.
    std::fs::write(cache.join(".00002.safetensors.tmp-1"), b"partial").unwrap();
    let (_vs, c) = conditioner(&cfg);
    assert!(c.encode(&captions()[..1], &keys(1)).is_ok());
}

#[test]
fn stale_cache_and_wrong_width_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let shards = write_shards(dir.path(), &captions());
    let cache = dir.path().join("cache");
    let cfg = TextConfig {
        cache_dir: Some(cache.clone()),
        ..config(TextMode::FrozenCached, TextDtype::Bf16)
    };
    embed_shards(&cfg, &cache, &shards, 0, 1, Device::Cpu).unwrap();
    let stale = TextConfig { max_length: 32, ..cfg.clone() };
    let vs = nn::VarStore::new(Device::Cpu);
    let err = TextConditioner::new(vs.root(), &stale, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("max_length: 56 vs 32"), "{err}");
    let err = embed_shards(&stale, &cache, &shards, 0, 1, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("another encoder"), "{err}");
    let (_vs, c) = conditioner(&cfg);
    c.check_width(32, "unet.text_dim").unwrap();
    let err = c.check_width(512, "unet.text_dim").unwrap_err().to_string();
    assert!(err.contains("unet.text_dim = 512") && err.contains("d_model = 32"), "{err}");
    let no_dir = TextConfig { cache_dir: None, ..cfg };
    let vs = nn::VarStore::new(Device::Cpu);
    assert!(TextConditioner::new(vs.root(), &no_dir, Device::Cpu)
        .unwrap_err()
        .to_string()
        .contains("cache_dir"));
}

#[test]
fn prompts_file_refuses_invalid_utf8_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.txt");
    std::fs::write(&path, b"a red circle\r\n\nbad \xff byte\n").unwrap();
    let err = read_prompts(&path).unwrap_err().to_string();
    assert!(err.contains("p.txt:3: invalid UTF-8"), "{err}");
    std::fs::write(&path, b"a red circle\r\n\nok\n").unwrap();
    assert_eq!(read_prompts(&path).unwrap(), vec!["a red circle", "", "ok"]);
    // A byte-order mark is no part of the first prompt.
    std::fs::write(&path, "\u{feff}a red circle\nok\n").unwrap();
    assert_eq!(read_prompts(&path).unwrap(), vec!["a red circle", "ok"]);
    // Prompts are written one a line, so a prompt may not hold a line break.
    let prompts = vec!["a red circle".to_owned(), "a blue\nsquare".to_owned()];
    let err = imagen_trainer::sample::SampleWriter::create(dir.path(), &prompts).err().unwrap();
    assert!(err.to_string().contains("prompt 1 (\"a blue\\nsquare\") holds a line break"), "{err}");
}

#[test]
fn demo_encoder_is_reproducible_and_loads_as_a_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let caps: Vec<String> = ["red", "green", "blue"]
        .iter()
        .flat_map(|c| {
            ["circle", "square"]
                .iter()
                .map(move |s| format!("a small {c} {s} in the center on a white background"))
        })
        .collect();
    let spec = DemoSpec { d_model: 16, num_heads: 2, d_kv: 8, d_ff: 32, ..DemoSpec::default() };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    make_demo(&caps, &a, &spec).unwrap();
    make_demo(&caps, &b, &spec).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(sha256_files(&[a.join(f)]).unwrap(), sha256_files(&[b.join(f)]).unwrap(), "{f}");
    }
    // Word level: one token per word plus EOS, so the 11-word captions take 12 tokens.
    let tokenizer =
        imagen_trainer::t5::T5Tokenizer::from_file(&a.join("tokenizer.json"), 64, 0).unwrap();
    let tokens = tokenizer.tokenize(&caps[..1]).unwrap();
    assert_eq!(tokens.ids[0].len(), 12, "{:?}", tokens.ids);
    assert_eq!(*tokens.ids[0].last().unwrap(), 1, "ends with </s>");
    let unknown = tokenizer.tokenize(&["a purple circle".to_string()]).unwrap();
    assert_eq!(unknown.ids[0][1], 2, "an unseen word maps to <unk>");
    assert!(std::fs::read_to_string(a.join("README.md")).unwrap().contains("DEMO ONLY"));
    let cfg = TextConfig { model: a, dtype: TextDtype::F32, ..TextConfig::default() };
    let (_vs, c) = conditioner(&cfg);
    let (emb, mask) = c.encode(&caps[..2], &keys(2)).unwrap();
    assert_eq!(emb.size()[2], 16);
    assert!(bool::try_from(mask.any()).unwrap());
    // Different captions give different embeddings.
    assert!((emb.get(0) - emb.get(1)).abs().max().double_value(&[]) > 1e-3);
}
