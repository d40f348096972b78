//! The U-Net: every preset's topology (scaled down) runs forward and backward with every
//! parameter reached; the analytic summary counts exactly the VarStore's parameters; padded
//! and dropped text takes no part; channels-last gives the same results in the NHWC layout.

mod common;

use common::{preset, randomise_final_conv, scaled_down};
use imagen_trainer::diffusion::GaussianDiffusion;
use imagen_trainer::unet::{conv_weights_to_channels_last, summarize, UNet, UNetConfig};
use tch::{nn, Device, Kind, Tensor};

/// One intra-op thread: on a loaded machine OpenMP's spinning threads cost 5-20x.
fn one_thread() {
    tch::set_num_threads(1);
}

const PRESETS: [&str; 6] = [
    "base64.toml",
    "sr256.toml",
    "sr1024.toml",
    "base64-small.toml",
    "sr256-small.toml",
    "tiny.toml",
];

fn text_batch(b: i64, l: i64, d: i64) -> (Tensor, Tensor) {
    let text = Tensor::randn([b, l, d], (Kind::Float, Device::Cpu));
    // Sample 0 uses all tokens, sample 1 only the first two, the rest use three.
    let lens = Tensor::from_slice(&[l, 2]).pad([0, b - 2], "constant", Some(3.0));
    let mask =
        Tensor::arange(l, (Kind::Int64, Device::Cpu)).unsqueeze(0).lt_tensor(&lens.unsqueeze(1));
    (text, mask)
}

fn inputs(cfg: &UNetConfig, b: i64) -> (Tensor, Tensor, Option<Tensor>, Option<Tensor>) {
    let s = cfg.image_side;
    let x = Tensor::randn([b, cfg.channels, s, s], (Kind::Float, Device::Cpu));
    let t = Tensor::rand([b], (Kind::Float, Device::Cpu));
    let lowres =
        cfg.lowres_cond.then(|| Tensor::randn([b, cfg.channels, s, s], (Kind::Float, Device::Cpu)));
    let aug = cfg.lowres_cond.then(|| Tensor::rand([b], (Kind::Float, Device::Cpu)));
    (x, t, lowres, aug)
}

#[test]
fn every_preset_topology_runs_forward_and_backward_reaching_every_parameter() {
    one_thread();
    tch::manual_seed(0);
    for name in PRESETS {
        let cfg = scaled_down(&preset(name).stages[0].unet);
        let vs = nn::VarStore::new(Device::Cpu);
        let unet = UNet::new(vs.root(), &cfg).unwrap();
        randomise_final_conv(&vs, 0.1);
        let b = 4;
        let (x, t, lowres, aug) = inputs(&cfg, b);
        let (text, mask) = text_batch(b, 5, cfg.text_embed_dim);
        let drop = Tensor::from_slice(&[false, true, false, true]);
        let out = unet.forward(&x, &t, &text, &mask, lowres.as_ref(), aug.as_ref(), &drop, true);
        assert_eq!(out.size(), x.size(), "{name}");
        out.square().mean(Kind::Float).backward();
        for (n, v) in vs.variables() {
            let g = v.grad();
            assert!(g.defined(), "{name}: {n} has no gradient");
            let norm = g.abs().sum(Kind::Float).double_value(&[]);
            assert!(norm.is_finite() && norm > 0.0, "{name}: {n} gradient {norm}");
        }
    }
}

#[test]
fn summary_counts_exactly_the_varstore_parameters_per_block() {
    one_thread();
    for name in PRESETS {
        let cfg = scaled_down(&preset(name).stages[0].unet);
        let vs = nn::VarStore::new(Device::Cpu);
        let _unet = UNet::new(vs.root(), &cfg).unwrap();
        let vars = vs.variables();
        let total: i64 = vars.values().map(|v| v.numel() as i64).sum();
        let summary = summarize(&cfg, 16).unwrap();
        assert_eq!(summary.total_params, total, "{name}");
        let mut covered = 0;
        for row in &summary.blocks {
            let in_row: i64 = vars
                .iter()
                .filter(|(n, _)| {
                    row.name.split(',').any(|p| *n == p || n.starts_with(&format!("{p}.")))
                })
                .map(|(_, v)| v.numel() as i64)
                .sum();
            assert_eq!(in_row, row.params, "{name}: {}", row.name);
            covered += in_row;
        }
        assert_eq!(covered, total, "{name}: rows overlap or miss parameters");
    }
}

#[test]
fn every_preset_builds_its_diffusion() {
    one_thread();
    for name in PRESETS {
        let cfg = preset(name);
        let diffusion =
            GaussianDiffusion::new(&cfg.stages[0].diffusion, cfg.stages[0].unet.image_side)
                .unwrap();
        assert_eq!(diffusion.image_side(), cfg.stages[0].unet.image_side, "{name}");
    }
}

