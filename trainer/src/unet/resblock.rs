//! The residual block of the Efficient U-Net (Imagen App. B, Fig. A.27): GroupNorm, SiLU,
//! 3x3 conv, twice, with the conditioning vector applied as scale and shift after the second
//! GroupNorm; a 1x1 conv on the shortcut when the width changes.

use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug)]
pub struct ResnetBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    time_mlp: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    res_conv: Option<nn::Conv2D>,
    dropout: f64,
}

fn conv3x3(p: nn::Path, c_in: i64, c_out: i64) -> nn::Conv2D {
    nn::conv2d(p, c_in, c_out, 3, nn::ConvConfig { padding: 1, ..Default::default() })
}

// SAFETY: a block is never changed after it is built, and its tensors are parameter handles
// that forward passes only read; libtorch tensors can be read from several threads (autograd
// accumulates their gradients under its own locks). Activation checkpointing shares blocks with
// autograd, which may recompute them on its device thread.
unsafe impl Sync for ResnetBlock {}

impl ResnetBlock {
    /// Parameter names modelled on imagen-pytorch's `ResnetBlock` (before its ChanRMSNorm):
    /// `block1.groupnorm`, `block1.project`, `time_mlp.1`, `block2.*`, `res_conv`.
    pub fn new(
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        time_cond_dim: i64,
        groups: i64,
        dropout: f64,
    ) -> Self {
        let norm1 = nn::group_norm(&p / "block1" / "groupnorm", groups, c_in, Default::default());
        let conv1 = conv3x3(&p / "block1" / "project", c_in, c_out);
        let time_mlp =
            nn::linear(&p / "time_mlp" / 1, time_cond_dim, 2 * c_out, Default::default());
        let norm2 = nn::group_norm(&p / "block2" / "groupnorm", groups, c_out, Default::default());
        let conv2 = conv3x3(&p / "block2" / "project", c_out, c_out);
        let res_conv = (c_in != c_out)
            .then(|| nn::conv2d(&p / "res_conv", c_in, c_out, 1, Default::default()));
        Self { norm1, conv1, time_mlp, norm2, conv2, res_conv, dropout }
    }

    pub fn param_count(c_in: i64, c_out: i64, time_cond_dim: i64) -> i64 {
        let shortcut = if c_in != c_out { c_in * c_out + c_out } else { 0 };
        2 * c_in
            + 9 * c_in * c_out
            + c_out
            + (time_cond_dim + 1) * 2 * c_out
            + 2 * c_out
            + 9 * c_out * c_out
            + c_out
            + shortcut
    }

    /// Multiply-adds x2 of the convolutions and the conditioning projection at side x side.
    pub fn flops(c_in: i64, c_out: i64, time_cond_dim: i64, side: i64) -> i64 {
        let px = side * side;
        let shortcut = if c_in != c_out { c_in * c_out * px } else { 0 };
        2 * (9 * c_in * c_out * px + 9 * c_out * c_out * px + shortcut + time_cond_dim * 2 * c_out)
    }

    /// x: [B, C_in, H, W]; cond: [B, time_cond_dim].
    /// `train` turns dropout (before the second conv) on.
    pub fn forward(&self, x: &Tensor, cond: &Tensor, train: bool) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let scale_shift = self.time_mlp.forward(&cond.silu()).unsqueeze(-1).unsqueeze(-1);
        let chunks = scale_shift.chunk(2, 1);
        let h = self.norm2.forward(&h) * (&chunks[0] + 1.0) + &chunks[1];
        let h = self.conv2.forward(&h.silu().dropout(self.dropout, train));
        match &self.res_conv {
            Some(conv) => h + conv.forward(x),
            None => h + x,
        }
    }
}
