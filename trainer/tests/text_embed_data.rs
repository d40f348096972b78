//! `imagen embed`'s path over real shard formats: synthetic parquet shards, a demo encoder
//! trained on their captions, the cache, and frozen-cached lookups by the samples' keys.

use imagen_data::config::ColumnsConfig;
use imagen_data::embed_cache::{Manifest, MANIFEST_FILE};
use imagen_data::reader::{ShardReader, Unit};
use imagen_data::shards::ShardFormat;
use imagen_data::synth::{synthesize, SynthFormat, SynthOptions};
use imagen_data::DataConfig;
use imagen_trainer::t5::demo::{make_demo, DemoSpec};
use imagen_trainer::text::embed::{data_shards, embed_shards, CaptionShard, JsonlShard};
use imagen_trainer::text::identity::{cache_identity, encoder_identity, weight_stamps};
use imagen_trainer::text::{TextConditioner, TextConfig, TextDtype, TextMode};
use tch::{nn, Device};

#[test]
fn synthetic_parquet_shards_embed_and_serve_frozen_cached_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        side: 16,
        count: 24,
        shards: 2,
        heldout: 0,
        format: SynthFormat::Parquet,
        ..Default::default()
    };
    let out = synthesize(&dir.path().join("data"), &opts).unwrap();
    let samples: Vec<(String, String)> = out
        .train
        .iter()
        .flat_map(|p| ShardReader::open(p, ShardFormat::Parquet, &ColumnsConfig::default()))
        .filter_map(|u| match u {
            Unit::Sample(s) => Some((s.key, s.caption)),
            Unit::Skip { .. } => None,
        })
        .collect();
    assert_eq!(samples.len(), 24);
    let captions: Vec<String> = samples.iter().map(|(_, c)| c.clone()).collect();
    let model = dir.path().join("t5-demo");
    make_demo(
        &captions,
        &model,
        &DemoSpec { d_model: 16, num_heads: 2, d_kv: 8, d_ff: 32, ..DemoSpec::default() },
    )
    .unwrap();

    let data = DataConfig {
        shards: out.train.iter().map(|p| p.display().to_string()).collect(),
        ..DataConfig::default()
    };
    let shards = data_shards(&data).unwrap();
    assert_eq!(shards.len(), 2);
    assert_ne!(shards[0].name(), shards[1].name());
    let cache = dir.path().join("cache");
    let cfg = TextConfig {
        mode: TextMode::FrozenCached,
        model,
        cache_dir: Some(cache.clone()),
        dtype: TextDtype::Bf16,
        ..TextConfig::default()
    };
    let report = embed_shards(&cfg, &cache, &shards, 0, 1, Device::Cpu).unwrap();
    assert_eq!((report.shards_written, report.captions, report.truncated), (2, 24, 0));
    // A re-run skips what is done, and re-embeds a shard whose file changed since.
    let again = embed_shards(&cfg, &cache, &shards, 0, 1, Device::Cpu).unwrap();
    assert_eq!((again.shards_written, again.shards_skipped), (0, 2));
    let touched = std::fs::File::options().write(true).open(&out.train[1]).unwrap();
    touched.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    let again = embed_shards(&cfg, &cache, &shards, 0, 1, Device::Cpu).unwrap();
    assert_eq!((again.shards_written, again.shards_reembedded, again.shards_skipped), (1, 1, 1));
    assert_eq!(again.captions, 12);
    // Caption files of the same name in two folders are two cache shards.
    let jsonl = |folder: &str| {
        std::fs::create_dir_all(dir.path().join(folder)).unwrap();
        let path = dir.path().join(folder).join("captions.jsonl");
        std::fs::write(&path, "{\"key\": \"k\", \"caption\": \"a red circle\"}\n").unwrap();
        JsonlShard(path)
    };
    assert_ne!(jsonl("a").name(), jsonl("b").name());

    let vs = nn::VarStore::new(Device::Cpu);
    let cached = TextConditioner::new(vs.root(), &cfg, Device::Cpu).unwrap();
    let online_vs = nn::VarStore::new(Device::Cpu);
    let online = TextConditioner::new(
        online_vs.root(),
        &TextConfig { mode: TextMode::FrozenOnline, ..cfg.clone() },
        Device::Cpu,
    )
    .unwrap();
    let (keys, caps): (Vec<String>, Vec<String>) = samples.iter().rev().take(5).cloned().unzip();
    let (emb, mask) = cached.encode(&caps, &keys).unwrap();
    let (want, want_mask) = online.encode(&caps, &keys).unwrap();
    assert_eq!(mask, want_mask);
    assert_eq!(emb, want);

    // A start takes the weights' hash from the manifest while the weight files keep the size and
    // modification time recorded there, rather than reading them again (a manifest edited to say
    // otherwise shows which was used), and hashes them afresh once they changed.
    let t5 = cfg.encoder_config().unwrap();
    let manifest_path = cache.join(MANIFEST_FILE);
    let mut manifest = Manifest::read(&cache).unwrap();
    assert_eq!(manifest.weight_files, weight_stamps(&cfg.model).unwrap());
    let hashed = encoder_identity(&cfg, &t5, &cache).unwrap();
    assert_eq!(cache_identity(&cfg, &t5, &cache).unwrap(), hashed);
    manifest.encoder.weights_sha256 = "recorded".into();
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
    assert_eq!(cache_identity(&cfg, &t5, &cache).unwrap().weights_sha256, "recorded");
    let weights =
        std::fs::File::options().write(true).open(cfg.model.join("model.safetensors")).unwrap();
    weights.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(cache_identity(&cfg, &t5, &cache).unwrap(), hashed);

    // config.json changes the embeddings without changing the weights (here the layer norm's
    // epsilon): the cache made under the old one is refused, naming the field.
    let config_path = cfg.model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["layer_norm_epsilon"] = 1e-3.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let err = TextConditioner::new(vs.root(), &cfg, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("config_sha256"), "{err}");
}
