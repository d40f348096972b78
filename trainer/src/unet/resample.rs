//! Changing resolution between levels. Efficient U-Net (Imagen App. B) downsamples at the start
//! of a level and upsamples at its end, so the level's blocks run at the lower resolution.

use tch::nn::{self, Module};
use tch::Tensor;

/// Space-to-depth (2x2 pixels -> channels) then a 1x1 conv: halves the side without discarding
/// information (imagen-pytorch's `Downsample`, parameters at `downsample.1`).
#[derive(Debug)]
pub struct Downsample {
    conv: nn::Conv2D,
}

impl Downsample {
    pub fn new(p: nn::Path, c_in: i64, c_out: i64) -> Self {
        Self { conv: nn::conv2d(p / 1, 4 * c_in, c_out, 1, Default::default()) }
    }

    pub fn param_count(c_in: i64, c_out: i64) -> i64 {
        4 * c_in * c_out + c_out
    }

    /// `side_out` is the side after downsampling.
    pub fn flops(c_in: i64, c_out: i64, side_out: i64) -> i64 {
        2 * 4 * c_in * c_out * side_out * side_out
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(&x.pixel_unshuffle(2))
    }
}

/// Nearest-neighbour 2x then a 3x3 conv (imagen-pytorch's `Upsample`, at `upsample.1`).
#[derive(Debug)]
pub struct Upsample {
    conv: nn::Conv2D,
}

impl Upsample {
    pub fn new(p: nn::Path, c_in: i64, c_out: i64) -> Self {
        let cfg = nn::ConvConfig { padding: 1, ..Default::default() };
        Self { conv: nn::conv2d(p / 1, c_in, c_out, 3, cfg) }
    }

    pub fn param_count(c_in: i64, c_out: i64) -> i64 {
        9 * c_in * c_out + c_out
    }

    /// `side_out` is the side after upsampling.
    pub fn flops(c_in: i64, c_out: i64, side_out: i64) -> i64 {
        2 * 9 * c_in * c_out * side_out * side_out
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("feature maps are [B, C, H, W]");
        self.conv.forward(&x.upsample_nearest2d([2 * h, 2 * w], None, None))
    }
}
