//! The mixed blocks of the FID Inception-v3, as pytorch-fid builds them: torchvision's
//! `InceptionA`..`InceptionE`, with pytorch-fid's patches (`FIDInceptionA`, `FIDInceptionC`,
//! `FIDInceptionE_1`, `FIDInceptionE_2`): TensorFlow's average pool excludes the zero padding
//! from the mean, and the last block max-pools in its pool branch.

use tch::{nn, Tensor};

use super::conv::{BasicConv2d, ConvSpec as S};

/// 3x3 stride-1 pooling of a pool branch, padded by 1.
fn pool_branch_avg(x: &Tensor) -> Tensor {
    // count_include_pad = false: the FID patch (TensorFlow semantics).
    x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None)
}

/// `FIDInceptionA` (Mixed_5b/5c/5d).
#[derive(Debug)]
pub struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    pub fn new(p: nn::Path, in_channels: i64, pool_features: i64) -> Self {
        Self {
            branch1x1: BasicConv2d::new(&p / "branch1x1", in_channels, 64, S::k(1)),
            branch5x5_1: BasicConv2d::new(&p / "branch5x5_1", in_channels, 48, S::k(1)),
            branch5x5_2: BasicConv2d::new(&p / "branch5x5_2", 48, 64, S::k(5).pad(2)),
            branch3x3dbl_1: BasicConv2d::new(&p / "branch3x3dbl_1", in_channels, 64, S::k(1)),
            branch3x3dbl_2: BasicConv2d::new(&p / "branch3x3dbl_2", 64, 96, S::k(3).pad(1)),
            branch3x3dbl_3: BasicConv2d::new(&p / "branch3x3dbl_3", 96, 96, S::k(3).pad(1)),
            branch_pool: BasicConv2d::new(&p / "branch_pool", in_channels, pool_features, S::k(1)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b1 = self.branch1x1.forward(x);
        let b5 = self.branch5x5_2.forward(&self.branch5x5_1.forward(x));
        let b3 = self.branch3x3dbl_1.forward(x);
        let b3 = self.branch3x3dbl_3.forward(&self.branch3x3dbl_2.forward(&b3));
        let bp = self.branch_pool.forward(&pool_branch_avg(x));
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }
}

/// torchvision's `InceptionB` (Mixed_6a), unpatched: a grid reduction.
#[derive(Debug)]
pub struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    pub fn new(p: nn::Path, in_channels: i64) -> Self {
        Self {
            branch3x3: BasicConv2d::new(&p / "branch3x3", in_channels, 384, S::k(3).stride(2)),
            branch3x3dbl_1: BasicConv2d::new(&p / "branch3x3dbl_1", in_channels, 64, S::k(1)),
            branch3x3dbl_2: BasicConv2d::new(&p / "branch3x3dbl_2", 64, 96, S::k(3).pad(1)),
            branch3x3dbl_3: BasicConv2d::new(&p / "branch3x3dbl_3", 96, 96, S::k(3).stride(2)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.branch3x3.forward(x);
        let bd = self.branch3x3dbl_1.forward(x);
        let bd = self.branch3x3dbl_3.forward(&self.branch3x3dbl_2.forward(&bd));
        let bp = x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        Tensor::cat(&[b3, bd, bp], 1)
    }
}

/// `FIDInceptionC` (Mixed_6b..6e): factorised 7x7 convolutions.
#[derive(Debug)]
pub struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7: [BasicConv2d; 3],
    branch7x7dbl: [BasicConv2d; 5],
    branch_pool: BasicConv2d,
}

impl InceptionC {
    pub fn new(p: nn::Path, in_channels: i64, c7: i64) -> Self {
        let row = S::kp([1, 7], [0, 3]);
        let col = S::kp([7, 1], [3, 0]);
        let conv = |name: &str, cin, cout, spec| BasicConv2d::new(&p / name, cin, cout, spec);
        Self {
            branch1x1: conv("branch1x1", in_channels, 192, S::k(1)),
            branch7x7: [
                conv("branch7x7_1", in_channels, c7, S::k(1)),
                conv("branch7x7_2", c7, c7, row),
                conv("branch7x7_3", c7, 192, col),
            ],
            branch7x7dbl: [
                conv("branch7x7dbl_1", in_channels, c7, S::k(1)),
                conv("branch7x7dbl_2", c7, c7, col),
                conv("branch7x7dbl_3", c7, c7, row),
                conv("branch7x7dbl_4", c7, c7, col),
                conv("branch7x7dbl_5", c7, 192, row),
            ],
            branch_pool: conv("branch_pool", in_channels, 192, S::k(1)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let chain = |convs: &[BasicConv2d]| {
            convs.iter().skip(1).fold(convs[0].forward(x), |y, c| c.forward(&y))
        };
        let b1 = self.branch1x1.forward(x);
        let b7 = chain(&self.branch7x7);
        let bd = chain(&self.branch7x7dbl);
        let bp = self.branch_pool.forward(&pool_branch_avg(x));
        Tensor::cat(&[b1, b7, bd, bp], 1)
    }
}

/// torchvision's `InceptionD` (Mixed_7a), unpatched: a grid reduction.
#[derive(Debug)]
pub struct InceptionD {
    branch3x3_1: BasicConv2d,
    branch3x3_2: BasicConv2d,
    branch7x7x3: [BasicConv2d; 4],
}

impl InceptionD {
    pub fn new(p: nn::Path, in_channels: i64) -> Self {
        let conv = |name: &str, cin, cout, spec| BasicConv2d::new(&p / name, cin, cout, spec);
        Self {
            branch3x3_1: conv("branch3x3_1", in_channels, 192, S::k(1)),
            branch3x3_2: conv("branch3x3_2", 192, 320, S::k(3).stride(2)),
            branch7x7x3: [
                conv("branch7x7x3_1", in_channels, 192, S::k(1)),
                conv("branch7x7x3_2", 192, 192, S::kp([1, 7], [0, 3])),
                conv("branch7x7x3_3", 192, 192, S::kp([7, 1], [3, 0])),
                conv("branch7x7x3_4", 192, 192, S::k(3).stride(2)),
            ],
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.branch3x3_2.forward(&self.branch3x3_1.forward(x));
        let b7 = self.branch7x7x3.iter().fold(x.shallow_clone(), |y, c| c.forward(&y));
        let bp = x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        Tensor::cat(&[b3, b7, bp], 1)
    }
}

/// How an `InceptionE` block pools in its pool branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EPool {
    /// `FIDInceptionE_1` (Mixed_7b): average pooling without the padding.
    AvgExcludingPad,
    /// `FIDInceptionE_2` (Mixed_7c): max pooling, as in the TensorFlow graph.
    Max,
}

/// `FIDInceptionE_1` / `FIDInceptionE_2` (Mixed_7b, Mixed_7c): expanded filter banks.
#[derive(Debug)]
pub struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
    pool: EPool,
}

impl InceptionE {
    pub fn new(p: nn::Path, in_channels: i64, pool: EPool) -> Self {
        let conv = |name: &str, cin, cout, spec| BasicConv2d::new(&p / name, cin, cout, spec);
        let row = S::kp([1, 3], [0, 1]);
        let col = S::kp([3, 1], [1, 0]);
        Self {
            branch1x1: conv("branch1x1", in_channels, 320, S::k(1)),
            branch3x3_1: conv("branch3x3_1", in_channels, 384, S::k(1)),
            branch3x3_2a: conv("branch3x3_2a", 384, 384, row),
            branch3x3_2b: conv("branch3x3_2b", 384, 384, col),
            branch3x3dbl_1: conv("branch3x3dbl_1", in_channels, 448, S::k(1)),
            branch3x3dbl_2: conv("branch3x3dbl_2", 448, 384, S::k(3).pad(1)),
            branch3x3dbl_3a: conv("branch3x3dbl_3a", 384, 384, row),
            branch3x3dbl_3b: conv("branch3x3dbl_3b", 384, 384, col),
            branch_pool: conv("branch_pool", in_channels, 192, S::k(1)),
            pool,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b1 = self.branch1x1.forward(x);
        let b3 = self.branch3x3_1.forward(x);
        let b3 = Tensor::cat(&[self.branch3x3_2a.forward(&b3), self.branch3x3_2b.forward(&b3)], 1);
        let bd = self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x));
        let bd =
            Tensor::cat(&[self.branch3x3dbl_3a.forward(&bd), self.branch3x3dbl_3b.forward(&bd)], 1);
        let pooled = match self.pool {
            EPool::AvgExcludingPad => pool_branch_avg(x),
            EPool::Max => x.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false),
        };
        let bp = self.branch_pool.forward(&pooled);
        Tensor::cat(&[b1, b3, bd, bp], 1)
    }
}
