//! Benchmark, not a test (ignored; BENCHMARKS.md, "Embedding cache lookups"): captions/s of the
//! embedding cache's batch lookups, each caption once as in an epoch, page cache warm.
//! `cargo test --release -p imagen-data --test cache_lookup_bench -- --ignored --nocapture`
use imagen_data::embed_cache::{
    cache_key, CacheDtype, EmbedCache, EncoderIdentity, Manifest, ShardWriter,
};
use std::time::Instant;

#[test]
#[ignore = "a benchmark: run it by name"]
fn cache_lookup_captions_per_second() {
    let dir = std::env::temp_dir().join("imagen-cache-lookup-bench");
    let id = EncoderIdentity {
        weights_sha256: "w".repeat(64),
        tokenizer_sha256: "t".repeat(64),
        max_length: 77,
        dtype: CacheDtype::Bf16,
        d_model: 1024,
        config_sha256: None,
    };
    let (shards, per, tokens) = (40usize, 250usize, 24usize);
    if !dir.join("manifest.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        Manifest::create_or_check(&dir, &Manifest::new(id.clone(), "m".into(), Vec::new()))
            .unwrap();
        let row = vec![7u8; tokens * 1024 * 2];
        for s in 0..shards {
            let mut w = ShardWriter::new(&dir, &format!("{s:05}"), &id).unwrap();
            for i in 0..per {
                w.push(cache_key(&format!("{s}-{i}"), "c"), &row).unwrap();
            }
            w.finish().unwrap();
        }
    }
    // Each caption once, as an epoch does: batches of 64 from a window of 8 shards at a time.
    let mut x = 12345u64;
    let mut rnd = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut order: Vec<String> = Vec::new();
    for w in (0..shards).step_by(8) {
        let mut keys: Vec<String> = (w..(w + 8).min(shards))
            .flat_map(|s| (0..per).map(move |i| format!("{s}-{i}")))
            .collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, rnd(i + 1));
        }
        order.extend(keys);
    }
    let batches: Vec<Vec<String>> = order.chunks(64).map(|c| c.to_vec()).collect();
    let mut rates = Vec::new();
    for _ in 0..7 {
        let cache = EmbedCache::open(&dir, &id).unwrap();
        let t = Instant::now();
        for b in &batches {
            let caps = vec!["c".to_string(); b.len()];
            cache.lookup_batch(b, &caps).unwrap();
        }
        rates.push(order.len() as f64 / t.elapsed().as_secs_f64());
    }
    let rates = {
        let mut r = rates;
        r.sort_by(|a, b| a.partial_cmp(b).unwrap());
        r
    };
    println!(
        "captions/s median {:.0} (runs {:?})",
        rates[3],
        rates.iter().map(|r| *r as u64).collect::<Vec<_>>()
    );
}
