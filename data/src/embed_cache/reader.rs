use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use safetensors::tensor::Metadata;
use safetensors::Dtype;

use super::key::{cache_key, index_key};
use super::manifest::{CacheDtype, EncoderIdentity, Manifest};
use crate::error::{DataError, Result};

/// Cache files kept open at once. A batch draws its samples from a few data shards at a time, so
/// a few dozen files serve it; the rest are reopened when needed. Neither open files nor memory
/// maps grow with the number of shards (LAION-2B at img2dataset's 10,000 samples a shard is about
/// 230,000 files, beyond Linux's default of 65,530 maps a process).
pub(super) const OPEN_FILES: usize = 64;

/// One caption's cached embeddings, read from its cache file.
#[derive(Debug, Clone)]
pub struct CachedEmbedding {
    /// Number of real tokens (EOS included).
    pub tokens: usize,
    pub d_model: usize,
    pub dtype: CacheDtype,
    /// `tokens x d_model` little-endian values of `dtype`.
    pub bytes: Vec<u8>,
}

impl CachedEmbedding {
    /// The values as f32 (bf16 widened exactly).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.tokens * self.d_model];
        self.widen_into(&mut out);
        out
    }

    /// Writes the values as f32 into `out` (`tokens x d_model` long).
    pub fn widen_into(&self, out: &mut [f32]) {
        widen(self.dtype, &self.bytes, out);
    }
}

/// Little-endian values of `dtype` as f32 into `out` (bf16 widened exactly).
fn widen(dtype: CacheDtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        CacheDtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        CacheDtype::Bf16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
    }
}

/// Where one cache file's embeddings are: read with positioned reads, not mapped.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    /// File offset of the `embeddings` tensor's first byte.
    data_start: u64,
    offsets: Vec<i64>,
}

/// One cached caption's rows: `start..end` of the embeddings of shard `shard`.
struct Rows {
    shard: u32,
    start: u64,
    end: u64,
}

impl Rows {
    fn tokens(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// A batch's cached embeddings, padded to its longest caption: what the text conditioner turns
/// into tensors. Built on the loader thread (see `Loader::with_text_cache`) so the training step
/// does not wait on the lookup and the widening of bf16.
#[derive(Clone, Debug, PartialEq)]
pub struct TextBatch {
    /// `batch x len x d_model` f32, zero at padded positions.
    pub values: Vec<f32>,
    /// `batch x len`, true at real tokens.
    pub mask: Vec<bool>,
    /// Tokens of the longest caption (at least 1).
    pub len: usize,
    pub d_model: usize,
}

/// A cache directory opened for random access by key: every shard's header read once into one
/// hash map from the cache key's 128-bit digest ([`index_key`]) to (shard, row); embeddings are
/// read from the files on lookup, through at most [`OPEN_FILES`] open files.
#[derive(Debug)]
pub struct EmbedCache {
    dir: PathBuf,
    identity: EncoderIdentity,
    shards: Vec<Shard>,
    index: HashMap<[u8; 16], (u32, u32)>,
    open: Mutex<LruCache<u32, Arc<File>>>,
}

impl EmbedCache {
    /// Opens `dir`, refusing it unless its manifest names `expected`, and checking every shard.
    pub fn open(dir: &Path, expected: &EncoderIdentity) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        manifest.check(dir, expected)?;
        let digest = expected.digest();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| DataError::Io { path: dir.to_owned(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "safetensors")
                    && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut shards = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let (shard, keys) = open_shard(&path, expected, &digest)?;
            let id = shards.len() as u32;
            for (row, key) in keys.into_iter().enumerate() {
                index.insert(index_key(&key), (id, row as u32));
            }
            shards.push(shard);
        }
        let open = Mutex::new(LruCache::new(NonZeroUsize::new(OPEN_FILES).expect("not zero")));
        Ok(Self { dir: dir.to_owned(), identity: expected.clone(), shards, index, open })
    }

    /// Number of cached captions.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn identity(&self) -> &EncoderIdentity {
        &self.identity
    }

