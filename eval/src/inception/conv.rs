//! torchvision's `BasicConv2d`: convolution without bias, batch norm (eps 1e-3, as in the
//! TensorFlow graph the FID weights come from), ReLU. Inference only.

use tch::{nn, Tensor};

/// Kernel, stride and padding of one convolution, (height, width) each.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub kernel: [i64; 2],
    pub stride: [i64; 2],
    pub padding: [i64; 2],
}

impl ConvSpec {
    /// A square kernel with stride 1 and no padding.
    pub fn k(kernel: i64) -> Self {
        Self { kernel: [kernel, kernel], stride: [1, 1], padding: [0, 0] }
    }

    /// A (height, width) kernel with stride 1 and the given padding.
    pub fn kp(kernel: [i64; 2], padding: [i64; 2]) -> Self {
        Self { kernel, stride: [1, 1], padding }
    }

    pub fn stride(mut self, stride: i64) -> Self {
        self.stride = [stride, stride];
        self
    }

    pub fn pad(mut self, padding: i64) -> Self {
        self.padding = [padding, padding];
        self
    }
}

const BN_EPS: f64 = 1e-3;

/// Parameters `conv.weight`, `bn.weight`, `bn.bias`, `bn.running_mean`, `bn.running_var`.
#[derive(Debug)]
pub struct BasicConv2d {
    weight: Tensor,
    bn_weight: Tensor,
    bn_bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    spec: ConvSpec,
}

impl BasicConv2d {
    pub fn new(path: nn::Path, in_channels: i64, out_channels: i64, spec: ConvSpec) -> Self {
        let conv = &path / "conv";
        let bn = &path / "bn";
        let [kh, kw] = spec.kernel;
        Self {
            weight: conv.zeros_no_train("weight", &[out_channels, in_channels, kh, kw]),
            bn_weight: bn.ones_no_train("weight", &[out_channels]),
            bn_bias: bn.zeros_no_train("bias", &[out_channels]),
            running_mean: bn.zeros_no_train("running_mean", &[out_channels]),
            running_var: bn.ones_no_train("running_var", &[out_channels]),
            spec,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.conv2d(&self.weight, None::<Tensor>, self.spec.stride, self.spec.padding, 1, 1);
        y.batch_norm(
            Some(&self.bn_weight),
            Some(&self.bn_bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            false,
            0.1,
            BN_EPS,
            true,
        )
        .relu()
    }
}
