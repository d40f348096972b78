//! The loader: determinism, exact resume from a cursor cut mid-epoch, the rank split, and one pass
//! over a single rank's stream holding every sample once.

mod common;

use std::collections::HashSet;

use common::synth_dataset;
use imagen_data::config::ColumnsConfig;
use imagen_data::{Batch, DataConfig, DataError, Loader};

fn config(dir: &std::path::Path, container: &str) -> DataConfig {
    DataConfig {
        shards: vec![dir.join(container).join("train").display().to_string()],
        batch_size: 8,
        workers: 2,
        prefetch: 2,
        shuffle_buffer: 24,
        readers: 2,
        seed: 5,
        ..DataConfig::default()
    }
}

fn take(loader: &mut Loader, n: usize) -> Vec<Batch> {
    (0..n).map(|_| loader.next_batch().unwrap()).collect()
}

#[test]
fn same_seed_same_batches_and_a_cut_cursor_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    for container in ["parquet", "wds"] {
        let cfg = config(dir.path(), container);
        let mut a = Loader::new(&cfg, 16, 0, 1, None).unwrap();
        let full = take(&mut a, 40); // 320 samples: crosses the pass of 200
        let mut b = Loader::new(&cfg, 16, 0, 1, None).unwrap();
        assert_eq!(take(&mut b, 40), full);
        // Cut at several points: mid-window, mid-epoch, right at and after the pass boundary.
        for cut in [1usize, 7, 25, 26] {
            let mut c = Loader::new(&cfg, 16, 0, 1, None).unwrap();
            take(&mut c, cut);
            let cursor = c.cursor();
            let json = serde_json::to_string(&cursor).unwrap();
            assert!(json.len() < 2000, "cursor stays small: {} bytes", json.len());
            drop(c);
            let restored = serde_json::from_str(&json).unwrap();
            let mut d = Loader::new(&cfg, 16, 0, 1, Some(restored)).unwrap();
            let rest = take(&mut d, 40 - cut);
            assert_eq!(rest, full[cut..], "{container}: resumed at batch {cut}");
            assert_eq!(d.stats().good, 40 * 8, "counts continue across the resume");
        }
        let other = Loader::new(&DataConfig { seed: 6, ..cfg.clone() }, 16, 0, 1, None)
            .unwrap()
            .next_batch()
            .unwrap();
        assert_ne!(other.keys, full[0].keys);
    }
}

#[test]
fn a_cursor_continues_only_under_the_settings_that_ordered_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let cfg = config(dir.path(), "parquet");
    let mut a = Loader::new(&cfg, 16, 0, 1, None).unwrap();
    let full = take(&mut a, 10);
    let mut cut = Loader::new(&cfg, 16, 0, 1, None).unwrap();
    take(&mut cut, 4);
    let cursor = cut.cursor();
    drop(cut);
    let refused = |changed: DataConfig| match Loader::new(&changed, 16, 0, 1, Some(cursor.clone()))
    {
        Err(DataError::CursorMismatch(why)) => why,
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a cursor restored under other settings"),
    };
    let why = refused(DataConfig { readers: 3, ..cfg.clone() });
    assert!(why.contains("data.readers: 2 -> 3"), "{why}");
    let why = refused(DataConfig { shuffle_buffer: 48, flip: !cfg.flip, ..cfg.clone() });
    assert!(why.contains("data.shuffle_buffer: 24 -> 48") && why.contains("data.flip"), "{why}");
    let columns = ColumnsConfig { caption: Some("text".into()), ..Default::default() };
    let why = refused(DataConfig { columns, ..cfg.clone() });
    assert!(why.contains("data.columns"), "{why}");
    // The same number of shards, one of them another file.
    let train = dir.path().join("parquet").join("train");
    let copy = dir.path().join("renamed");
    std::fs::create_dir(&copy).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&train).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for (i, path) in names.iter().enumerate() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let name = if i == 0 && name.ends_with(".parquet") { format!("x{name}") } else { name };
        std::fs::copy(path, copy.join(name)).unwrap();
    }
    let why = refused(DataConfig { shards: vec![copy.display().to_string()], ..cfg.clone() });
    assert!(why.contains("data.shards (file names)"), "{why}");
    // The same files under another directory (a dataset copied to a local disk) continue.
    let moved = dir.path().join("moved");
    std::fs::rename(&train, &moved).unwrap();
    let cfg = DataConfig { shards: vec![moved.display().to_string()], ..cfg };
    let mut d = Loader::new(&cfg, 16, 0, 1, Some(cursor)).unwrap();
    assert_eq!(take(&mut d, 6), full[4..]);
}

