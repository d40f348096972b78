use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::key::{cache_key, index_key};
use super::manifest::{CacheDtype, EncoderIdentity, Manifest};
use crate::error::{DataError, Result};

/// One caption's cached embeddings, borrowed from the memory-mapped shard.
#[derive(Debug, Clone, Copy)]
pub struct CachedEmbedding<'a> {
    /// Number of real tokens (EOS included).
    pub tokens: usize,
    pub d_model: usize,
    pub dtype: CacheDtype,
    /// `tokens x d_model` little-endian values of `dtype`.
    pub bytes: &'a [u8],
}

impl CachedEmbedding<'_> {
    /// The values as f32 (bf16 widened exactly).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.tokens * self.d_model];
        self.widen_into(&mut out);
        out
    }

    /// Writes the values as f32 into `out` (`tokens x d_model` long).
    pub fn widen_into(&self, out: &mut [f32]) {
        match self.dtype {
            CacheDtype::F32 => {
                for (o, b) in out.iter_mut().zip(self.bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            CacheDtype::Bf16 => {
                for (o, b) in out.iter_mut().zip(self.bytes.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
                }
            }
        }
    }
}

#[derive(Debug)]
struct Shard {
    mmap: memmap2::Mmap,
    /// Byte range of `embeddings` in the file.
    data_start: usize,
    offsets: Vec<i64>,
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

/// A cache directory opened for random access by key: every shard memory-mapped, one hash map
/// from the cache key's 128-bit digest ([`index_key`]) to (shard, row).
#[derive(Debug)]
pub struct EmbedCache {
    dir: PathBuf,
    identity: EncoderIdentity,
    shards: Vec<Shard>,
    index: HashMap<[u8; 16], (u32, u32)>,
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
        Ok(Self { dir: dir.to_owned(), identity: expected.clone(), shards, index })
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
                self.get(k, c).ok_or_else(|| {
                    miss(format!(
                        "sample {k:?} (caption {c:?}) is not in the embedding cache; re-run \
                         `imagen embed`"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let d = self.identity.d_model;
        let len = found.iter().map(|e| e.tokens).max().unwrap_or(0).max(1);
        let mut values = vec![0f32; found.len() * len * d];
        let mut mask = vec![false; found.len() * len];
        for (i, e) in found.iter().enumerate() {
            e.widen_into(&mut values[i * len * d..(i * len + e.tokens) * d]);
            mask[i * len..i * len + e.tokens].fill(true);
        }
        Ok(TextBatch { values, mask, len, d_model: d })
    }

    /// The embeddings of sample `key` with caption `caption`, if cached.
    pub fn get(&self, key: &str, caption: &str) -> Option<CachedEmbedding<'_>> {
        let &(shard, row) = self.index.get(&index_key(&cache_key(key, caption)))?;
        let shard = &self.shards[shard as usize];
        let (start, end) =
            (shard.offsets[row as usize] as usize, shard.offsets[row as usize + 1] as usize);
        let row_bytes = self.identity.d_model * self.identity.dtype.size();
        let bytes =
            &shard.mmap[shard.data_start + start * row_bytes..shard.data_start + end * row_bytes];
        Some(CachedEmbedding {
            tokens: end - start,
            d_model: self.identity.d_model,
            dtype: self.identity.dtype,
            bytes,
        })
    }
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
    let file = std::fs::File::open(path)
        .map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    // SAFETY: cache files are written once (atomic rename) and never modified in place.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    let st = SafeTensors::deserialize(&mmap).map_err(|e| damaged(e.to_string()))?;
    let (header_len, meta) =
        SafeTensors::read_metadata(&mmap).map_err(|e| damaged(e.to_string()))?;
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
    let emb = st.tensor("embeddings").map_err(|e| damaged(e.to_string()))?;
    let off = st.tensor("offsets").map_err(|e| damaged(e.to_string()))?;
    if emb.dtype() != identity.dtype.safetensors()
        || emb.shape().len() != 2
        || emb.shape()[1] != identity.d_model
    {
        return Err(damaged(format!(
            "embeddings {:?} {:?}, expected [_, {}]",
            emb.dtype(),
            emb.shape(),
            identity.d_model
        )));
    }
    if off.dtype() != Dtype::I64 || off.shape() != [keys.len() + 1] {
        return Err(damaged(format!("offsets {:?} for {} keys", off.shape(), keys.len())));
    }
    let offsets: Vec<i64> = off
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let total = emb.shape()[0] as i64;
    if offsets[0] != 0 || offsets.windows(2).any(|w| w[1] <= w[0]) || offsets[keys.len()] != total {
        return Err(damaged("offsets are not increasing from 0 to the token count".into()));
    }
    let info = meta.info("embeddings").expect("checked above");
    let data_start = 8 + header_len + info.data_offsets.0;
    Ok((Shard { mmap, data_start, offsets }, keys))
}
