//! The loader the trainer consumes: batches of u8 NHWC pixels with captions and keys, for one rank,
//! endlessly, deterministic for a seed and resumable from a [`Cursor`].
//!
//! A background thread reads the [`Stream`], decodes on a rayon pool of `workers` threads and keeps
//! `prefetch` batches queued. A sample that fails to decode is counted and replaced by the next
//! one, so every batch is full. Epochs are nominal: every rank yields exactly `epoch_batches`
//! batches per epoch (configured, or derived from the shards' sample counts), while the sample
//! stream under it rolls over passes independently, so no rank can run dry before another.
//!
//! With a text cache ([`Loader::with_text_cache`]), the same thread also looks each batch's
//! captions up in the T5 embedding cache and widens them to f32, so a `frozen-cached` training
//! step finds its text conditioning ready in [`Batch::text`].

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::config::{ColumnsConfig, DataConfig, FilterConfig, FormatChoice};
use crate::decode::{decode_into, Transform};
use crate::embed_cache::{EmbedCache, TextBatch};
use crate::error::{panic_message, DataError, Result};
use crate::reader::{count_samples, SampleMeta, ShardReader, Unit};
use crate::shards::{expand_shards, stats_marker, ShardFormat};
use crate::stats::{SkipReason, SkipStats, SkipWarner};
use crate::stream::{FruitlessPasses, ShardEntry, Stream, StreamPos, StreamSpec};

/// The stream's position after a batch: small, serialisable, stored in checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    /// Seed, rank and world size the cursor belongs to; restoring elsewhere is refused.
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    /// Number of shards in the expanded list (a changed list is refused).
    pub shards: usize,
    /// Batches returned so far.
    pub batches: u64,
    /// Where the current shuffle window starts and how much of it was emitted.
    pub stream: StreamPos,
    /// Good samples and skips so far.
    pub stats: SkipStats,
    /// What else decides the stream's order; a cursor is exact only under the same settings.
    /// (Absent from cursors saved before it existed: those are checked as before.)
    #[serde(default)]
    pub settings: Option<StreamSettings>,
}

/// The settings, besides seed, rank and world size, that decide which samples a rank's stream
/// yields in which order: restoring a cursor under others would silently skip or repeat data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamSettings {
    /// SHA-256 (16 hex digits) of the shards' file names in order (names, not directories: a
    /// dataset copied to another disk is the same list).
    pub shard_list: String,
    pub readers: usize,
    pub shuffle_buffer: usize,
    pub flip: bool,
    pub filters: FilterConfig,
    /// `data.format` and `data.columns`, which decide which rows of a shard are samples (absent
    /// from cursors saved before they were recorded, and then not compared).
    #[serde(default)]
    pub format: Option<FormatChoice>,
    #[serde(default)]
    pub columns: Option<ColumnsConfig>,
}

impl StreamSettings {
    fn of(cfg: &DataConfig, shards: &[ShardEntry]) -> Self {
        let mut hash = Sha256::new();
        for entry in shards {
            let name = entry.path.file_name().unwrap_or(entry.path.as_os_str());
            hash.update(name.as_encoded_bytes());
            hash.update([0]);
        }
        Self {
            shard_list: hex::encode(&hash.finalize()[..8]),
            readers: cfg.readers,
            shuffle_buffer: cfg.shuffle_buffer,
            flip: cfg.flip,
            filters: cfg.filters.clone(),
            format: Some(cfg.format),
            columns: Some(cfg.columns.clone()),
        }
    }