#[test]
fn one_pass_of_a_single_rank_holds_every_sample_once_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let mut per_format = Vec::new();
    for container in ["parquet", "wds"] {
        let cfg = config(dir.path(), container);
        let mut loader = Loader::new(&cfg, 16, 0, 1, None).unwrap();
        assert_eq!(loader.epoch_batches(), 25);
        let batches = take(&mut loader, 25);
        let keys: Vec<String> = batches.iter().flat_map(|b| b.keys.clone()).collect();
        let set: HashSet<String> = keys.iter().cloned().collect();
        assert_eq!(set.len(), 200, "{container}");
        assert!(batches.iter().all(|b| b.epoch == 0 && b.pixels.len() == 8 * 16 * 16 * 3));
        assert_eq!(loader.next_batch().unwrap().epoch, 1);
        for b in &batches {
            for (key, caption) in b.keys.iter().zip(&b.captions) {
                let index: u64 = key.parse().unwrap();
                assert_eq!(caption, &imagen_data::synth::Scene::at(11, index).caption());
            }
        }
        per_format.push(set);
    }
    assert_eq!(per_format[0], per_format[1]);
}

#[test]
fn ranks_share_no_sample_within_a_pass_and_yield_equal_epochs() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    // 5 shards over 2 ranks: 2 shards (80 samples) each per pass; one shard sits out.
    let cfg = config(dir.path(), "parquet");
    let mut seen = Vec::new();
    for rank in 0..2 {
        let mut loader = Loader::new(&cfg, 16, rank, 2, None).unwrap();
        assert_eq!(loader.epoch_batches(), 10, "floor(200 * 4/5 / 2 / 8)");
        // What rank 0 counts for a job and shares, so that the others need not count.
        assert_eq!(imagen_data::epoch_batches(&cfg, 2).unwrap(), 10);
        let keys: HashSet<String> =
            take(&mut loader, 10).iter().flat_map(|b| b.keys.clone()).collect();
        assert_eq!(keys.len(), 80);
        assert_eq!(loader.next_batch().unwrap().epoch, 1);
        seen.push(keys);
    }
    assert!(seen[0].is_disjoint(&seen[1]));
    let err = Loader::new(&cfg, 16, 0, 6, None).err().unwrap().to_string();
    assert!(err.contains("5 shards cannot be dealt to 6 ranks"), "{err}");
    let mut c = Loader::new(&cfg, 16, 0, 2, None).unwrap();
    c.next_batch().unwrap();
    let err = Loader::new(&cfg, 16, 1, 2, Some(c.cursor())).err().unwrap().to_string();
    assert!(err.contains("cursor"), "{err}");
}

#[test]
fn heldout_config_reads_the_heldout_split() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), 16);
    let cfg = DataConfig {
        heldout_shards: vec![dir.path().join("wds/heldout").display().to_string()],
        flip: true,
        ..config(dir.path(), "wds")
    };
    let held = cfg.heldout().unwrap();
    assert!(!held.flip);
    let mut loader = Loader::new(&held, 16, 0, 1, None).unwrap();
    let keys: Vec<String> = take(&mut loader, 3).iter().flat_map(|b| b.keys.clone()).collect();
    assert!(keys.iter().all(|k| k.parse::<u64>().unwrap() >= imagen_data::synth::HELDOUT_BASE));
}

/// A cache of every sample the first `n` batches hold except `skip`: sample i's embeddings are
/// `1 + i % 3` tokens of width 2 with values `[i, token]`.
fn write_text_cache(
    dir: &std::path::Path,
    batches: &[Batch],
    skip: Option<&str>,
) -> (imagen_data::embed_cache::EncoderIdentity, std::collections::HashMap<String, Vec<f32>>) {
    use imagen_data::embed_cache::*;
    let id = EncoderIdentity {
        weights_sha256: "w".repeat(64),
        tokenizer_sha256: "t".repeat(64),
        max_length: 8,
        dtype: CacheDtype::F32,
        d_model: 2,
        config_sha256: None,
    };
    Manifest::create_or_check(dir, &Manifest::new(id.clone(), "test".into(), Vec::new())).unwrap();
    let mut writer = ShardWriter::new(dir, "00000", &id).unwrap();
    let mut expected = std::collections::HashMap::new();
    let samples = batches.iter().flat_map(|b| b.keys.iter().zip(&b.captions));
    for (i, (key, caption)) in samples.enumerate() {
        let values: Vec<f32> =
            (0..1 + i % 3).flat_map(|t| [i as f32, t as f32]).collect::<Vec<_>>();
        if skip != Some(key.as_str()) {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            writer.push(cache_key(key, caption), &bytes).unwrap();
        }
        expected.insert(key.clone(), values);
    }
    writer.finish().unwrap();
    (id, expected)
}

