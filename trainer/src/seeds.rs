//! Seeds derived from seeds. Every random draw of training and sampling comes from the global
//! generator re-seeded with a seed mixed from the run's seed and what the draw is for (a step, a
//! sample, an image, a sampling step), so a draw depends on those alone: not on generator state
//! carried from earlier (nothing to save for an exact resume), nor on its batch-mates.

/// A seed for item `k` under `seed` (a SplitMix64-style finaliser of both; distinct `k` give
/// unrelated seeds).
pub fn mix(seed: u64, k: u64) -> i64 {
    let mut x = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 1) as i64
}

/// Standard normal noise `[seeds.len(), per...]`, row `i` drawn from the global generator seeded
/// with `mix(seeds[i], draw)`: each row depends on its own seed and `draw` alone.
pub fn randn_rows(seeds: &[i64], draw: u64, per: &[i64], device: tch::Device) -> tch::Tensor {
    let shape: Vec<i64> = std::iter::once(1).chain(per.iter().copied()).collect();
    let rows: Vec<tch::Tensor> = seeds
        .iter()
        .map(|&s| {
            tch::manual_seed(mix(s as u64, draw));
            tch::Tensor::randn(&shape, (tch::Kind::Float, device))
        })
        .collect();
    tch::Tensor::cat(&rows, 0)
}
