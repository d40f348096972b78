//! Attention over pixels conditioned on text (Imagen App. B): the text tokens, after a
//! LayerNorm and a projection, are concatenated to the pixels' keys and values (or are the only
//! keys and values, for cross-attention). Padded text positions are masked out. Runs through
//! libtorch's `scaled_dot_product_attention`, so GPUs get the fused kernels.

use tch::nn::{self, Module};
use tch::Tensor;

use super::config::AttnKind;

/// Text tokens projected to `cond_dim`, with the mask of positions that take part.
#[derive(Debug)]
pub struct TextContext {
    /// [B, L, cond_dim]
    pub tokens: Tensor,
    /// [B, L] bool, at least one true per row.
    pub mask: Tensor,
}

#[derive(Debug)]
pub struct Attention {
    norm: nn::LayerNorm,
    to_q: nn::Linear,
    to_kv: Option<nn::Linear>,
    context_norm: nn::LayerNorm,
    to_context: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    dim_head: i64,
}

fn no_bias() -> nn::LinearConfig {
    nn::LinearConfig { bias: false, ..Default::default() }
}

impl Attention {
    pub fn new(
        p: nn::Path,
        dim: i64,
        cond_dim: i64,
        heads: i64,
        dim_head: i64,
        kind: AttnKind,
    ) -> Self {
        let inner = heads * dim_head;
        let norm = nn::layer_norm(&p / "norm", vec![dim], Default::default());
        let to_q = nn::linear(&p / "to_q", dim, inner, no_bias());
        let to_kv = (kind == AttnKind::SelfWithText)
            .then(|| nn::linear(&p / "to_kv", dim, 2 * inner, no_bias()));
        let context_norm =
            nn::layer_norm(&p / "to_context" / 0, vec![cond_dim], Default::default());
        let to_context = nn::linear(&p / "to_context" / 1, cond_dim, 2 * inner, no_bias());
        let to_out = nn::linear(&p / "to_out" / 0, inner, dim, Default::default());
        Self { norm, to_q, to_kv, context_norm, to_context, to_out, heads, dim_head }
    }

    pub fn param_count(dim: i64, cond_dim: i64, inner: i64, kind: AttnKind) -> i64 {
        let kv = if kind == AttnKind::SelfWithText { dim * 2 * inner } else { 0 };
        2 * dim + dim * inner + kv + 2 * cond_dim + cond_dim * 2 * inner + inner * dim + dim
    }

    /// Projections and the two attention matmuls over `pixels` queries and `text_len` tokens.
    pub fn flops(
        dim: i64,
        cond_dim: i64,
        inner: i64,
        kind: AttnKind,
        pixels: i64,
        text_len: i64,
    ) -> i64 {
        let (kv, keys) = match kind {
            AttnKind::SelfWithText => (pixels * dim * 2 * inner, pixels + text_len),
            _ => (0, text_len),
        };
        2 * (pixels * dim * inner
            + kv
            + text_len * cond_dim * 2 * inner
            + 2 * pixels * keys * inner
            + pixels * inner * dim)
    }

    /// x: [B, N, dim] pixel tokens -> [B, N, dim] (without the residual).
    pub fn forward(&self, x: &Tensor, text: &TextContext) -> Tensor {
        let (b, n, _) = x.size3().expect("pixel tokens are [B, N, C]");
        let (h, d) = (self.heads, self.dim_head);
        let split = |t: &Tensor| {
            let len = t.size()[1];
            t.view([b, len, h, d]).transpose(1, 2)
        };
        let x = self.norm.forward(x);
        let q = split(&self.to_q.forward(&x));
        let ctx = self.to_context.forward(&self.context_norm.forward(&text.tokens)).chunk(2, -1);
        let (k, v, mask) = match &self.to_kv {
            Some(to_kv) => {
                let kv = to_kv.forward(&x).chunk(2, -1);
                let k = Tensor::cat(&[&kv[0], &ctx[0]], 1);
                let v = Tensor::cat(&[&kv[1], &ctx[1]], 1);
                let pixels = Tensor::ones([b, n], (tch::Kind::Bool, x.device()));
                (k, v, Tensor::cat(&[&pixels, &text.mask], 1))
            }
            None => (ctx[0].shallow_clone(), ctx[1].shallow_clone(), text.mask.shallow_clone()),
        };
        let keys = mask.size()[1];
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &split(&k),
            &split(&v),
            Some(&mask.view([b, 1, 1, keys])),
            0.0,
            false,
            None,
            false,
        );
        self.to_out.forward(&out.transpose(1, 2).reshape([b, n, h * d]))
    }
}

/// Attention then a feed-forward, each with a residual, on the pixels of a feature map
/// (imagen-pytorch's `TransformerBlock`: `attn`, `ff`).
#[derive(Debug)]
pub struct TransformerBlock {
    attn: Attention,
    ff_norm: nn::LayerNorm,
    ff_in: nn::Linear,
    ff_out: nn::Linear,
}

// SAFETY: as for `ResnetBlock`: built once, then only read by forward passes, which activation
// checkpointing may rerun on autograd's device thread.
unsafe impl Sync for TransformerBlock {}

impl TransformerBlock {
    pub fn new(p: nn::Path, dim: i64, cfg: &super::UNetConfig, kind: AttnKind) -> Self {
        let attn =
            Attention::new(&p / "attn", dim, cfg.cond_dim, cfg.attn_heads, cfg.attn_dim_head, kind);
        let hidden = dim * cfg.ff_mult;
        let ff = &p / "ff";
        let ff_norm = nn::layer_norm(&ff / 0, vec![dim], Default::default());
        let ff_in = nn::linear(&ff / 1, dim, hidden, Default::default());
        let ff_out = nn::linear(&ff / 3, hidden, dim, Default::default());
        Self { attn, ff_norm, ff_in, ff_out }
    }

    pub fn param_count(dim: i64, cfg: &super::UNetConfig, kind: AttnKind) -> i64 {
        let inner = cfg.attn_heads * cfg.attn_dim_head;
        let hidden = dim * cfg.ff_mult;
        Attention::param_count(dim, cfg.cond_dim, inner, kind)
            + 2 * dim
            + (dim + 1) * hidden
            + (hidden + 1) * dim
    }

    pub fn flops(
        dim: i64,
        cfg: &super::UNetConfig,
        kind: AttnKind,
        side: i64,
        text_len: i64,
    ) -> i64 {
        let inner = cfg.attn_heads * cfg.attn_dim_head;
        let pixels = side * side;
        Attention::flops(dim, cfg.cond_dim, inner, kind, pixels, text_len)
            + 2 * 2 * pixels * dim * dim * cfg.ff_mult
    }

    /// x: [B, C, H, W] -> same shape.
    pub fn forward(&self, x: &Tensor, text: &TextContext) -> Tensor {
        let (b, c, h, w) = x.size4().expect("feature maps are [B, C, H, W]");
        let tokens = x.flatten(2, 3).transpose(1, 2);
        let tokens = &tokens + self.attn.forward(&tokens, text);
        let ff =
            self.ff_out.forward(&self.ff_in.forward(&self.ff_norm.forward(&tokens)).gelu("none"));
        (tokens + ff).transpose(1, 2).reshape([b, c, h, w])
    }
}
