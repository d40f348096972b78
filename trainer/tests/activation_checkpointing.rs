//! Activation checkpointing: a checkpointed region runs once in the forward and once more in
//! the backward, under the forward's autocast settings and random state, and gives the gradients
//! of the plain computation; the U-Net with every block checkpointed trains exactly like the
//! plain one, and so does a fine-tuned T5 encoder.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use imagen_trainer::autocast::Autocast;
use imagen_trainer::native::{checkpoint_recomputations, checkpointed};
use imagen_trainer::unet::{UNet, UNetConfig};
use tch::{nn, Device, Kind, Tensor};

fn leaf(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu)).set_requires_grad(true)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_region_is_recomputed_in_the_backward_and_gets_the_plain_gradients() {
    let _serial = common::serial();
    tch::manual_seed(0);
    let x = leaf(&[4, 6]);
    let w = leaf(&[6, 3]);
    let calls = Arc::new(AtomicUsize::new(0));

    let plain = (x.matmul(&w).tanh() * &x.sum_dim_intlist(1, true, Kind::Float)).sum(Kind::Float);
    plain.backward();
    let (gx, gw) = (x.grad().copy(), w.grad().copy());
    let _ = (x.grad().zero_(), w.grad().zero_());

    // `w` is read by the region as a parameter (not an input), as a module's weights are.
    let (w_in, counter) = (w.shallow_clone(), Arc::clone(&calls));
    let region = move |t: &[Tensor]| {
        counter.fetch_add(1, Ordering::SeqCst);
        t[0].matmul(&w_in).tanh() * t[0].sum_dim_intlist(1, true, Kind::Float)
    };
    let y = checkpointed(&[&x], false, region).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the forward runs the region once");
    assert!(y.requires_grad());
    let loss = y.sum(Kind::Float);
    assert_eq!(loss.double_value(&[]), plain.double_value(&[]), "the same forward");
    loss.backward();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the backward runs it again");
    assert!(max_diff(&x.grad(), &gx) < 1e-6, "input gradient");
    assert!(max_diff(&w.grad(), &gw) < 1e-6, "parameter gradient");

    // The graph held the region; with the graph gone, so is the closure.
    drop((loss, y));
    assert_eq!(Arc::strong_count(&calls), 1, "the region was released with its graph");
}