    /// The padded embeddings of a batch of (`keys[i]`, `captions[i]`); a sample that is not cached
    /// is an error naming it and the cache.
    pub fn lookup_batch(&self, keys: &[String], captions: &[String]) -> Result<TextBatch> {
        let miss = |message: String| DataError::EmbedCache { path: self.dir.clone(), message };
        if keys.len() != captions.len() {
            return Err(miss(format!("{} keys for {} captions", keys.len(), captions.len())));
        }
        let found = keys
            .iter()
            .zip(captions)
            .map(|(k, c)| {
                self.locate(k, c).ok_or_else(|| {
                    miss(format!(
                        "sample {k:?} (caption {c:?}) is not in the embedding cache; re-run \
                         `imagen embed`"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let d = self.identity.d_model;
        let len = found.iter().map(|r| r.tokens()).max().unwrap_or(0).max(1);
        let mut values = vec![0f32; found.len() * len * d];
        let mut mask = vec![false; found.len() * len];
        // One buffer for the batch's reads: a fresh one per caption made lookups about 13% slower.
        let mut bytes = Vec::new();
        for (i, rows) in found.iter().enumerate() {
            self.read(rows, &mut bytes)?;
            let n = rows.tokens();
            widen(self.identity.dtype, &bytes, &mut values[i * len * d..(i * len + n) * d]);
            mask[i * len..i * len + n].fill(true);
        }
        Ok(TextBatch { values, mask, len, d_model: d })
    }

    /// The embeddings of sample `key` with caption `caption`: None when it is not cached, an
    /// error when its file cannot be read.
    pub fn get(&self, key: &str, caption: &str) -> Result<Option<CachedEmbedding>> {
        let Some(rows) = self.locate(key, caption) else { return Ok(None) };
        let mut bytes = Vec::new();
        self.read(&rows, &mut bytes)?;
        Ok(Some(CachedEmbedding {
            tokens: rows.tokens(),
            d_model: self.identity.d_model,
            dtype: self.identity.dtype,
            bytes,
        }))
    }

    /// Where a caption's rows are, if it is cached.
    fn locate(&self, key: &str, caption: &str) -> Option<Rows> {
        let &(shard, row) = self.index.get(&index_key(&cache_key(key, caption)))?;
        let offsets = &self.shards[shard as usize].offsets;
        let (start, end) = (offsets[row as usize] as u64, offsets[row as usize + 1] as u64);
        Some(Rows { shard, start, end })
    }

    /// Reads `rows` into `bytes` (resized to fit).
    fn read(&self, rows: &Rows, bytes: &mut Vec<u8>) -> Result<()> {
        let shard = &self.shards[rows.shard as usize];
        let row_bytes = (self.identity.d_model * self.identity.dtype.size()) as u64;
        bytes.resize((rows.tokens() as u64 * row_bytes) as usize, 0);
        let io = |source| DataError::Io { path: shard.path.clone(), source };
        self.file(rows.shard)
            .map_err(io)?
            .read_exact_at(bytes, shard.data_start + rows.start * row_bytes)
            .map_err(io)
    }

    /// Shard `id`'s file, opened again if it was not among the recently used.
    fn file(&self, id: u32) -> std::io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = open.get(&id) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(&self.shards[id as usize].path)?);
        open.put(id, file.clone());
        Ok(file)
    }

    /// Cache files open now (at most [`OPEN_FILES`]).
    pub fn open_files(&self) -> usize {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

/// A safetensors file's header, read without reading (or mapping) its tensors: the header's
/// length, its parsed metadata (offsets checked) and the file. The file's length must be what
/// the header describes.
pub(crate) fn read_header(path: &Path) -> std::result::Result<(u64, Metadata, File), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0).map_err(|e| format!("no header length ({e})"))?;
    let n = u64::from_le_bytes(n);
    // safetensors' own bound on a header (100 MB).
    if n > 100_000_000 || 8 + n > file_len {
        return Err(format!("header length {n} in a file of {file_len} bytes"));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| format!("header ({e})"))?;
    let meta: Metadata = serde_json::from_slice(&header).map_err(|e| format!("header ({e})"))?;
    if 8 + n + meta.data_len() as u64 != file_len {
        return Err(format!(
            "{file_len} bytes, but the header describes {}",
            8 + n + meta.data_len() as u64
        ));
    }
    Ok((n, meta, file))
}

fn open_shard(
    path: &Path,
    identity: &EncoderIdentity,
    digest: &str,
) -> Result<(Shard, Vec<String>)> {
    let damaged = |why: String| DataError::EmbedCache {
        path: path.to_owned(),
        message: format!(
            "damaged cache shard ({why}); delete it and re-run `imagen embed` to re-embed it"
        ),
    };
    let (header_len, meta, file) = read_header(path).map_err(&damaged)?;
    let extra = meta.metadata().as_ref().ok_or_else(|| damaged("no metadata".into()))?;
    if extra.get("identity").map(String::as_str) != Some(digest) {
        return Err(DataError::EmbedCache {
            path: path.to_owned(),
            message:
                "this shard was written by another encoder than the manifest names; delete it and \
                      re-run `imagen embed`"
                    .into(),
        });
    }
    let keys: Vec<String> = extra
        .get("keys")
        .and_then(|k| serde_json::from_str(k).ok())
        .ok_or_else(|| damaged("no readable key list".into()))?;
    let tensor = |name: &str| meta.info(name).ok_or_else(|| damaged(format!("no {name:?}")));
    let (emb, off) = (tensor("embeddings")?, tensor("offsets")?);
    if emb.dtype != identity.dtype.safetensors()
        || emb.shape.len() != 2
        || emb.shape[1] != identity.d_model
    {
        return Err(damaged(format!(
            "embeddings {:?} {:?}, expected [_, {}]",
            emb.dtype, emb.shape, identity.d_model
        )));
    }
    if off.dtype != Dtype::I64 || off.shape != [keys.len() + 1] {
        return Err(damaged(format!("offsets {:?} for {} keys", off.shape, keys.len())));
    }
    let data_start = 8 + header_len;
    let mut raw = vec![0u8; off.data_offsets.1 - off.data_offsets.0];
    file.read_exact_at(&mut raw, data_start + off.data_offsets.0 as u64)
        .map_err(|e| damaged(format!("offsets ({e})")))?;
    let offsets: Vec<i64> =
        raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
    let total = emb.shape[0] as i64;
    if offsets[0] != 0 || offsets.windows(2).any(|w| w[1] <= w[0]) || offsets[keys.len()] != total {
        return Err(damaged("offsets are not increasing from 0 to the token count".into()));
    }
    let shard = Shard {
        path: path.to_owned(),
        data_start: data_start + emb.data_offsets.0 as u64,
        offsets,
    };
    Ok((shard, keys))
}