#[test]
fn paper_presets_match_the_paper_sizes_within_ten_percent() {
    one_thread();
    for (name, paper) in [("base64.toml", 2.0e9), ("sr256.toml", 600e6), ("sr1024.toml", 400e6)] {
        let params = summarize(&preset(name).stages[0].unet, 128).unwrap().total_params as f64;
        assert!((params / paper - 1.0).abs() < 0.1, "{name}: {params} vs {paper}");
    }
}

#[test]
fn summary_flops_match_a_hand_count_for_a_single_level() {
    one_thread();
    // One level, one block, no attention: everything is convs and small linears.
    let cfg = UNetConfig {
        image_side: 8,
        channels: 3,
        dim: 4,
        dim_mults: vec![1],
        num_resnet_blocks: vec![1],
        layer_attns: vec![false],
        layer_cross_attns: vec![false],
        resnet_groups: 2,
        text_embed_dim: 6,
        cond_dim: 4,
        attn_heads: 2,
        time_cond_mult: 4,
        ..UNetConfig::default()
    };
    let (px, c, tcd, l) = (64, 4, 16, 10);
    let resnet = |cin: i64| {
        let shortcut = if cin != c { cin * c * px } else { 0 };
        2 * (9 * cin * c * px + 9 * c * c * px + shortcut + tcd * 2 * c)
    };
    let expected = 2 * 9 * 3 * c * px // init conv
        + 2 * (17 * tcd + tcd * tcd) // time MLP
        + 2 * l * 6 * 4 // text projection
        + 2 * (2 * (l + 1) * 4 * 4 + 2 * (l + 1) * 4 + 4 * tcd + tcd * tcd) // attention pool
        + resnet(c) // down block
        + 2 * resnet(c) // middle blocks
        + resnet(2 * c) // up block
        + 2 * 9 * c * 3 * px; // final conv
    let summary = summarize(&cfg, l).unwrap();
    assert_eq!(summary.flops_per_sample_fwd, expected);
    assert_eq!(summary.flops_per_sample_train, 3 * expected);
}

fn tiny_unet() -> (nn::VarStore, UNet, UNetConfig) {
    let cfg = scaled_down(&preset("sr256.toml").stages[0].unet);
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = UNet::new(vs.root(), &cfg).unwrap();
    randomise_final_conv(&vs, 1.0);
    (vs, unet, cfg)
}

#[test]
fn fresh_unet_predicts_zero() {
    one_thread();
    let cfg = scaled_down(&preset("base64.toml").stages[0].unet);
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = UNet::new(vs.root(), &cfg).unwrap();
    let (x, t, _, _) = inputs(&cfg, 2);
    let (text, mask) = text_batch(2, 4, cfg.text_embed_dim);
    let out =
        unet.forward(&x, &t, &text, &mask, None, None, &Tensor::from_slice(&[false, false]), false);
    assert_eq!(out.abs().max().double_value(&[]), 0.0);
}

