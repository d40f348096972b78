//! The deterministic sample stream of one rank: shards dealt per pass, read by interleaved slots,
//! shuffled in windows. Its position is small and serialisable, and restoring it replays at most
//! one window of compressed samples.
//!
//! Policy (DESIGN.md "Distributed"): pass `p` permutes all shards with (seed, p); position `i` of
//! the permutation goes to rank `i % world`, and the last `n % world` positions sit the pass out
//! (they rotate with the permutation), so every rank reads the same number of shards per pass.
//! A rank's shards are dealt round-robin to `readers` slots, read one unit per slot in turn. Passes
//! follow each other endlessly; the loader cuts batches and nominal epochs from this stream.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{ColumnsConfig, FilterConfig};
use crate::reader::{RawSample, ShardReader, Unit};
use crate::shards::ShardFormat;
use crate::stats::{SkipReason, SkipStats, SkipWarner};

/// A shard and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardEntry {
    pub path: PathBuf,
    pub format: ShardFormat,
    /// Where its samples keep their image and caption.
    pub columns: ColumnsConfig,
}

impl ShardEntry {
    /// A reader of the shard from its start.
    pub fn open(&self) -> ShardReader {
        ShardReader::open(&self.path, self.format, &self.columns)
    }
}

/// Position of one reader slot: which of its shards, and how many units of it were consumed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotPos {
    pub shard: usize,
    pub units: u64,
}

/// Position of the interleaved readers within a pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePos {
    pub pass: u64,
    pub slots: Vec<SlotPos>,
    pub next_slot: usize,
}

/// A sample ready for decoding, with its random augmentation drawn.
#[derive(Clone, Debug)]
pub struct Item {
    pub sample: RawSample,
    pub shard: usize,
    pub pass: u64,
    pub crop_at: f64,
    pub flip: bool,
}

/// Parameters fixed for the life of a stream.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    pub shards: Arc<Vec<ShardEntry>>,
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    pub readers: usize,
    pub window: usize,
    pub flip: bool,
    pub filters: FilterConfig,
}

fn mix(parts: &[u64]) -> u64 {
    // SplitMix64 over the parts: a stable seed for each (purpose, seed, pass, ...) tuple.
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    for &p in parts {
        h = h.wrapping_add(p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

impl StreamSpec {
    /// Shard indices of each reader slot of this rank in pass `pass`.
    pub fn deal(&self, pass: u64) -> Vec<Vec<usize>> {
        let n = self.shards.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(&[1, self.seed, pass])));
        let used = n - n % self.world;
        let mine: Vec<usize> =
            order[..used].iter().skip(self.rank).step_by(self.world).copied().collect();
        let k = self.readers.clamp(1, mine.len().max(1));
        (0..k).map(|s| mine.iter().skip(s).step_by(k).copied().collect()).collect()
    }
}

struct Source {
    spec: StreamSpec,
    pos: SourcePos,
    lists: Vec<Vec<usize>>,
    open: Vec<Option<ShardReader>>,
}

impl Source {
    fn new(spec: StreamSpec, pos: SourcePos) -> Source {
        let lists = spec.deal(pos.pass);
        let mut pos = pos;
        pos.slots.resize(lists.len(), SlotPos::default());
        let open = (0..lists.len()).map(|_| None).collect();
        Source { spec, pos, lists, open }
    }

    fn start_pass(&mut self, pass: u64) {
        *self = Source::new(self.spec.clone(), SourcePos { pass, ..SourcePos::default() });
    }

    /// The next unit and its shard index, or None at the end of the pass.
    fn next_unit(&mut self) -> Option<(Unit, usize)> {
        let k = self.lists.len();
        for _ in 0..k {
            let s = self.pos.next_slot % k;
            loop {
                let slot = &mut self.pos.slots[s];
                let Some(&shard) = self.lists[s].get(slot.shard) else { break };
                let reader = self.open[s].get_or_insert_with(|| {
                    let e = &self.spec.shards[shard];
                    let mut r = e.open();
                    r.skip_units(slot.units);
                    r
                });
                match reader.next() {
                    Some(unit) => {
                        slot.units += 1;
                        self.pos.next_slot = (s + 1) % k;
                        return Some((unit, shard));
                    }
                    None => {
                        slot.shard += 1;
                        slot.units = 0;
                        self.open[s] = None;
                    }
                }
            }
            self.pos.next_slot = (s + 1) % k;
        }
        None
    }
}

/// The shards dealt to this rank in the whole passes since its last success (a sample read, or
/// one decoded). A rank reads only its share of a pass (one shard when shards == world), so an
/// unusable shard dealt to it twice in a row says nothing of the others: it gives up only when
/// those passes cover every shard of the list.
pub(crate) struct FruitlessPasses {
    /// The first pass not yet counted.
    next: u64,
    shards: HashSet<usize>,
}

impl FruitlessPasses {
    /// Counting from pass `first` (a pass that a stream resumes within is not whole).
    pub(crate) fn from_pass(first: u64) -> Self {
        FruitlessPasses { next: first, shards: HashSet::new() }
    }

    /// A success in `pass`: counting starts again after it.
    pub(crate) fn succeeded(&mut self, pass: u64) {
        self.next = pass + 1;
        self.shards.clear();
    }

    /// Whether the passes since the last success, up to `until` (excluded), were dealt every
    /// shard of `spec` between them.
    pub(crate) fn cover_every_shard(&mut self, spec: &StreamSpec, until: u64) -> bool {
        while self.next < until {
            self.shards.extend(spec.deal(self.next).into_iter().flatten());
            self.next += 1;
        }
        self.shards.len() >= spec.shards.len()
    }
}

/// Position of a [`Stream`]: where its current window started and how much of it was emitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPos {
    pub window_start: SourcePos,
    pub window: u64,
    pub emitted: usize,
}