#[test]
fn without_grad_the_region_simply_runs() {
    let _serial = common::serial();
    let x = leaf(&[3, 3]);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let y = tch::no_grad(|| {
        checkpointed(&[&x], false, move |t| {
            counter.fetch_add(1, Ordering::SeqCst);
            t[0].exp()
        })
        .unwrap()
    });
    assert!(!y.requires_grad());
    assert_eq!(max_diff(&y, &x.exp().detach()), 0.0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(Arc::strong_count(&calls), 1, "nothing holds the region afterwards");
}

#[test]
fn a_region_whose_inputs_take_no_gradient_still_trains_its_parameters() {
    let _serial = common::serial();
    // PyTorch's reentrant checkpoint would leave `w` without a gradient here.
    let x = Tensor::randn([2, 4], (Kind::Float, Device::Cpu));
    let w = leaf(&[4, 4]);
    let w_in = w.shallow_clone();
    let y = checkpointed(&[&x], false, move |t| t[0].matmul(&w_in)).unwrap();
    y.sum(Kind::Float).backward();
    let expected = x.sum_dim_intlist(0, true, Kind::Float).transpose(0, 1).expand([4, 4], false);
    assert!(max_diff(&w.grad(), &expected) < 1e-6);
}

#[test]
fn the_recomputation_replays_the_forward_random_state_and_leaves_the_generator_as_it_was() {
    let _serial = common::serial();
    let draw = |checkpoint: bool| {
        tch::manual_seed(7);
        let x = leaf(&[64, 64]);
        let region = |t: &[Tensor]| t[0].dropout(0.5, true) * 3.0;
        let y = if checkpoint {
            checkpointed(&[&x], true, region).unwrap()
        } else {
            region(&[x.shallow_clone()])
        };
        y.sum(Kind::Float).backward();
        let next = Tensor::rand([4], (Kind::Float, Device::Cpu));
        (y.detach(), x.grad().copy(), next)
    };
    let (y0, g0, n0) = draw(false);
    let (y1, g1, n1) = draw(true);
    assert_eq!(max_diff(&y0, &y1), 0.0);
    assert_eq!(max_diff(&g0, &g1), 0.0, "the backward used the forward's dropout mask");
    assert_eq!(max_diff(&n0, &n1), 0.0, "the generator continues as without checkpointing");
}

#[test]
fn the_recomputation_runs_under_the_forward_autocast() {
    let _serial = common::serial();
    let x = leaf(&[8, 8]);
    let w = leaf(&[8, 8]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (w_in, record) = (w.shallow_clone(), Arc::clone(&seen));
    let y = {
        let _bf16 = Autocast::bf16_if(true, Device::Cpu).unwrap();
        checkpointed(&[&x], false, move |t| {
            let out = t[0].matmul(&w_in);
            record.lock().unwrap().push(out.kind());
            out
        })
        .unwrap()
    };
    // The backward runs after the autocast region closed, as a training step's does.
    y.to_kind(Kind::Float).sum(Kind::Float).backward();
    assert_eq!(*seen.lock().unwrap(), vec![Kind::BFloat16, Kind::BFloat16]);
    assert!(w.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn a_failing_region_is_an_error_that_names_it() {
    let _serial = common::serial();
    let x = leaf(&[2, 3]);
    let err = checkpointed(&[&x], false, |t| t[0].matmul(&t[0])).unwrap_err().to_string();
    assert!(err.contains("activation checkpoint") && err.contains("checkpointed region"), "{err}");
    let err = checkpointed(&[&x], false, |_| panic!("deliberate")).unwrap_err().to_string();
    assert!(err.contains("deliberate"), "{err}");
}

/// The preset's topology at toy widths (every block kind, self- and cross-attention).
fn preset_unet(name: &str) -> UNetConfig {
    common::scaled_down(&common::preset(name).stages[0].unet)
}

/// Residual and transformer blocks of a U-Net: per level down and up, and the middle.
fn blocks_of(cfg: &UNetConfig) -> i64 {
    let attn = |i: usize| i64::from(cfg.level_attn(i) != imagen_trainer::unet::AttnKind::None);
    let levels: i64 =
        (0..cfg.dim_mults.len()).map(|i| 2 * (cfg.num_resnet_blocks[i] + attn(i))).sum();
    let mid = 2 + i64::from(cfg.mid_attn() != imagen_trainer::unet::AttnKind::None);
    levels + mid
}

/// Output and gradients of one training forward and backward of `cfg`'s U-Net.
fn unet_step(cfg: &UNetConfig, checkpoint: bool, bf16: bool) -> (Tensor, Vec<(String, Tensor)>) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut unet = UNet::new(vs.root(), cfg).unwrap();
    unet.set_activation_checkpointing(checkpoint);
    common::randomise_final_conv(&vs, 0.1);
    let (b, s, d) = (3, cfg.image_side, cfg.text_embed_dim);
    let image = |k| Tensor::randn([k, cfg.channels, s, s], (Kind::Float, Device::Cpu));
    let x = image(b);
    let t = Tensor::rand([b], (Kind::Float, Device::Cpu));
    let text = Tensor::randn([b, 5, d], (Kind::Float, Device::Cpu));
    let mask = Tensor::ones([b, 5], (Kind::Bool, Device::Cpu));
    let lowres = cfg.lowres_cond.then(|| image(b));
    let aug = cfg.lowres_cond.then(|| Tensor::rand([b], (Kind::Float, Device::Cpu)));
    let drop = Tensor::from_slice(&[false, true, false]);
    let out = {
        let _bf16 = Autocast::bf16_if(bf16, Device::Cpu).unwrap();
        unet.forward(&x, &t, &text, &mask, lowres.as_ref(), aug.as_ref(), &drop, true)
    };
    out.to_kind(Kind::Float).square().mean(Kind::Float).backward();
    let mut grads: Vec<_> = vs.variables().into_iter().map(|(n, v)| (n, v.grad().copy())).collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (out.detach(), grads)
}

#[test]
fn a_checkpointed_unet_trains_like_the_plain_one() {
    let _serial = common::serial();
    tch::set_num_threads(1);
    for (name, dropout, bf16) in [
        ("base64.toml", 0.0, false),
        ("sr256.toml", 0.0, false),
        ("base64.toml", 0.1, false),
        ("sr256.toml", 0.1, true),
    ] {
        let cfg = UNetConfig { dropout, ..preset_unet(name) };
        let before = checkpoint_recomputations();
        let (out0, grads0) = unet_step(&cfg, false, bf16);
        let plain = checkpoint_recomputations() - before;
        let (out1, grads1) = unet_step(&cfg, true, bf16);
        let recomputed = checkpoint_recomputations() - before;
        let blocks = blocks_of(&cfg);
        assert_eq!((plain, recomputed), (0, blocks), "{name}: every block, and only with it on");
        // In bf16 the yardstick is bf16 itself: how far its gradients are from fp32's.
        let fp32 = bf16.then(|| unet_step(&cfg, false, false).1);
        let case = format!("{name}, dropout {dropout}, bf16 {bf16}");
        assert_eq!(max_diff(&out0, &out1), 0.0, "{case}: the forward is unchanged");
        assert_eq!(grads0.len(), grads1.len());
        let rel = |a: &Tensor, b: &Tensor| {
            (a - b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-3)
        };
        for (i, ((n, a), (_, b))) in grads0.iter().zip(&grads1).enumerate() {
            // Only the order in which gradients are summed differs: in fp32 that is rounding;
            // in bf16 each summed term is rounded to 8 bits, which moves the sum by about as much
            // as bf16 moves it from fp32.
            match &fp32 {
                None => {
                    let scale = a.abs().max().double_value(&[]).max(1e-3);
                    let diff = max_diff(a, b);
                    assert!(diff <= 1e-5 * scale, "{case}: {n} differs by {diff} (scale {scale})");
                }
                Some(fp32) => {
                    let (diff, bf16_error) = (rel(b, a), rel(a, &fp32[i].1));
                    assert!(
                        diff <= 3.0 * bf16_error.max(1e-3),
                        "{case}: {n} differs by {diff} (relative), bf16 alone by {bf16_error}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_checkpointed_t5_encoder_fine_tunes_like_the_plain_one() {
    use imagen_trainer::t5::{init::init_random, Freeze, T5Config, T5Encoder};
    let _serial = common::serial();
    tch::set_num_threads(1);
    let cfg = T5Config {
        vocab_size: 64,
        d_model: 16,
        d_kv: 4,
        d_ff: 32,
        num_layers: 3,
        num_heads: 2,
        feed_forward_proj: "gated-gelu".into(),
        ..T5Config::default()
    };
    let ids = Tensor::from_slice(&[5i64, 9, 2, 1, 0, 0, 7, 3, 1, 0, 0, 0]).view([2, 6]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let run = |checkpoint: bool| {
        let vs = nn::VarStore::new(Device::Cpu);
        // The embedding and block 0 frozen: block 1's inputs then take no gradient, so it must
        // keep its graph for its own parameters' sake; only block 2 is recomputed.
        let freeze = Freeze { all: false, embedding: true, lowest_blocks: 1 };
        let mut encoder = T5Encoder::new(vs.root(), &cfg, freeze).unwrap();
        init_random(&encoder, 11);
        encoder.set_activation_checkpointing(checkpoint);
        let out = encoder.forward(&ids, &mask);
        out.square().mean(Kind::Float).backward();
        let grads: Vec<(String, Tensor)> = encoder
            .named_parameters()
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| (n.clone(), t.grad().copy()))
            .collect();
        (out.detach(), grads)
    };
    let before = checkpoint_recomputations();
    let (out0, grads0) = run(false);
    let (out1, grads1) = run(true);
    assert_eq!(checkpoint_recomputations() - before, 1, "block 2 alone was recomputed");
    assert_eq!(max_diff(&out0, &out1), 0.0);
    assert!(grads0.len() > 10);
    for ((n, a), (_, b)) in grads0.iter().zip(&grads1) {
        let scale = a.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{n} has no gradient");
        let diff = max_diff(a, b);
        assert!(diff <= 1e-5 * scale, "{n} differs by {diff} (scale {scale})");
    }
}

#[test]
fn grad_through_a_region_is_refused() {
    let _serial = common::serial();
    let x = leaf(&[3, 4]);
    let w = leaf(&[4, 4]);
    let w_in = w.shallow_clone();
    let y = checkpointed(&[&x], false, move |t| t[0].matmul(&w_in).tanh()).unwrap();
    // grad() with respect to x alone: the inner pass would also fill w's gradient.
    let err = Tensor::f_run_backward(&[y.sum(Kind::Float)], &[&x], false, false).unwrap_err();
    assert!(err.to_string().contains("only a plain backward()"), "{err}");
    assert!(!w.grad().defined(), "no gradient leaked into the parameter");
}