    /// The `data.*` settings that differ from `other`, as "field: saved -> now".
    fn differences(&self, now: &Self) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |field: &str, saved: String, current: String| {
            if saved != current {
                out.push(format!("data.{field}: {saved} -> {current}"));
            }
        };
        differ("shards (file names)", self.shard_list.clone(), now.shard_list.clone());
        differ("readers", self.readers.to_string(), now.readers.to_string());
        differ("shuffle_buffer", self.shuffle_buffer.to_string(), now.shuffle_buffer.to_string());
        differ("flip", self.flip.to_string(), now.flip.to_string());
        differ("filters", format!("{:?}", self.filters), format!("{:?}", now.filters));
        if let (Some(saved), Some(current)) = (&self.format, &now.format) {
            differ("format", format!("{saved:?}"), format!("{current:?}"));
        }
        if let (Some(saved), Some(current)) = (&self.columns, &now.columns) {
            differ("columns", format!("{saved:?}"), format!("{current:?}"));
        }
        out
    }
}

/// One batch: `pixels` is `len * side * side * 3` bytes, NHWC, RGB.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub pixels: Vec<u8>,
    pub side: u32,
    pub captions: Vec<String>,
    pub keys: Vec<String>,
    pub epoch: u64,
    /// The captions' cached embeddings, when the loader was given a text cache.
    pub text: Option<TextBatch>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

type Message = Result<(Batch, Cursor)>;

/// Batches for one rank.
pub struct Loader {
    rx: Receiver<Message>,
    cursor: Cursor,
    epoch_batches: u64,
    /// Whether finished epochs are logged (not for held-out data, drawn afresh every pass).
    log_epochs: bool,
    stopped: Option<String>,
    thread: Option<JoinHandle<()>>,
}

/// The shard list of a config, with formats, minus shards lacking a required stats marker
/// (counted in the returned stats).
pub fn resolve_shards(cfg: &DataConfig) -> Result<(Vec<ShardEntry>, SkipStats)> {
    let mut stats = SkipStats::default();
    let mut entries = Vec::new();
    for path in expand_shards(&cfg.shards)? {
        let format = match cfg.format {
            FormatChoice::Parquet => ShardFormat::Parquet,
            FormatChoice::Wds => ShardFormat::Wds,
            FormatChoice::Auto => ShardFormat::from_path(&path).ok_or_else(|| {
                DataError::ShardList(format!("{}: neither .parquet nor .tar", path.display()))
            })?,
        };
        if cfg.require_stats && !stats_marker(&path).is_file() {
            stats.add_skip(SkipReason::MissingStatsMarker);
            tracing::warn!("skipping {}: no {}", path.display(), stats_marker(&path).display());
            continue;
        }
        entries.push(ShardEntry { path, format, columns: cfg.columns.clone() });
    }
    if entries.is_empty() {
        return Err(DataError::ShardList(format!(
            "{:?}: no shard has its _stats.json marker",
            cfg.shards
        )));
    }
    Ok((entries, stats))
}

/// Batches per epoch when `data.epoch_batches` is 0: every shard's samples counted (its stats
/// marker, or its metadata), the shards a pass leaves out (`shards % world`) discounted, split
/// over the ranks. In a job of many ranks one of them counts and tells the others
/// ([`epoch_batches`] then `data.epoch_batches`), rather than every rank reading every shard.
fn derived_epoch_batches(shards: &[ShardEntry], world: usize, batch_size: usize) -> u64 {
    let total: u64 = shards.iter().map(|e| count_samples(&e.path, e.format, &e.columns)).sum();
    let dealt = total * (shards.len() - shards.len() % world) as u64 / shards.len() as u64;
    (dealt / world as u64 / batch_size as u64).max(1)
}

/// The batches per epoch a loader of `world` ranks under `cfg` yields: `data.epoch_batches`, or
/// derived from the shards' sample counts.
pub fn epoch_batches(cfg: &DataConfig, world: usize) -> Result<u64> {
    if cfg.epoch_batches > 0 {
        return Ok(cfg.epoch_batches);
    }
    let (shards, _) = resolve_shards(cfg)?;
    Ok(derived_epoch_batches(&shards, world.clamp(1, shards.len()), cfg.batch_size.max(1)))
}

