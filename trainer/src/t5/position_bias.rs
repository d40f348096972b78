//! T5's bucketed relative position bias (Raffel et al. 2020, §2.1), computed once in the first
//! block and shared by all blocks.

use tch::{nn, Device, Kind, Tensor};

use super::param::Params;

#[derive(Debug)]
pub struct RelativePositionBias {
    /// `[num_buckets, num_heads]`: one scalar per head and bucket.
    weight: Tensor,
    num_buckets: i64,
    max_distance: i64,
}

impl RelativePositionBias {
    pub(crate) fn new(
        path: nn::Path,
        num_buckets: i64,
        max_distance: i64,
        num_heads: i64,
        p: Params,
    ) -> Self {
        let weight = p.add(&path, "weight", &[num_buckets, num_heads]);
        Self { weight, num_buckets, max_distance }
    }

    /// `[1, heads, q_len, k_len]` in the weight's dtype.
    pub fn forward(&self, q_len: i64, k_len: i64) -> Tensor {
        let buckets = relative_position_bucket(
            q_len,
            k_len,
            self.num_buckets,
            self.max_distance,
            self.weight.device(),
        );
        Tensor::embedding(&self.weight, &buckets, -1, false, false).permute([2, 0, 1]).unsqueeze(0)
    }
}

/// Bidirectional buckets, as Hugging Face's `T5Attention._relative_position_bucket`: half the
/// buckets per direction; within a direction, exact buckets for distances below half of them,
/// then logarithmically wider ones up to `max_distance`. Computed with the same fp32 tensor ops
/// so that bucket boundaries agree exactly.
pub fn relative_position_bucket(
    q_len: i64,
    k_len: i64,
    num_buckets: i64,
    max_distance: i64,
    device: Device,
) -> Tensor {
    let context = Tensor::arange(q_len, (Kind::Int64, device)).unsqueeze(1);
    let memory = Tensor::arange(k_len, (Kind::Int64, device)).unsqueeze(0);
    let relative = memory - context;
    let half = num_buckets / 2;
    let direction = relative.gt(0).to_kind(Kind::Int64) * half;
    let distance = relative.abs();
    let max_exact = half / 2;
    let is_small = distance.lt(max_exact);
    let log_ratio = (distance.to_kind(Kind::Float) / max_exact as f64).log()
        / (max_distance as f64 / max_exact as f64).ln()
        * (half - max_exact) as f64;
    let large = (log_ratio.to_kind(Kind::Int64) + max_exact).clamp_max(half - 1);
    direction + distance.where_self(&is_small, &large)
}
