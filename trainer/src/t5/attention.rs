//! T5 self-attention: no bias terms and no 1/sqrt(d) scaling (the scale is folded into the
//! initialisation, Raffel et al. 2020), plus the shared relative position bias.

use tch::{nn, Tensor};

use super::config::T5Config;
use super::param::Params;

#[derive(Debug)]
pub struct T5Attention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    num_heads: i64,
    d_kv: i64,
}

impl T5Attention {
    pub(crate) fn new(path: nn::Path, cfg: &T5Config, p: Params) -> Self {
        let inner = cfg.inner_dim();
        let w = |name: &str, dims: &[i64]| p.add(&(&path / name), "weight", dims);
        Self {
            q: w("q", &[inner, cfg.d_model]),
            k: w("k", &[inner, cfg.d_model]),
            v: w("v", &[inner, cfg.d_model]),
            o: w("o", &[cfg.d_model, inner]),
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        }
    }

    /// `x`: `[B, L, d_model]`; `bias`: `[B or 1, heads, L, L]`, the position bias with the padding
    /// mask already added (large negative at padded keys).
    pub fn forward(&self, x: &Tensor, bias: &Tensor) -> Tensor {
        let (b, l, _) = x.size3().expect("[B, L, d_model]");
        let heads = |w: &Tensor| {
            x.linear::<&Tensor>(w, None).view([b, l, self.num_heads, self.d_kv]).transpose(1, 2)
        };
        let (q, k, v) = (heads(&self.q), heads(&self.k), heads(&self.v));
        // Scale 1.0: T5 does not scale the scores. The fused kernel computes softmax in fp32
        // for half-precision inputs, as Hugging Face's eager path does.
        let bias = bias.to_kind(q.kind());
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(&bias),
            0.0,
            false,
            Some(1.0),
            false,
        );
        out.transpose(1, 2)
            .reshape([b, l, self.num_heads * self.d_kv])
            .linear::<&Tensor>(&self.o, None)
    }
}