/// Refuses filters on columns the shards lack (checked on the first readable shard).
fn check_filter_columns(cfg: &DataConfig, shards: &[ShardEntry]) -> Result<()> {
    let need = cfg.filters.required_columns();
    if need.is_empty() {
        return Ok(());
    }
    let found = shards
        .iter()
        .take(16)
        .find_map(|e| ShardReader::meta_fields(&e.path, e.format).map(|f| (e, f)));
    let Some((shard, fields)) = found else {
        return Err(DataError::Invalid(
            "filters are configured but no shard's columns could be read".into(),
        ));
    };
    for (filter, columns) in &need {
        if !columns.iter().any(|c| fields.iter().any(|f| f == c)) {
            return Err(DataError::Invalid(format!(
                "data.filters.{filter} needs column {} which {} lacks (it has {fields:?})",
                columns.join(" or "),
                shard.path.display()
            )));
        }
    }
    // A column that is there but holds no number (text that does not parse, nulls) would filter
    // out every sample, and the run would read every shard before saying so. The first samples
    // of a few shards are read: one shard without scores does not stop a run.
    const PROBE_SAMPLES: usize = 256;
    const PROBE_SHARDS: usize = 4;
    let mut metas: Vec<SampleMeta> = Vec::new();
    let mut probed = Vec::new();
    for e in shards.iter().take(16).filter(|e| e.format == shard.format).take(PROBE_SHARDS) {
        let units = ShardReader::open(&e.path, e.format, &e.columns).take(PROBE_SAMPLES);
        metas.extend(units.filter_map(|unit| match unit {
            Unit::Sample(sample) => Some(sample.meta),
            Unit::Skip { .. } => None,
        }));
        probed.push(e.path.display().to_string());
    }
    if metas.is_empty() {
        return Ok(());
    }
    if let Some(filter) = cfg.filters.without_values(&metas).first() {
        let columns = need.iter().find(|(f, _)| f == filter).map(|(_, c)| c.join(" or "));
        return Err(DataError::Invalid(format!(
            "data.filters.{filter} needs a number in column {}, but none of the {} samples read \
             from the start of {} has one (the column holds text that is not a number, or nulls)",
            columns.unwrap_or_default(),
            metas.len(),
            probed.join(", ")
        )));
    }
    Ok(())
}

impl Loader {
    /// Batches of rank `rank` of `world` at `side` pixels, from `cursor` or the start.
    pub fn new(
        cfg: &DataConfig,
        side: u32,
        rank: usize,
        world: usize,
        cursor: Option<Cursor>,
    ) -> Result<Loader> {
        Self::start(cfg, side, rank, world, cursor, None)
    }

    /// As [`Loader::new`], with every batch's cached text embeddings in [`Batch::text`]; a sample
    /// missing from the cache stops the loader with an error naming it.
    pub fn with_text_cache(
        cfg: &DataConfig,
        side: u32,
        rank: usize,
        world: usize,
        cursor: Option<Cursor>,
        cache: Arc<EmbedCache>,
    ) -> Result<Loader> {
        Self::start(cfg, side, rank, world, cursor, Some(cache))
    }

