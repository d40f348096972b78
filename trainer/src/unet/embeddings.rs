//! Conditioning vectors: the noise level (time or augmentation level) and the pooled text.

use std::f64::consts::PI;

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Half the number of learned sinusoidal features (imagen-pytorch: `learned_sinu_pos_emb_dim`
/// 16, so 8 frequencies).
const HALF_SINU_DIM: i64 = 8;

/// A scalar noise level (the log-SNR of the diffusion time, or of the augmentation level) ->
/// learned sinusoidal features -> MLP, as imagen-pytorch's `to_time_hiddens` + `to_time_cond`.
#[derive(Debug)]
pub struct LevelEmbedding {
    weights: Tensor,
    hidden: nn::Linear,
    cond: nn::Linear,
}

impl LevelEmbedding {
    /// `name` is "time" or "lowres_time": parameters live under `to_<name>_hiddens` and
    /// `to_<name>_cond`.
    pub fn new(p: &nn::Path, name: &str, time_cond_dim: i64) -> Self {
        let hiddens = p / format!("to_{name}_hiddens");
        let weights = (&hiddens / 0).randn("weights", &[HALF_SINU_DIM], 0.0, 1.0);
        let hidden =
            nn::linear(&hiddens / 1, 2 * HALF_SINU_DIM + 1, time_cond_dim, Default::default());
        let cond = nn::linear(
            p / format!("to_{name}_cond") / 0,
            time_cond_dim,
            time_cond_dim,
            Default::default(),
        );
        Self { weights, hidden, cond }
    }

    pub fn param_count(time_cond_dim: i64) -> i64 {
        HALF_SINU_DIM
            + (2 * HALF_SINU_DIM + 2) * time_cond_dim
            + (time_cond_dim + 1) * time_cond_dim
    }

    pub fn flops(time_cond_dim: i64) -> i64 {
        2 * ((2 * HALF_SINU_DIM + 1) * time_cond_dim + time_cond_dim * time_cond_dim)
    }

    /// level: [B] (the diffusion passes log-SNR) -> [B, time_cond_dim].
    pub fn forward(&self, level: &Tensor) -> Tensor {
        let x = level.to_kind(Kind::Float).unsqueeze(-1);
        let freqs = &x * self.weights.unsqueeze(0) * (2.0 * PI);
        let fourier = Tensor::cat(&[x, freqs.sin(), freqs.cos()], -1);
        self.cond.forward(&self.hidden.forward(&fourier).silu())
    }
}

/// Attention pooling of the text tokens into one vector (Imagen §2.2 / App. B: a pooled text
/// embedding added to the timestep embedding): one learned query attends over the unmasked
/// tokens, then LayerNorm + MLP to the conditioning width.
#[derive(Debug)]
pub struct TextPool {
    query: Tensor,
    to_k: nn::Linear,
    to_v: nn::Linear,
    norm: nn::LayerNorm,
    proj_in: nn::Linear,
    proj_out: nn::Linear,
    heads: i64,
}

impl TextPool {
    /// Parameters under `attn_pool` and `to_text_non_attn_cond` (imagen-pytorch's names).
    pub fn new(p: &nn::Path, cond_dim: i64, time_cond_dim: i64, heads: i64) -> Self {
        let pool = p / "attn_pool";
        let query = pool.randn("query", &[cond_dim], 0.0, 0.02);
        let to_k = nn::linear(&pool / "to_k", cond_dim, cond_dim, Default::default());
        let to_v = nn::linear(&pool / "to_v", cond_dim, cond_dim, Default::default());
        let mlp = p / "to_text_non_attn_cond";
        let norm = nn::layer_norm(&mlp / 0, vec![cond_dim], Default::default());
        let proj_in = nn::linear(&mlp / 1, cond_dim, time_cond_dim, Default::default());
        let proj_out = nn::linear(&mlp / 3, time_cond_dim, time_cond_dim, Default::default());
        let heads = if cond_dim % heads == 0 { heads } else { 1 };
        Self { query, to_k, to_v, norm, proj_in, proj_out, heads }
    }

    pub fn param_count(cond_dim: i64, time_cond_dim: i64) -> i64 {
        cond_dim
            + 2 * (cond_dim + 1) * cond_dim
            + 2 * cond_dim
            + (cond_dim + 1) * time_cond_dim
            + (time_cond_dim + 1) * time_cond_dim
    }

    pub fn flops(cond_dim: i64, time_cond_dim: i64, text_len: i64) -> i64 {
        2 * (2 * text_len * cond_dim * cond_dim
            + 2 * text_len * cond_dim
            + cond_dim * time_cond_dim
            + time_cond_dim * time_cond_dim)
    }

    /// tokens: [B, L, C]; mask: [B, L] bool with at least one true per row -> [B, time_cond_dim].
    pub fn forward(&self, tokens: &Tensor, mask: &Tensor) -> Tensor {
        let (b, l, c) = tokens.size3().expect("text tokens are [B, L, C]");
        let d = c / self.heads;
        let split = |t: Tensor| t.view([b, l, self.heads, d]).transpose(1, 2);
        let k = split(self.to_k.forward(tokens));
        let v = split(self.to_v.forward(tokens));
        let q =
            self.query.to_kind(k.kind()).view([1, self.heads, 1, d]).expand([b, -1, -1, -1], false);
        let attn_mask = mask.view([b, 1, 1, l]);
        let pooled = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(&attn_mask),
            0.0,
            false,
            None,
            false,
        )
        .reshape([b, c]);
        self.proj_out.forward(&self.proj_in.forward(&self.norm.forward(&pooled)).silu())
    }
}
