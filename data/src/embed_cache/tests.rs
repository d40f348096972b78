//! Round trips of the cache format, and refusal of stale or damaged caches.

use super::*;
use crate::error::DataError;
use sha2::{Digest, Sha256};

fn identity(dtype: CacheDtype) -> EncoderIdentity {
    EncoderIdentity {
        weights_sha256: "w".repeat(64),
        tokenizer_sha256: "t".repeat(64),
        max_length: 128,
        dtype,
        d_model: 3,
        config_sha256: Some("c".repeat(64)),
    }
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    // Values here are exactly representable in bf16, so truncation is exact.
    values.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect()
}

fn write_cache(dir: &std::path::Path, id: &EncoderIdentity) {
    Manifest::create_or_check(dir, &Manifest::new(id.clone(), "demo".into(), Vec::new())).unwrap();
    let mut w = ShardWriter::new(dir, "00000", id).unwrap();
    w.push(cache_key("a", "red circle"), &bf16_bytes(&[1.0, -2.0, 0.5, 3.0, 0.25, -1.5])).unwrap();
    w.push(cache_key("b", ""), &bf16_bytes(&[7.0, 8.0, 9.0])).unwrap();
    w.finish().unwrap();
    let mut w = ShardWriter::new(dir, "00001", id).unwrap();
    w.push(cache_key("c", "blue"), &bf16_bytes(&[-1.0, 0.0, 1.0])).unwrap();
    w.finish().unwrap();
}

#[test]
fn bf16_round_trip_by_key_and_caption() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(CacheDtype::Bf16);
    write_cache(dir.path(), &id);
    let cache = EmbedCache::open(dir.path(), &id).unwrap();
    assert_eq!(cache.len(), 3);
    let get = |k: &str, c: &str| cache.get(k, c).unwrap();
    let a = get("a", "red circle").unwrap();
    assert_eq!((a.tokens, a.d_model), (2, 3));
    assert_eq!(a.to_f32(), vec![1.0, -2.0, 0.5, 3.0, 0.25, -1.5]);
    assert_eq!(get("b", "").unwrap().to_f32(), vec![7.0, 8.0, 9.0]);
    assert_eq!(get("c", "blue").unwrap().to_f32(), vec![-1.0, 0.0, 1.0]);
    assert!(get("a", "red square").is_none(), "a changed caption must miss");
    assert!(get("z", "red circle").is_none());
}

#[test]
fn f32_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(CacheDtype::F32);
    Manifest::create_or_check(dir.path(), &Manifest::new(id.clone(), "demo".into(), Vec::new()))
        .unwrap();
    let mut w = ShardWriter::new(dir.path(), "s", &id).unwrap();
    let v = [0.1f32, 0.2, 0.3];
    w.push(cache_key("k", "x"), &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
        .unwrap();
    w.finish().unwrap();
    let cache = EmbedCache::open(dir.path(), &id).unwrap();
    assert_eq!(cache.get("k", "x").unwrap().unwrap().to_f32(), v.to_vec());
}

#[test]
fn stale_cache_is_refused_naming_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    write_cache(dir.path(), &identity(CacheDtype::Bf16));
    let mut other = identity(CacheDtype::Bf16);
    other.max_length = 64;
    other.weights_sha256 = "x".repeat(64);
    let err = EmbedCache::open(dir.path(), &other).unwrap_err().to_string();
    assert!(err.contains("max_length: 128 vs 64"), "{err}");
    assert!(err.contains("weights_sha256"), "{err}");
    let err = Manifest::create_or_check(dir.path(), &Manifest::new(other, "x".into(), Vec::new()))
        .unwrap_err();
    assert!(matches!(err, DataError::EmbedCache { .. }));
}

#[test]
fn damaged_shard_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(CacheDtype::Bf16);
    write_cache(dir.path(), &id);
    let shard = shard_path(dir.path(), "00001");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    let err = EmbedCache::open(dir.path(), &id).unwrap_err().to_string();
    assert!(err.contains("00001.safetensors") && err.contains("re-embed"), "{err}");
    // Re-embedding that shard fixes it.
    let mut w = ShardWriter::new(dir.path(), "00001", &id).unwrap();
    w.push(cache_key("c", "blue"), &bf16_bytes(&[-1.0, 0.0, 1.0])).unwrap();
    w.finish().unwrap();
    assert_eq!(EmbedCache::open(dir.path(), &id).unwrap().len(), 3);
}