    fn start(
        cfg: &DataConfig,
        side: u32,
        rank: usize,
        world: usize,
        cursor: Option<Cursor>,
        text_cache: Option<Arc<EmbedCache>>,
    ) -> Result<Loader> {
        if world == 0 || rank >= world {
            return Err(DataError::Invalid(format!("rank {rank} is not in a world of {world}")));
        }
        if cfg.batch_size == 0 || side == 0 {
            return Err(DataError::Invalid("data.batch_size and side must be positive".into()));
        }
        let (shards, initial_stats) = resolve_shards(cfg)?;
        if shards.len() < world {
            return Err(DataError::Invalid(format!(
                "{} shards cannot be dealt to {world} ranks: every rank needs at least one",
                shards.len()
            )));
        }
        check_filter_columns(cfg, &shards)?;
        let settings = StreamSettings::of(cfg, &shards);
        if let Some(c) = &cursor {
            if (c.seed, c.rank, c.world, c.shards) != (cfg.seed, rank, world, shards.len()) {
                return Err(DataError::CursorMismatch(format!(
                    "data cursor is for seed {}, rank {}/{}, {} shards; this loader has seed {}, \
                     rank {rank}/{world}, {} shards",
                    c.seed,
                    c.rank,
                    c.world,
                    c.shards,
                    cfg.seed,
                    shards.len()
                )));
            }
            let changed = c.settings.as_ref().map(|saved| saved.differences(&settings));
            if let Some(changed) = changed.filter(|c| !c.is_empty()) {
                return Err(DataError::CursorMismatch(format!(
                    "the data cursor was saved under other data settings ({}), so it cannot \
                     continue the same stream",
                    changed.join("; ")
                )));
            }
        }
        let epoch_batches = match cfg.epoch_batches {
            0 => derived_epoch_batches(&shards, world, cfg.batch_size),
            n => n,
        };
        let spec = StreamSpec {
            shards: Arc::new(shards),
            seed: cfg.seed,
            rank,
            world,
            readers: cfg.readers,
            window: cfg.shuffle_buffer,
            flip: cfg.flip,
            filters: cfg.filters.clone(),
        };
        let start = cursor.clone().unwrap_or(Cursor {
            seed: cfg.seed,
            rank,
            world,
            shards: spec.shards.len(),
            batches: 0,
            stream: Stream::start(),
            stats: initial_stats,
            settings: None,
        });
        // Cursors saved from now on carry the settings (an old cursor gains them too).
        let start = Cursor { settings: Some(settings), ..start };
        let transform = cfg.transform(side);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.workers.max(1))
            .thread_name(move |i| format!("imagen-data-{rank}-{i}"))
            .build()
            .map_err(|e| DataError::Invalid(format!("decode pool: {e}")))?;
        let (tx, rx) = bounded::<Message>(cfg.prefetch.max(1));
        let batch_size = cfg.batch_size;
        let restored = cursor.map(|c| c.stream);
        let mut cursor = start.clone();
        let thread = std::thread::Builder::new()
            .name(format!("imagen-data-{rank}"))
            .spawn(move || {
                let mut stream = Stream::new(spec, restored, cursor.stats.clone());
                let mut warner = SkipWarner::default();
                // The pass the stream resumes within was not decoded whole.
                let mut undecoded = FruitlessPasses::from_pass(cursor.stream.window_start.pass + 1);
                loop {
                    let made = make_batch(
                        &mut stream,
                        &pool,
                        &transform,
                        batch_size,
                        &mut warner,
                        &mut undecoded,
                    )
                    .and_then(|mut batch| {
                        if let Some(cache) = &text_cache {
                            batch.text = Some(cache.lookup_batch(&batch.keys, &batch.captions)?);
                        }
                        Ok(batch)
                    })
                    .map(|mut batch| {
                        batch.epoch = cursor.batches / epoch_batches;
                        cursor.batches += 1;
                        cursor.stream = stream.position();
                        cursor.stats = stream.stats.clone();
                        (batch, cursor.clone())
                    });
                    let failed = made.is_err();
                    if tx.send(made).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| DataError::Invalid(format!("spawning the loader thread: {e}")))?;
        Ok(Loader {
            rx,
            cursor: start,
            epoch_batches,
            log_epochs: true,
            stopped: None,
            thread: Some(thread),
        })
    }

    /// This loader without its "epoch done" log lines: for held-out data, which a validation pass
    /// reads afresh from its start.
    pub fn quiet(mut self) -> Loader {
        self.log_epochs = false;
        self
    }

    /// The next batch; endless (passes over the shards roll over).
    pub fn next_batch(&mut self) -> Result<Batch> {
        if let Some(why) = &self.stopped {
            return Err(DataError::LoaderStopped(why.clone()));
        }
        match self.rx.recv() {
            Ok(Ok((batch, cursor))) => {
                self.cursor = cursor;
                // Logged here, not where the batch is made: the producer runs `prefetch` batches
                // ahead of what training has used.
                if self.log_epochs && self.cursor.batches % self.epoch_batches == 0 {
                    let s = &self.cursor.stats;
                    tracing::info!(
                        "data rank {}: epoch {} done ({} batches); {} good samples so far, \
                         skipped {:?}",
                        self.cursor.rank,
                        batch.epoch,
                        self.epoch_batches,
                        s.good,
                        s.skipped
                    );
                }
                Ok(batch)
            }
            Ok(Err(e)) => {
                self.stopped = Some(e.to_string());
                Err(e)
            }
            Err(_) => {
                // The producer only stops sending by panicking: name the panic.
                let why = match self.thread.take().map(JoinHandle::join) {
                    Some(Err(panic)) => {
                        format!("its thread panicked: {}", panic_message(panic.as_ref()))
                    }
                    _ => "its thread ended".to_string(),
                };
                self.stopped = Some(why.clone());
                Err(DataError::LoaderStopped(why))
            }
        }
    }

    /// The position after the last batch returned.
    pub fn cursor(&self) -> Cursor {
        self.cursor.clone()
    }

    /// Good samples and skips by reason, as of the last batch returned.
    pub fn stats(&self) -> SkipStats {
        self.cursor.stats.clone()
    }

    /// The settings that decide this rank's stream (its shard list's digest among them).
    pub fn settings(&self) -> Option<&StreamSettings> {
        self.cursor.settings.as_ref()
    }

    /// Batches per (nominal) epoch, the same on every rank.
    pub fn epoch_batches(&self) -> u64 {
        self.epoch_batches
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the producer (its send fails once the receiver is gone), then wait for it.
        let (_, rx) = bounded(1);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Decodes samples from `stream` until `batch_size` succeeded, in stream order.
fn make_batch(
    stream: &mut Stream,
    pool: &rayon::ThreadPool,
    transform: &Transform,
    batch_size: usize,
    warner: &mut SkipWarner,
    undecoded: &mut FruitlessPasses,
) -> Result<Batch> {
    let side = transform.side;
    let image = side as usize * side as usize * 3;
    let mut pixels = vec![0u8; batch_size * image];
    let mut keys = Vec::with_capacity(batch_size);
    let mut captions = Vec::with_capacity(batch_size);
    while keys.len() < batch_size {
        let filled = keys.len();
        let items = (filled..batch_size).map(|_| stream.next_item()).collect::<Result<Vec<_>>>()?;
        let results: Vec<_> = pool.install(|| {
            pixels[filled * image..]
                .par_chunks_mut(image)
                .zip(items.par_iter())
                .map(|(out, item)| {
                    let t = Transform { crop_at: item.crop_at, flip: item.flip, ..*transform };
                    decode_into(&item.sample.image, &t, out)
                })
                .collect()
        });
        for (i, (item, result)) in items.into_iter().zip(results).enumerate() {
            match result {
                Ok(()) => {
                    undecoded.succeeded(item.pass);
                    let at = keys.len();
                    if at != filled + i {
                        pixels.copy_within(
                            (filled + i) * image..(filled + i + 1) * image,
                            at * image,
                        );
                    }
                    stream.stats.good += 1;
                    keys.push(item.sample.key);
                    captions.push(item.sample.caption);
                }
                Err(f) => {
                    if undecoded.cover_every_shard(stream.spec(), item.pass) {
                        let spec = stream.spec();
                        return Err(DataError::Invalid(format!(
                            "rank {} decoded no sample of any of the {} shards, each read whole \
                             since its last decoded sample (last: {}: {})",
                            spec.rank,
                            spec.shards.len(),
                            f.reason.as_str(),
                            f.detail
                        )));
                    }
                    stream.stats.add_skip(f.reason);
                    let shard = stream.spec().shards[item.shard].path.display().to_string();
                    warner.warn(f.reason, &shard, Some(&item.sample.key), &f.detail);
                }
            }
        }
    }
    Ok(Batch { pixels, side, captions, keys, epoch: 0, text: None })
}