/// Samples in a deterministic, window-shuffled order, endlessly.
pub struct Stream {
    source: Source,
    items: Vec<Option<Item>>,
    window_start: SourcePos,
    window: u64,
    emitted: usize,
    exhausted: bool,
    samples_in_pass: u64,
    /// Whole passes without a sample since the last pass with one.
    fruitless: FruitlessPasses,
    pub stats: SkipStats,
    warner: SkipWarner,
}

impl Stream {
    /// Opens the stream at the start, or at a saved `pos`, whose window is replayed without
    /// counting its skips again (`stats` already holds them).
    pub fn new(spec: StreamSpec, saved: Option<StreamPos>, stats: SkipStats) -> Stream {
        let fresh = saved.is_none();
        let pos = saved.unwrap_or_else(Stream::start);
        let whole_pass = pos.window_start.slots.iter().all(|s| *s == SlotPos::default());
        let pass = pos.window_start.pass;
        let source = Source::new(spec, pos.window_start.clone());
        let mut stream = Stream {
            source,
            items: Vec::new(),
            window_start: pos.window_start.clone(),
            window: pos.window,
            emitted: 0,
            exhausted: false,
            samples_in_pass: 0,
            // A pass resumed from a cursor within it is not read whole.
            fruitless: FruitlessPasses::from_pass(if whole_pass { pass } else { pass + 1 }),
            stats,
            warner: SkipWarner::default(),
        };
        stream.fill(pos.window, fresh);
        stream.emitted = pos.emitted.min(stream.items.len());
        stream
    }

    pub fn start() -> StreamPos {
        StreamPos { window_start: SourcePos::default(), window: 0, emitted: 0 }
    }

    pub fn position(&self) -> StreamPos {
        StreamPos {
            window_start: self.window_start.clone(),
            window: self.window,
            emitted: self.emitted,
        }
    }

    pub fn spec(&self) -> &StreamSpec {
        &self.source.spec
    }

    /// The next sample; an error only when this rank read every shard of the list whole, in
    /// passes without a sample, since its last sample.
    pub fn next_item(&mut self) -> crate::Result<Item> {
        loop {
            if self.emitted < self.items.len() {
                let item = self.items[self.emitted].take().expect("each item is emitted once");
                self.emitted += 1;
                return Ok(item);
            }
            if self.exhausted {
                let pass = self.source.pos.pass;
                if self.samples_in_pass > 0 {
                    self.fruitless.succeeded(pass);
                } else if self.fruitless.cover_every_shard(&self.source.spec, pass + 1) {
                    return Err(crate::DataError::Invalid(format!(
                        "rank {} found no usable sample in any of the {} shards, each read whole \
                         since its last sample (skips so far: {:?})",
                        self.source.spec.rank,
                        self.source.spec.shards.len(),
                        self.stats.skipped
                    )));
                }
                self.source.start_pass(pass + 1);
                self.samples_in_pass = 0;
                self.fill(0, true);
            } else {
                self.fill(self.window + 1, true);
            }
        }
    }

    fn fill(&mut self, window: u64, count: bool) {
        self.window = window;
        self.window_start = self.source.pos.clone();
        self.items.clear();
        self.emitted = 0;
        self.exhausted = false;
        let spec = self.source.spec.clone();
        while self.items.len() < spec.window.max(1) {
            let Some((unit, shard)) = self.source.next_unit() else {
                self.exhausted = true;
                break;
            };
            let skip = match unit {
                Unit::Sample(sample) if spec.filters.passes(&sample.meta) => {
                    self.items.push(Some(Item {
                        sample,
                        shard,
                        pass: self.source.pos.pass,
                        crop_at: 0.5,
                        flip: false,
                    }));
                    continue;
                }
                Unit::Sample(sample) => {
                    (SkipReason::Filtered, Some(sample.key), "metadata filter".to_string())
                }
                Unit::Skip { reason, key, detail } => (reason, key, detail),
            };
            if count {
                self.stats.add_skip(skip.0);
                let name = spec.shards[shard].path.display().to_string();
                self.warner.warn(skip.0, &name, skip.1.as_deref(), &skip.2);
            }
        }
        self.samples_in_pass += self.items.len() as u64;
        let pass = self.source.pos.pass;
        let mut rng =
            ChaCha8Rng::seed_from_u64(mix(&[2, spec.seed, spec.rank as u64, pass, window]));
        self.items.shuffle(&mut rng);
        for item in self.items.iter_mut().flatten() {
            item.crop_at = rng.random::<f64>();
            item.flip = spec.flip && rng.random::<bool>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize, world: usize, rank: usize, readers: usize) -> StreamSpec {
        let shards = (0..n)
            .map(|i| ShardEntry {
                path: format!("{i}.tar").into(),
                format: ShardFormat::Wds,
                columns: ColumnsConfig::default(),
            })
            .collect();
        StreamSpec {
            shards: Arc::new(shards),
            seed: 3,
            rank,
            world,
            readers,
            window: 8,
            flip: false,
            filters: FilterConfig::default(),
        }
    }

    #[test]
    fn every_rank_gets_as_many_shards_and_no_shard_twice() {
        for pass in 0..4 {
            let dealt: Vec<Vec<usize>> =
                (0..3).map(|r| spec(10, 3, r, 2).deal(pass).concat()).collect();
            assert!(dealt.iter().all(|d| d.len() == 3));
            let mut all = dealt.concat();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 9);
        }
        assert_ne!(spec(10, 1, 0, 1).deal(0), spec(10, 1, 0, 1).deal(1));
    }
}