#[test]
fn a_cache_of_many_shards_keeps_few_files_open() {
    // More cache files than are kept open: every caption is still found, through a bounded set
    // of open files, and a closed file deleted since is an error naming it, not a miss.
    let dir = tempfile::tempdir().unwrap();
    let id = identity(CacheDtype::F32);
    Manifest::create_or_check(dir.path(), &Manifest::new(id.clone(), "m".into(), Vec::new()))
        .unwrap();
    let shards = 3 * super::reader::OPEN_FILES;
    let row = |i: usize| [i as f32, -(i as f32), 0.5];
    for i in 0..shards {
        let mut w = ShardWriter::new(dir.path(), &format!("{i:05}"), &id).unwrap();
        let bytes: Vec<u8> = row(i).iter().flat_map(|x| x.to_le_bytes()).collect();
        w.push(cache_key(&i.to_string(), "c"), &bytes).unwrap();
        w.finish().unwrap();
    }
    let cache = EmbedCache::open(dir.path(), &id).unwrap();
    assert_eq!((cache.len(), cache.open_files()), (shards, 0));
    for pass in 0..2 {
        for i in (0..shards).rev() {
            let e = cache.get(&i.to_string(), "c").unwrap().unwrap();
            assert_eq!(e.to_f32(), row(i), "shard {i}, pass {pass}");
            assert!(cache.open_files() <= super::reader::OPEN_FILES);
        }
    }
    // The last shard was read first in the last pass, so it is closed by now.
    let last = shards - 1;
    std::fs::remove_file(shard_path(dir.path(), &format!("{last:05}"))).unwrap();
    let err = cache.get(&last.to_string(), "c").unwrap_err().to_string();
    assert!(err.contains(&format!("{last:05}.safetensors")), "{err}");
}

#[test]
fn rows_must_be_whole_and_names_plain() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(CacheDtype::Bf16);
    let mut w = ShardWriter::new(dir.path(), "s", &id).unwrap();
    assert!(w.push("k".into(), &[0u8; 4]).is_err());
    assert!(w.push("k".into(), &[]).is_err());
    assert!(ShardWriter::new(dir.path(), "../x", &id).is_err());
    assert!(ShardWriter::new(dir.path(), "", &id).is_err());
}

#[test]
fn readable_with_the_safetensors_format_alone() {
    // What the README's Python snippet does: keys from metadata, rows from offsets.
    let dir = tempfile::tempdir().unwrap();
    let id = identity(CacheDtype::Bf16);
    write_cache(dir.path(), &id);
    let bytes = std::fs::read(shard_path(dir.path(), "00000")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let keys: Vec<String> =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["keys"]).unwrap();
    assert_eq!(keys, vec![cache_key("a", "red circle"), cache_key("b", "")]);
    assert_eq!(st.tensor("embeddings").unwrap().shape(), [3, 3]);
    assert_eq!(st.tensor("offsets").unwrap().shape(), [3]);
}

#[test]
fn a_manifest_from_before_weight_stamps_gains_them_when_the_encoder_matches() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(CacheDtype::Bf16);
    Manifest::create_or_check(dir.path(), &Manifest::new(id.clone(), "m".into(), Vec::new()))
        .unwrap();
    let stamps = vec![FileStamp { name: "model.safetensors".into(), size: 10, modified_ns: 7 }];
    let stamped = Manifest::new(id.clone(), "m".into(), stamps.clone());
    Manifest::create_or_check(dir.path(), &stamped).unwrap();
    assert_eq!(Manifest::read(dir.path()).unwrap().weight_files, stamps);
    // The same weights copied anew (same hash, new times): the stamps follow.
    let later = vec![FileStamp { modified_ns: 8, ..stamps[0].clone() }];
    Manifest::create_or_check(dir.path(), &Manifest::new(id.clone(), "m".into(), later.clone()))
        .unwrap();
    assert_eq!(Manifest::read(dir.path()).unwrap().weight_files, later);
    // Another encoder is refused and changes nothing.
    let mut other = id;
    other.weights_sha256 = "y".repeat(64);
    assert!(
        Manifest::create_or_check(dir.path(), &Manifest::new(other, "m".into(), stamps)).is_err()
    );
    assert_eq!(Manifest::read(dir.path()).unwrap().weight_files, later);
}

#[test]
fn an_identity_without_a_config_hash_keeps_the_digest_caches_recorded_before_there_was_one() {
    // The JSON an identity serialised to before `config_sha256` existed, and its digest, which
    // every shard of such a cache carries.
    let before = r#"{"weights_sha256":"w","tokenizer_sha256":"t","max_length":128,"dtype":"bf16","d_model":3}"#;
    let id: EncoderIdentity = serde_json::from_str(before).unwrap();
    assert_eq!(id.config_sha256, None);
    assert_eq!(id.digest(), hex::encode(Sha256::digest(before.as_bytes())));
    let with_config = EncoderIdentity { config_sha256: Some("c".into()), ..id.clone() };
    assert_ne!(with_config.digest(), id.digest());
    assert_eq!(with_config.differences(&id), vec!["config_sha256: \"c\" vs null".to_string()]);
    assert_eq!(id.differences(&with_config), vec!["config_sha256: null vs \"c\"".to_string()]);
}
