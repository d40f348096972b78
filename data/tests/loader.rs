//! The loader: determinism, exact resume from a cursor cut mid-epoch, the rank split, and one pass
//! over a single rank's stream holding every sample once.

mod common;

use std::collections::HashSet;

use common::synth_dataset;
use imagen_data::{Batch, DataConfig, Loader};

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