/// A synthetic dataset in `dir`, the first `n` batches of a plain loader, and a loader over the
/// same stream with a text cache of those batches' samples (less sample `skip` = (batch, index)).
fn cached_loader(
    dir: &std::path::Path,
    container: &str,
    n: usize,
    skip: Option<(usize, usize)>,
) -> (Vec<Batch>, Loader, std::collections::HashMap<String, Vec<f32>>) {
    use imagen_data::embed_cache::EmbedCache;
    synth_dataset(dir, 16);
    let cfg = config(dir, container);
    let plain = take(&mut Loader::new(&cfg, 16, 0, 1, None).unwrap(), n);
    let skip = skip.map(|(b, i)| plain[b].keys[i].clone());
    let cache_dir = dir.join("cache");
    let (id, expected) = write_text_cache(&cache_dir, &plain, skip.as_deref());
    let cache = std::sync::Arc::new(EmbedCache::open(&cache_dir, &id).unwrap());
    let loader = Loader::with_text_cache(&cfg, 16, 0, 1, None, cache).unwrap();
    (plain, loader, expected)
}

#[test]
fn a_text_cache_puts_each_batch_s_padded_embeddings_in_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, mut loader, expected) = cached_loader(dir.path(), "parquet", 5, None);
    for want in &plain {
        let got = loader.next_batch().unwrap();
        assert_eq!((&got.pixels, &got.keys), (&want.pixels, &want.keys), "same images and order");
        let text = got.text.as_ref().expect("the loader attached the cached embeddings");
        let longest = got.keys.iter().map(|k| expected[k].len() / 2).max().unwrap();
        assert_eq!((text.len, text.d_model), (longest, 2));
        assert_eq!(text.values.len(), got.len() * longest * 2);
        for (i, key) in got.keys.iter().enumerate() {
            let row = &expected[key];
            let tokens = row.len() / 2;
            let at = i * longest * 2;
            assert_eq!(&text.values[at..at + row.len()], &row[..], "{key}");
            assert!(text.values[at + row.len()..at + longest * 2].iter().all(|&v| v == 0.0));
            let mask = &text.mask[i * longest..(i + 1) * longest];
            assert_eq!(mask.iter().filter(|&&m| m).count(), tokens, "{key}");
            assert!(mask[..tokens].iter().all(|&m| m));
        }
    }
    let cfg = config(dir.path(), "parquet");
    assert!(Loader::new(&cfg, 16, 0, 1, None).unwrap().next_batch().unwrap().text.is_none());
}

#[test]
fn a_sample_missing_from_the_text_cache_stops_the_loader_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, mut loader, _) = cached_loader(dir.path(), "wds", 2, Some((1, 3)));
    let missing = plain[1].keys[3].clone();
    let cache_dir = dir.path().join("cache");
    assert!(loader.next_batch().unwrap().text.is_some());
    let err = loader.next_batch().unwrap_err().to_string();
    assert!(err.contains(&missing) && err.contains("cache"), "{err}");
    assert!(err.contains(&cache_dir.display().to_string()), "{err}");
    assert!(loader.next_batch().is_err(), "the loader stays stopped");
}

#[test]
fn a_data_section_naming_its_columns_trains_from_a_hugging_face_datasets_export() {
    // As a run config says it: `[data.columns]` under `[data]`.
    let shard = common::fixture("hf_datasets.parquet").display().to_string();
    let toml = format!(
        "shards = [{shard:?}]\nbatch_size = 3\nshuffle_buffer = 1\n\
         [columns]\nimage = \"image\"\ncaption = \"text\"\n"
    );
    let cfg: DataConfig = toml::from_str(&toml).unwrap();
    let mut loader = Loader::new(&cfg, 16, 0, 1, None).unwrap();
    assert_eq!(loader.epoch_batches(), 1, "five rows in the footer, three samples a batch");
    let batch = loader.next_batch().unwrap();
    let mut captions = batch.captions.clone();
    captions.sort();
    assert_eq!(captions, ["hf caption 0", "hf caption 1", "hf caption 4"]);
    assert_eq!(batch.pixels.len(), 3 * 16 * 16 * 3);
    assert_eq!(loader.stats().total_skipped(), 2, "the row without an image, the one without text");
}
