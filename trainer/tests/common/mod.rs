//! A tiny world for end-to-end tests: synthetic shards, the demo T5 and a small cascade config.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use imagen_data::synth::{scene::COMBINATIONS, synthesize, Scene, SynthFormat, SynthOptions};
use imagen_trainer::config::Config;
use imagen_trainer::t5::demo::{make_demo, DemoSpec};
use imagen_trainer::unet::UNetConfig;

/// libtorch's random generator is global to the process: tests that train or sample hold this
/// lock so that another test thread's draws cannot interleave with theirs.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A preset of `configs/`.
pub fn preset(name: &str) -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs").join(name);
    Config::load(Some(&path), &[]).expect("preset parses")
}

/// The preset's topology (levels, blocks, attention kinds, low-res input) at toy widths.
pub fn scaled_down(cfg: &UNetConfig) -> UNetConfig {
    let levels = cfg.dim_mults.len() as u32;
    UNetConfig {
        dim: 8,
        resnet_groups: 4,
        attn_heads: 2,
        attn_dim_head: 4,
        text_embed_dim: 12,
        cond_dim: 8,
        num_resnet_blocks: cfg.num_resnet_blocks.iter().map(|&b| b.min(2)).collect(),
        image_side: 4 << (levels - 1),
        lowres_side: 2 << (levels - 1),
        ..cfg.clone()
    }
}

/// Gives the zero-initialised output conv (`final_conv.*`) random weights of deviation `std`, in
/// name order (the same seed draws the same numbers), so that the U-Net predicts something and
/// everything upstream of it gets a gradient.
pub fn randomise_final_conv(vs: &tch::nn::VarStore, std: f64) {
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (n, mut v) in vars {
            if n.starts_with("final_conv") {
                v.copy_(&(v.randn_like() * std));
            }
        }
    });
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl World {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("runs").join(name)
    }
}

/// Every caption the synthetic data can have (the demo tokenizer's corpus).
pub fn all_captions() -> Vec<String> {
    (0..COMBINATIONS).map(|c| Scene::from_combination(c).caption()).collect()
}

/// 64 synthetic 16x16 images in two parquet shards, a demo T5 (d_model 32) and a two-stage
/// cascade (16 -> 32 would need 32px data; the SR stage here is 16 with an 8px condition).
pub fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opts = SynthOptions {
        side: 16,
        count: 64,
        shards: 2,
        heldout: 8,
        format: SynthFormat::Parquet,
        ..SynthOptions::default()
    };
    let out = synthesize(&data, &opts).unwrap();
    let t5 = dir.path().join("t5");
    let spec = DemoSpec {
        d_model: 32,
        num_layers: 1,
        num_heads: 2,
        d_kv: 16,
        d_ff: 64,
        ..DemoSpec::default()
    };
    make_demo(&all_captions(), &t5, &spec).unwrap();

    let shards: Vec<String> = out.train.iter().map(|p| p.display().to_string()).collect();
    let heldout: Vec<String> = out.heldout.iter().map(|p| p.display().to_string()).collect();
    let text = format!(
        r#"
[run]
name = "e2e"
seed = 3

[data]
shards = {shards:?}
heldout_shards = {heldout:?}
batch_size = 4
workers = 1
prefetch = 2
shuffle_buffer = 16

[text]
mode = "frozen-online"
model = "{t5}"
max_length = 24
dtype = "f32"

[train]
lr = 2e-3
warmup_steps = 2
threads = 1
clip_grad_norm = 1.0

[train.ema]
decay = 0.9

[train.checkpoint]
every_steps = 4
keep_last = 10

[log]
every_steps = 1

[[stages]]
[stages.unet]
image_side = 16
dim = 8
dim_mults = [1, 2]
num_resnet_blocks = [1, 1]
layer_attns = [false, true]
layer_cross_attns = [false, false]
attn_heads = 2
attn_dim_head = 8
text_embed_dim = 32
cond_dim = 16
resnet_groups = 4

[stages.diffusion]
objective = "v"

[[stages]]
[stages.unet]
image_side = 16
lowres_cond = true
lowres_side = 8
dim = 8
dim_mults = [1, 2]
num_resnet_blocks = [1, 1]
layer_attns = [false, false]
layer_cross_attns = [false, true]
attn_heads = 2
attn_dim_head = 8
text_embed_dim = 32
cond_dim = 16
resnet_groups = 4

[stages.diffusion]
objective = "v"
noise_aug_max = 0.5
"#,
        t5 = t5.display()
    );
    let path = dir.path().join("e2e.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(Some(&path), &[]).unwrap();
    World { dir, config }
}

/// (step, value) of every line of a stage directory's metrics.jsonl that has `tag`, in order.
pub fn logged(stage_dir: &Path, tag: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(stage_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v["step"].as_u64().unwrap(), v[tag].as_f64()?))
        })
        .collect()
}

pub fn logged_losses(stage_dir: &Path) -> Vec<(u64, f64)> {
    logged(stage_dir, "train/loss")
}

/// What TensorBoard's own EventAccumulator reads from a stage directory
/// (scripts/read_tensorboard.py): `{"scalars": {tag: [[step, value], ...]}, "images": ...}`.
pub fn read_tensorboard(stage_dir: &Path) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join(".venv-tools/bin/python");
    assert!(python.exists(), "run scripts/python_env.sh (make test does)");
    let read = std::process::Command::new(python)
        .arg(root.join("scripts/read_tensorboard.py"))
        .arg(stage_dir)
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    serde_json::from_slice(&read.stdout).unwrap()
}

/// Blocks 0 and 1 of pytorch-fid's state dict, random convolutions, default batch norms.
pub fn write_fid_weights(path: &Path) {
    tch::manual_seed(7);
    let convs: [(&str, [i64; 4]); 5] = [
        ("blocks.0.0", [32, 3, 3, 3]),
        ("blocks.0.1", [32, 32, 3, 3]),
        ("blocks.0.2", [64, 32, 3, 3]),
        ("blocks.1.0", [80, 64, 1, 1]),
        ("blocks.1.1", [192, 80, 3, 3]),
    ];
    let mut tensors = Vec::new();
    for (name, shape) in convs {
        let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
        let opts = (tch::Kind::Float, tch::Device::Cpu);
        tensors
            .push((format!("{name}.conv.weight"), tch::Tensor::randn(shape, opts) / fan_in.sqrt()));
        let c = shape[0];
        tensors.push((format!("{name}.bn.weight"), tch::Tensor::ones([c], opts)));
        tensors.push((format!("{name}.bn.bias"), tch::Tensor::zeros([c], opts)));
        tensors.push((format!("{name}.bn.running_mean"), tch::Tensor::zeros([c], opts)));
        tensors.push((format!("{name}.bn.running_var"), tch::Tensor::ones([c], opts)));
        tensors.push((format!("{name}.bn.num_batches_tracked"), tch::Tensor::from(0i64)));
    }
    tch::Tensor::write_safetensors(&tensors, path).unwrap();
}
