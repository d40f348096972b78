use sha2::{Digest, Sha256};

/// The cache key of a sample: its key and a hash of its caption, so that a changed caption
/// misses the cache instead of returning a stale embedding.
pub fn cache_key(key: &str, caption: &str) -> String {
    let digest = Sha256::digest(caption.as_bytes());
    format!("{key}:{}", hex::encode(&digest[..8]))
}

/// What the opened cache indexes a [`cache_key`] by: the first 128 bits of its SHA-256, about a
/// third of the memory of the key strings (a cache of 100 million captions indexes in about
/// 3 GB per rank); two keys of a cache of n share one with a probability near n^2 / 2^129.
pub fn index_key(cache_key: &str) -> [u8; 16] {
    let digest = Sha256::digest(cache_key.as_bytes());
    digest[..16].try_into().expect("a SHA-256 has 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_sample_key_and_caption_hash() {
        // sha256("") = e3b0c442 98fc1c14 ...
        assert_eq!(cache_key("000123", ""), "000123:e3b0c44298fc1c14");
        assert_ne!(cache_key("k", "a red circle"), cache_key("k", "a red square"));
    }
}
