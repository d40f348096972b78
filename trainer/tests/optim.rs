//! AdamW and gradient clipping against trajectories recorded from torch.optim.AdamW and
//! torch.nn.utils.clip_grad_norm_ (scripts/make_optim_fixtures.py).

use imagen_trainer::optim::adamw::ParamGroup;
use imagen_trainer::optim::{clip_grad_norm, AdamW, AdamWConfig, OptimizerKernel};
use serde_json::Value;
use tch::{Kind, Tensor};

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn build(fx: &Value, kernel: OptimizerKernel) -> (Vec<Tensor>, AdamW) {
    let shapes: Vec<Vec<i64>> = fx["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect())
        .collect();
    let params: Vec<Tensor> = fx["init"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&shapes)
        .map(|(v, s)| Tensor::from_slice(&floats(v)).view(s.as_slice()).set_requires_grad(true))
        .collect();
    let cfg = AdamWConfig {
        beta1: fx["beta1"].as_f64().unwrap(),
        beta2: fx["beta2"].as_f64().unwrap(),
        eps: fx["eps"].as_f64().unwrap(),
        weight_decay: fx["weight_decay"].as_f64().unwrap(),
    };
    let named = params.iter().enumerate().map(|(i, p)| (format!("p{i}"), p.shallow_clone()));
    let mut opt = AdamW::new(&cfg, named.collect());
    opt.set_kernel(kernel).unwrap();
    assert_eq!(opt.is_fused(), kernel == OptimizerKernel::Fused);
    (params, opt)
}

fn set_grads(params: &[Tensor], grads: &Value) {
    for (p, g) in params.iter().zip(grads.as_array().unwrap()) {
        let mut grad = p.grad();
        if !grad.defined() {
            // Create the grad buffer through a backward pass of a zero loss.
            (p * 0.0).sum(Kind::Float).backward();
            grad = p.grad();
        }
        let g = Tensor::from_slice(&floats(g)).view(p.size().as_slice());
        grad.copy_(&g);
    }
}

fn max_abs_diff(p: &Tensor, expected: &Value) -> f64 {
    let e = Tensor::from_slice(&floats(expected)).view(p.size().as_slice());
    (p.detach() - e).abs().max().double_value(&[])
}

#[test]
fn adamw_and_clipping_match_pytorch() {
    for kernel in [OptimizerKernel::Loop, OptimizerKernel::Fused] {
        adamw_and_clipping_match_pytorch_with(kernel);
    }
}

fn adamw_and_clipping_match_pytorch_with(kernel: OptimizerKernel) {
    let fx = fixture();
    let (params, mut opt) = build(&fx, kernel);
    let max_norm = fx["max_norm"].as_f64().unwrap();
    for (i, step) in fx["steps"].as_array().unwrap().iter().enumerate() {
        set_grads(&params, &step["grads"]);
        let norm = clip_grad_norm(params.iter(), max_norm).double_value(&[]);
        let expected_norm = step["norm"].as_f64().unwrap();
        assert!((norm - expected_norm).abs() < 1e-5 * expected_norm, "step {i}: norm {norm}");
        opt.step(step["lr"].as_f64().unwrap()).unwrap();
        for (p, e) in params.iter().zip(step["params"].as_array().unwrap()) {
            let d = max_abs_diff(p, e);
            assert!(d < 1e-6, "{kernel:?} step {i}: max abs diff {d}");
        }
    }
}

#[test]
fn adamw_state_round_trip_continues_identically() {
    let fx = fixture();
    let steps = fx["steps"].as_array().unwrap();
    // The state written by one kernel continues identically under the same kernel, and within
    // float rounding under the other (the checkpoint format does not depend on the kernel).
    let (params, mut opt) = build(&fx, OptimizerKernel::Fused);
    for step in &steps[..3] {
        set_grads(&params, &step["grads"]);
        opt.step(step["lr"].as_f64().unwrap()).unwrap();
    }
    // A second optimizer over copies of the parameters, restored from the first one's state.
    let copies: Vec<Tensor> =
        params.iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
    let cfg =
        AdamWConfig { weight_decay: fx["weight_decay"].as_f64().unwrap(), ..Default::default() };
    let named = copies.iter().enumerate().map(|(i, p)| (format!("p{i}"), p.shallow_clone()));
    let mut restored = AdamW::new(&cfg, named.collect());
    restored.set_kernel(OptimizerKernel::Fused).unwrap();
    restored.load_state_tensors(opt.state_tensors()).unwrap();
    assert_eq!(restored.steps(), 3);
    let loop_copies: Vec<Tensor> =
        copies.iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
    let named = loop_copies.iter().enumerate().map(|(i, p)| (format!("p{i}"), p.shallow_clone()));
    let mut restored_loop = AdamW::new(&cfg, named.collect());
    restored_loop.set_kernel(OptimizerKernel::Loop).unwrap();
    restored_loop.load_state_tensors(opt.state_tensors()).unwrap();
    for step in &steps[3..] {
        for ps in [&params, &copies, &loop_copies] {
            set_grads(ps, &step["grads"]);
        }
        let lr = step["lr"].as_f64().unwrap();
        opt.step(lr).unwrap();
        restored.step(lr).unwrap();
        restored_loop.step(lr).unwrap();
    }
    for ((a, b), c) in params.iter().zip(&copies).zip(&loop_copies) {
        assert!(a.detach().equal(&b.detach()), "restored optimizer diverged");
        let d = (a.detach() - c.detach()).abs().max().double_value(&[]);
        assert!(d < 1e-6, "fused state continued by the loop: max abs diff {d}");
    }
    // A state for other shapes is refused by name.
    let mut other = AdamW::new(&cfg, vec![("p0".into(), Tensor::zeros([7], tch::kind::FLOAT_CPU))]);
    let err = other.load_state_tensors(opt.state_tensors()).unwrap_err().to_string();
    assert!(err.contains("p0.exp_avg"), "{err}");
}

/// Two groups (different lr scales and weight decays, as the fine-tuned T5 has), clipped
/// gradients, a parameter without a gradient: the fused kernel and the loop agree to 1e-6 over
/// many steps and leave the same state.
#[test]
fn fused_and_loop_adamw_agree() {
    tch::manual_seed(7);
    let shapes: [&[i64]; 5] = [&[64, 32], &[32], &[3, 8, 3, 3], &[128], &[5, 5]];
    let init: Vec<Tensor> =
        shapes.iter().map(|s| Tensor::randn(*s, tch::kind::FLOAT_CPU)).collect();
    let cfg = AdamWConfig { weight_decay: 0.05, ..AdamWConfig::default() };
    let make = |kernel: OptimizerKernel| {
        let params: Vec<Tensor> = init.iter().map(|t| t.copy().set_requires_grad(true)).collect();
        let named = |r: std::ops::Range<usize>| -> Vec<(String, Tensor)> {
            r.map(|i| (format!("p{i}"), params[i].shallow_clone())).collect()
        };
        let groups = vec![
            ParamGroup { params: named(0..3), lr_scale: 1.0, weight_decay: 0.05 },
            ParamGroup { params: named(3..5), lr_scale: 0.1, weight_decay: 0.0 },
        ];
        let mut opt = AdamW::with_groups(&cfg, groups);
        opt.set_kernel(kernel).unwrap();
        (params, opt)
    };
    let (fused_params, mut fused) = make(OptimizerKernel::Fused);
    let (loop_params, mut looped) = make(OptimizerKernel::Loop);
    assert!(fused.is_fused() && !looped.is_fused());
    for step in 0..12 {
        // A loss whose gradients are large enough that clipping to 1.0 bites; p4 gets none.
        let grads_of = |params: &[Tensor]| {
            let loss = params[..4]
                .iter()
                .enumerate()
                .map(|(i, p)| (p * p * (i + 1) as f64 + p.sin() * 3.0).sum(Kind::Float))
                .fold(Tensor::from(0.0f32), |a, b| a + b);
            loss.backward();
            clip_grad_norm(params.iter(), 1.0).double_value(&[])
        };
        let (nf, nl) = (grads_of(&fused_params), grads_of(&loop_params));
        assert!(nf > 1.0, "clipping is exercised");
        assert!((nf - nl).abs() < 1e-4 * nf, "step {step}: norms {nf} vs {nl}");
        let lr = 1e-2 * (1.0 + step as f64) / 12.0;
        fused.step(lr).unwrap();
        looped.step(lr).unwrap();
        fused.zero_grad();
        looped.zero_grad();
        for (i, (a, b)) in fused_params.iter().zip(&loop_params).enumerate() {
            let d = (a.detach() - b.detach()).abs().max().double_value(&[]);
            assert!(d < 1e-6, "step {step}, p{i}: max abs diff {d}");
        }
    }
    assert!(
        fused_params[4].detach().equal(&init[4]),
        "a parameter without a gradient is left alone"
    );
    assert!(
        (fused_params[0].detach() - &init[0]).abs().max().double_value(&[]) > 1e-2,
        "the parameters moved"
    );
    for ((na, a), (nb, b)) in fused.state_tensors().iter().zip(&looped.state_tensors()) {
        assert_eq!(na, nb);
        let d = (a - b).abs().max().double_value(&[]);
        assert!(d < 1e-6, "state {na}: max abs diff {d}");
    }
}
