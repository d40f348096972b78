//! A bit-exact fingerprint of a set of tensors, computed on their device: ranks compare
//! fingerprints instead of shipping weights to prove they hold the same model.

use tch::{Kind, Tensor};

/// Elements hashed per chunk, bounding the temporary int64 copy.
const CHUNK: i64 = 1 << 22;

/// Position-weighted sum of the tensors' bit patterns (as integers, so the sum is exact and
/// order-independent in its arithmetic); any flipped bit changes it.
pub fn fingerprint(tensors: &[(String, Tensor)]) -> i64 {
    tch::no_grad(|| {
        let mut total = 0i64;
        for (i, (_, t)) in tensors.iter().enumerate() {
            let flat = t.detach().contiguous().view([-1]);
            let bits = match flat.kind().elt_size_in_bytes() {
                8 => flat.view_dtype(Kind::Int64),
                4 => flat.view_dtype(Kind::Int),
                2 => flat.view_dtype(Kind::Int16),
                _ => flat.view_dtype(Kind::Int8),
            };
            let n = bits.numel() as i64;
            let mut start = 0;
            while start < n {
                let len = CHUNK.min(n - start);
                let chunk = bits.narrow(0, start, len).to_kind(Kind::Int64);
                let weights = Tensor::arange_start(start, start + len, (Kind::Int64, t.device()))
                    .remainder(65_521)
                    + 1;
                let part = (chunk * weights).sum(Kind::Int64).int64_value(&[]);
                total = total.wrapping_mul(31).wrapping_add(part).wrapping_add(i as i64);
                start += len;
            }
        }
        total
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flipped_bit_changes_the_fingerprint() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, -0.5]);
        let b = a.copy();
        let named = |t: &Tensor| vec![("w".to_owned(), t.shallow_clone())];
        assert_eq!(fingerprint(&named(&a)), fingerprint(&named(&b)));
        let nudged =
            Tensor::from_slice(&[1.0f32, 2.0, 3.0, f32::from_bits((-0.5f32).to_bits() ^ 1)]);
        assert_ne!(fingerprint(&named(&a)), fingerprint(&named(&nudged)));
        let swapped = Tensor::from_slice(&[2.0f32, 1.0, 3.0, -0.5]);
        assert_ne!(fingerprint(&named(&a)), fingerprint(&named(&swapped)));
    }
}
