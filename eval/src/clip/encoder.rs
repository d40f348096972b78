//! `CLIPEncoder`: pre-LayerNorm transformer layers shared by both towers (Radford et al. 2021).

use tch::{nn, nn::Module, Tensor};

/// The MLP activation named by `hidden_act`.
#[derive(Debug, Clone, Copy)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's approximation.
    QuickGelu,
    Gelu,
}

impl Activation {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            _ => None,
        }
    }

    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Self::QuickGelu => x * (x * 1.702).sigmoid(),
            Self::Gelu => x.gelu("none"),
        }
    }
}

/// Width, heads and activation of one tower.
#[derive(Debug, Clone, Copy)]
pub struct EncoderSpec {
    pub hidden: i64,
    pub intermediate: i64,
    pub layers: i64,
    pub heads: i64,
    pub eps: f64,
    pub act: Activation,
}

#[derive(Debug)]
struct Layer {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    layer_norm1: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    layer_norm2: nn::LayerNorm,
}

/// `encoder.layers.{i}` with `self_attn.{q,k,v,out}_proj`, `layer_norm1`, `mlp.fc1/fc2`,
/// `layer_norm2`.
#[derive(Debug)]
pub struct Encoder {
    layers: Vec<Layer>,
    spec: EncoderSpec,
}

pub fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps, ..Default::default() })
}

impl Encoder {
    pub fn new(p: nn::Path, spec: EncoderSpec) -> Self {
        let layers = (0..spec.layers)
            .map(|i| {
                let l = &p / "layers" / i;
                let a = &l / "self_attn";
                let lin = |path: nn::Path, i, o| nn::linear(path, i, o, Default::default());
                let h = spec.hidden;
                Layer {
                    q_proj: lin(&a / "q_proj", h, h),
                    k_proj: lin(&a / "k_proj", h, h),
                    v_proj: lin(&a / "v_proj", h, h),
                    out_proj: lin(&a / "out_proj", h, h),
                    layer_norm1: layer_norm(&l / "layer_norm1", h, spec.eps),
                    fc1: lin(&l / "mlp" / "fc1", h, spec.intermediate),
                    fc2: lin(&l / "mlp" / "fc2", spec.intermediate, h),
                    layer_norm2: layer_norm(&l / "layer_norm2", h, spec.eps),
                }
            })
            .collect();
        Self { layers, spec }
    }

    /// `x` is `[B, T, hidden]`; `mask`, when given, is added to the attention logits
    /// (`[T, T]`, -inf above the diagonal for the causal text tower).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let (b, t, h) = x.size3().expect("[B, T, hidden]");
        let heads = self.spec.heads;
        let d = h / heads;
        let split = |y: Tensor| y.view([b, t, heads, d]).transpose(1, 2);
        self.layers.iter().fold(x.shallow_clone(), |x, l| {
            let y = x.apply(&l.layer_norm1);
            let q = split(y.apply(&l.q_proj) * (d as f64).powf(-0.5));
            let k = split(y.apply(&l.k_proj));
            let v = split(y.apply(&l.v_proj));
            let mut logits = q.matmul(&k.transpose(-2, -1));
            if let Some(mask) = mask {
                logits += mask;
            }
            let attn = logits.softmax(-1, logits.kind()).matmul(&v);
            let attn = attn.transpose(1, 2).reshape([b, t, h]).apply(&l.out_proj);
            let x = x + attn;
            let y = self.spec.act.apply(&x.apply(&l.layer_norm2).apply(&l.fc1));
            x + l.fc2.forward(&y)
        })
    }
}
