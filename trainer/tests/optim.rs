//! AdamW and gradient clipping against trajectories recorded from torch.optim.AdamW and
//! torch.nn.utils.clip_grad_norm_ (scripts/make_optim_fixtures.py).

use imagen_trainer::optim::{clip_grad_norm, AdamW, AdamWConfig};
use serde_json::Value;
use tch::{Kind, Tensor};

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn build(fx: &Value) -> (Vec<Tensor>, AdamW) {
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
    let opt = AdamW::new(&cfg, named.collect());
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
    let fx = fixture();
    let (params, mut opt) = build(&fx);
    let max_norm = fx["max_norm"].as_f64().unwrap();
    for (i, step) in fx["steps"].as_array().unwrap().iter().enumerate() {
        set_grads(&params, &step["grads"]);
        let norm = clip_grad_norm(params.iter(), max_norm).double_value(&[]);
        let expected_norm = step["norm"].as_f64().unwrap();
        assert!((norm - expected_norm).abs() < 1e-5 * expected_norm, "step {i}: norm {norm}");
        opt.step(step["lr"].as_f64().unwrap());
        for (p, e) in params.iter().zip(step["params"].as_array().unwrap()) {
            let d = max_abs_diff(p, e);
            assert!(d < 1e-6, "step {i}: max abs diff {d}");
        }
    }
}

#[test]
fn adamw_state_round_trip_continues_identically() {
    let fx = fixture();
    let steps = fx["steps"].as_array().unwrap();
    let (params, mut opt) = build(&fx);
    for step in &steps[..3] {
        set_grads(&params, &step["grads"]);
        opt.step(step["lr"].as_f64().unwrap());
    }
    // A second optimizer over copies of the parameters, restored from the first one's state.
    let copies: Vec<Tensor> =
        params.iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
    let cfg =
        AdamWConfig { weight_decay: fx["weight_decay"].as_f64().unwrap(), ..Default::default() };
    let named = copies.iter().enumerate().map(|(i, p)| (format!("p{i}"), p.shallow_clone()));
    let mut restored = AdamW::new(&cfg, named.collect());
    restored.load_state_tensors(opt.state_tensors()).unwrap();
    assert_eq!(restored.steps(), 3);
    for step in &steps[3..] {
        set_grads(&params, &step["grads"]);
        set_grads(&copies, &step["grads"]);
        opt.step(step["lr"].as_f64().unwrap());
        restored.step(step["lr"].as_f64().unwrap());
    }
    for (a, b) in params.iter().zip(&copies) {
        assert!(a.detach().equal(&b.detach()), "restored optimizer diverged");
    }
    // A state for other shapes is refused by name.
    let mut other = AdamW::new(&cfg, vec![("p0".into(), Tensor::zeros([7], tch::kind::FLOAT_CPU))]);
    let err = other.load_state_tensors(opt.state_tensors()).unwrap_err().to_string();
    assert!(err.contains("p0.exp_avg"), "{err}");
}
