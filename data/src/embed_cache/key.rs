use sha2::{Digest, Sha256};

/// The cache key of a sample: its key and a hash of its caption, so that a changed caption
/// misses the cache instead of returning a stale embedding.
pub fn cache_key(key: &str, caption: &str) -> String {
    let digest = Sha256::digest(caption.as_bytes());
    format!("{key}:{}", hex::encode(&digest[..8]))
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