#[test]
fn padded_text_positions_take_no_part_and_dropped_text_is_ignored() {
    one_thread();
    tch::manual_seed(1);
    let (_vs, unet, cfg) = tiny_unet();
    let b = 3;
    let (x, t, lowres, aug) = inputs(&cfg, b);
    let (text, mask) = text_batch(b, 6, cfg.text_embed_dim);
    let run = |text: &Tensor, drop: &[bool]| {
        unet.forward(
            &x,
            &t,
            text,
            &mask,
            lowres.as_ref(),
            aug.as_ref(),
            &Tensor::from_slice(drop),
            false,
        )
    };
    let keep = [false, false, false];
    let base = run(&text, &keep);
    // Changing padded positions changes nothing.
    let padded_changed = text.where_self(&mask.unsqueeze(-1), &(text.randn_like() * 10.0));
    let diff = (run(&padded_changed, &keep) - &base).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "padding leaked: {diff}");
    // Changing a real token changes the output.
    let real_changed =
        text.where_self(&mask.unsqueeze(-1).logical_not(), &(text.randn_like() * 10.0));
    let diff = (run(&real_changed, &keep) - &base).abs().max().double_value(&[]);
    assert!(diff > 1e-3, "text had no effect: {diff}");
    // With the condition dropped, no text matters.
    let dropped = run(&text, &[true, true, true]);
    let diff = (run(&real_changed, &[true, true, true]) - &dropped).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "dropped text leaked: {diff}");
    // An empty caption behaves as a dropped one.
    let empty = mask.zeros_like();
    let out = unet.forward(
        &x,
        &t,
        &text,
        &empty,
        lowres.as_ref(),
        aug.as_ref(),
        &Tensor::from_slice(&keep),
        false,
    );
    assert!((out - &dropped).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn sr_unet_depends_on_the_augmentation_level_and_the_lowres_image() {
    one_thread();
    tch::manual_seed(2);
    let (_vs, unet, cfg) = tiny_unet();
    let b = 2;
    let (x, t, lowres, aug) = inputs(&cfg, b);
    let (text, mask) = text_batch(b, 4, cfg.text_embed_dim);
    let drop = Tensor::from_slice(&[false, false]);
    let lowres = lowres.unwrap();
    let aug = aug.unwrap();
    let base = unet.forward(&x, &t, &text, &mask, Some(&lowres), Some(&aug), &drop, false);
    let other_level =
        unet.forward(&x, &t, &text, &mask, Some(&lowres), Some(&(&aug * 0.5)), &drop, false);
    let other_image =
        unet.forward(&x, &t, &text, &mask, Some(&lowres.randn_like()), Some(&aug), &drop, false);
    assert!((&base - other_level).abs().max().double_value(&[]) > 1e-4);
    assert!((&base - other_image).abs().max().double_value(&[]) > 1e-4);
}

#[test]
fn invalid_topologies_are_refused_with_the_field_named() {
    one_thread();
    let cfg = UNetConfig { layer_attns: vec![true], ..UNetConfig::default() };
    let err = UNet::new(nn::VarStore::new(Device::Cpu).root(), &cfg).unwrap_err().to_string();
    assert!(err.contains("layer_attns"), "{err}");
    let cfg = UNetConfig { resnet_groups: 3, ..UNetConfig::default() };
    let err = summarize(&cfg, 8).unwrap_err().to_string();
    assert!(err.contains("resnet_groups"), "{err}");
}

/// NHWC strides of a [B, C, H, W] tensor (PyTorch's `channels_last`).
fn is_channels_last(x: &Tensor) -> bool {
    let (_, c, _, w) = x.size4().unwrap();
    let stride = x.stride();
    stride[1] == 1 && stride[3] == c && stride[2] == w * c
}

#[test]
fn channels_last_keeps_the_layout_through_the_network_and_the_results() {
    one_thread();
    tch::manual_seed(2);
    let (vs, unet, cfg) = tiny_unet();
    // The same weights in two more U-Nets: channels-last feature maps alone (the CPU's GroupNorm
    // keeps the layout, so it reaches the output), and with the weights too, as `imagen train`
    // sets it up.
    let copy = |weights_too: bool| {
        let mut copy_vs = nn::VarStore::new(Device::Cpu);
        let mut copy_unet = UNet::new(copy_vs.root(), &cfg).unwrap();
        copy_vs.copy(&vs).unwrap();
        if weights_too {
            conv_weights_to_channels_last(&copy_vs, "");
        }
        copy_unet.set_channels_last(true);
        (copy_vs, copy_unet)
    };
    let (maps_vs, maps_unet) = copy(false);
    let (nhwc_vs, nhwc_unet) = copy(true);
    let (x, t, lowres, aug) = inputs(&cfg, 2);
    let (text, mask) = text_batch(2, 4, cfg.text_embed_dim);
    let drop = Tensor::from_slice(&[false, false]);
    let run = |vs: &nn::VarStore, unet: &UNet| {
        let out = unet.forward(&x, &t, &text, &mask, lowres.as_ref(), aug.as_ref(), &drop, true);
        out.square().sum(Kind::Float).backward();
        let mut grads: Vec<_> = vs.variables().into_iter().map(|(n, v)| (n, v.grad())).collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        (out.detach(), grads)
    };
    let (plain, plain_grads) = run(&vs, &unet);
    let (maps, _) = run(&maps_vs, &maps_unet);
    let (nhwc, nhwc_grads) = run(&nhwc_vs, &nhwc_unet);
    assert!(!is_channels_last(&plain), "the plain output's layout");
    assert!(is_channels_last(&maps), "the layout that the input's conversion starts");
    assert!(is_channels_last(&nhwc), "the layout with the weights converted too");
    let conv_grads: Vec<_> = nhwc_grads.iter().filter(|(_, g)| g.dim() == 4).collect();
    assert!(conv_grads.len() > 10);
    for (n, g) in conv_grads {
        // 1x1 kernels are contiguous either way.
        assert!(is_channels_last(g) || g.size()[2] == 1, "{n}'s gradient follows its weight");
    }
    // Other kernels sum in another order: equal to fp32 rounding.
    let scale = plain.abs().max().double_value(&[]);
    for out in [&maps, &nhwc] {
        let diff = (&plain - out).abs().max().double_value(&[]);
        assert!(diff < 1e-5 * scale, "outputs differ by {diff} (scale {scale})");
    }
    let largest = |grads: &[(String, Tensor)]| {
        grads.iter().map(|(_, g)| g.abs().max().double_value(&[])).fold(0.0, f64::max)
    };
    let global = largest(&plain_grads);
    for ((n, a), (_, b)) in plain_grads.iter().zip(&nhwc_grads) {
        // The floor: some gradients are zero in exact arithmetic (a key's bias, under softmax)
        // and hold only the rounding of terms as large as the largest gradients.
        let scale = a.abs().max().double_value(&[]).max(1e-3 * global);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-4 * scale, "{n}: gradients differ by {diff} (scale {scale})");
    }
}
