//! The FID Inception-v3 of pytorch-fid (`pytorch_fid.inception.InceptionV3`, built with
//! `use_fid_inception=True`), inference only. Parameter names are those of its state dict
//! (`blocks.0.0.conv.weight`, `blocks.2.3.branch3x3.bn.running_var`, ...), so an export of
//! `InceptionV3([3]).state_dict()` to safetensors loads unchanged.

mod blocks;
mod conv;
mod load;

use tch::{nn, Tensor};

use blocks::{EPool, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE};
use conv::{BasicConv2d, ConvSpec as S};

pub use load::load_fid_inception;

/// Which feature block FID uses; pytorch-fid's `--dims` (`InceptionV3.BLOCK_INDEX_BY_DIM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FidDims {
    /// 64: after the first max pooling (block 0).
    D64,
    /// 192: after the second max pooling (block 1).
    D192,
    /// 768: the input of the auxiliary classifier (block 2).
    D768,
    /// 2048: the final average pooling (block 3), the standard FID features.
    D2048,
}

impl FidDims {
    pub const ALL: [FidDims; 4] = [FidDims::D64, FidDims::D192, FidDims::D768, FidDims::D2048];

    /// The feature dimension, e.g. 2048.
    pub fn dims(self) -> usize {
        match self {
            FidDims::D64 => 64,
            FidDims::D192 => 192,
            FidDims::D768 => 768,
            FidDims::D2048 => 2048,
        }
    }

    /// The block index whose output is the feature (0..=3).
    pub fn block(self) -> usize {
        match self {
            FidDims::D64 => 0,
            FidDims::D192 => 1,
            FidDims::D768 => 2,
            FidDims::D2048 => 3,
        }
    }

    /// The inverse of [`FidDims::dims`]; `None` for any other number.
    pub fn from_dims(dims: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.dims() == dims)
    }
}

/// The network's input side; pytorch-fid resizes every image to this (bilinear).
pub const INPUT_SIZE: i64 = 299;

/// One stage of a feature block.
#[derive(Debug)]
enum Stage {
    Conv(BasicConv2d),
    /// 3x3 stride-2 max pooling, no padding.
    MaxPool,
    A(InceptionA),
    B(InceptionB),
    C(InceptionC),
    D(InceptionD),
    E(InceptionE),
    /// Adaptive average pooling to 1x1.
    AvgPool,
}

impl Stage {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Stage::Conv(m) => m.forward(x),
            Stage::MaxPool => x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false),
            Stage::A(m) => m.forward(x),
            Stage::B(m) => m.forward(x),
            Stage::C(m) => m.forward(x),
            Stage::D(m) => m.forward(x),
            Stage::E(m) => m.forward(x),
            Stage::AvgPool => x.adaptive_avg_pool2d([1, 1]),
        }
    }
}

/// pytorch-fid's `InceptionV3([block])` with resizing and input normalisation on.
#[derive(Debug)]
pub struct FidInception {
    blocks: Vec<Vec<Stage>>,
    dims: FidDims,
}

impl FidInception {
    /// Declares the variables of blocks 0..=`dims.block()` under `path` (the state dict's root),
    /// as pytorch-fid does: later blocks are not built.
    pub fn new(path: nn::Path, dims: FidDims) -> Self {
        let p = &path / "blocks";
        let conv = |b: usize, i: usize, cin, cout, spec| {
            Stage::Conv(BasicConv2d::new(&p / b / i, cin, cout, spec))
        };
        let mut blocks = vec![vec![
            conv(0, 0, 3, 32, S::k(3).stride(2)),
            conv(0, 1, 32, 32, S::k(3)),
            conv(0, 2, 32, 64, S::k(3).pad(1)),
            Stage::MaxPool,
        ]];
        if dims.block() >= 1 {
            blocks.push(vec![
                conv(1, 0, 64, 80, S::k(1)),
                conv(1, 1, 80, 192, S::k(3)),
                Stage::MaxPool,
            ]);
        }
        if dims.block() >= 2 {
            let b = &p / 2;
            blocks.push(vec![
                Stage::A(InceptionA::new(&b / 0, 192, 32)),
                Stage::A(InceptionA::new(&b / 1, 256, 64)),
                Stage::A(InceptionA::new(&b / 2, 288, 64)),
                Stage::B(InceptionB::new(&b / 3, 288)),
                Stage::C(InceptionC::new(&b / 4, 768, 128)),
                Stage::C(InceptionC::new(&b / 5, 768, 160)),
                Stage::C(InceptionC::new(&b / 6, 768, 160)),
                Stage::C(InceptionC::new(&b / 7, 768, 192)),
            ]);
        }
        if dims.block() >= 3 {
            let b = &p / 3;
            blocks.push(vec![
                Stage::D(InceptionD::new(&b / 0, 768)),
                Stage::E(InceptionE::new(&b / 1, 1280, EPool::AvgExcludingPad)),
                Stage::E(InceptionE::new(&b / 2, 2048, EPool::Max)),
                Stage::AvgPool,
            ]);
        }
        Self { blocks, dims }
    }

    pub fn dims(&self) -> FidDims {
        self.dims
    }

    /// Feature maps of the chosen block for images `[B, 3, H, W]` in [0, 1] (any H, W):
    /// resized to 299x299 (bilinear, align_corners=False), scaled to [-1, 1], run through the
    /// blocks. Returns `[B, C, h, w]` as pytorch-fid's `InceptionV3.forward` does.
    pub fn forward_blocks(&self, images: &Tensor) -> Tensor {
        let x = images.upsample_bilinear2d([INPUT_SIZE, INPUT_SIZE], false, None, None);
        let x = x * 2.0 - 1.0;
        self.blocks.iter().flatten().fold(x, |x, stage| stage.forward(&x))
    }

    /// FID activations `[B, dims]`: the block output, average-pooled to 1x1 where it is not
    /// already, as pytorch-fid's `get_activations` does.
    pub fn features(&self, images: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let y = self.forward_blocks(images);
        let (_, _, h, w) = y.size4().expect("4-d block output");
        let y = if h != 1 || w != 1 { y.adaptive_avg_pool2d([1, 1]) } else { y };
        y.flatten(1, -1)
    }
}
