//! Schedules, forward process, posterior, objectives, weighting, thresholding and noise
//! conditioning augmentation against closed forms.

use std::f64::consts::PI;

use imagen_trainer::config::StageConfig;
use imagen_trainer::diffusion::augment::{degrade, gaussian_blur, noise_augment, resize};
use imagen_trainer::diffusion::loss::loss_weight;
use imagen_trainer::diffusion::objective::{target, x0_and_eps};
use imagen_trainer::diffusion::threshold::{dynamic_threshold, static_threshold};
use imagen_trainer::diffusion::{
    DiffusionConfig, GaussianDiffusion, LossWeighting, Objective, Schedule, ScheduleKind,
};
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Double, Device::Cpu);

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn schedule(kind: ScheduleKind, side: i64) -> Schedule {
    Schedule::new(&DiffusionConfig { schedule: kind, ..Default::default() }, side)
}

fn times() -> Tensor {
    Tensor::linspace(0.0, 1.0, 101, CPU)
}

#[test]
fn cosine_schedule_is_alpha_equals_cos_half_pi_t_within_its_clipping() {
    // With wide clipping the schedule is alpha_t = cos(pi t / 2) (Nichol & Dhariwal 2021).
    let cfg = DiffusionConfig { logsnr_min: -60.0, logsnr_max: 60.0, ..Default::default() };
    let s = Schedule::new(&cfg, 64);
    let t = Tensor::linspace(0.02, 0.98, 49, CPU);
    let (alpha, sigma) = s.alpha_sigma(&t);
    assert!(max_abs(&alpha, &(&t * (PI / 2.0)).cos()) < 1e-9);
    assert!(max_abs(&sigma, &(&t * (PI / 2.0)).sin()) < 1e-9);
    // Default clipping: log-SNR runs exactly from 20 to -20, symmetric about t = 0.5.
    let s = schedule(ScheduleKind::Cosine, 64);
    assert!((s.log_snr_at(0.0) - 20.0).abs() < 1e-9);
    assert!((s.log_snr_at(1.0) + 20.0).abs() < 1e-9);
    assert!(s.log_snr_at(0.5).abs() < 1e-9);
    let tensor = s.log_snr(&times());
    let scalar: Vec<f64> = (0..=100).map(|i| s.log_snr_at(i as f64 / 100.0)).collect();
    assert!(max_abs(&tensor, &Tensor::from_slice(&scalar)) < 1e-9);
}

#[test]
fn linear_schedule_is_the_continuous_ddpm_linear_betas() {
    // alpha_t^2 = exp(-(1e-4 + 10 t^2)) (Kingma et al. 2021, App. I; imagen-pytorch).
    let s = schedule(ScheduleKind::Linear, 64);
    let t = times();
    let (alpha, sigma) = s.alpha_sigma(&t);
    let expected = (-(t.square() * 10.0 + 1e-4)).exp();
    assert!(max_abs(&alpha.square(), &expected) < 1e-12);
    assert!(max_abs(&(alpha.square() + sigma.square()), &t.ones_like()) < 1e-12);
}

#[test]
fn shifted_cosine_is_cosine_plus_two_log_base_over_side() {
    let plain = schedule(ScheduleKind::Cosine, 256).log_snr(&times());
    let shifted = schedule(ScheduleKind::ShiftedCosine, 256).log_snr(&times());
    let shift = 2.0 * (64.0f64 / 256.0).ln();
    assert!(max_abs(&(shifted - &plain), &(plain.ones_like() * shift)) < 1e-9);
    // At the base side the shift vanishes.
    let at_base = schedule(ScheduleKind::ShiftedCosine, 64).log_snr(&times());
    assert!(max_abs(&at_base, &plain) < 1e-12);
}

#[test]
fn every_schedule_is_decreasing_and_variance_preserving() {
    for kind in [ScheduleKind::Cosine, ScheduleKind::Linear, ScheduleKind::ShiftedCosine] {
        let s = schedule(kind, 1024);
        let l = s.log_snr(&times());
        let steps = l.slice(0, 1, 101, 1) - l.slice(0, 0, 100, 1);
        assert!(steps.max().double_value(&[]) < 0.0, "{kind:?}");
        let (alpha, sigma) = s.alpha_sigma(&times());
        assert!(max_abs(&(alpha.square() + sigma.square()), &l.ones_like()) < 1e-12);
    }
}

#[test]
fn posterior_is_consistent_with_the_forward_process() {
    let d = GaussianDiffusion::new(&DiffusionConfig::default(), 64).unwrap();
    let x0 = Tensor::from_slice(&[0.8, -0.3, 0.0, 1.0]).view([4, 1, 1, 1]).to_kind(Kind::Double);
    let t = Tensor::from_slice(&[0.9, 0.5, 0.3, 0.05]).to_kind(Kind::Double);
    let s = Tensor::from_slice(&[0.6, 0.45, 0.1, 0.0]).to_kind(Kind::Double);
    let (alpha_t, sigma_t) = d.alpha_sigma(&t);
    let (alpha_s, sigma_s) = d.alpha_sigma(&s);
    // Analytically: with x_t = alpha_t x0 + sigma_t eps, the posterior mean is linear in x_t;
    // its marginal must be q(x_s | x0) = N(alpha_s x0, sigma_s^2).
    let zero = x0.zeros_like();
    let (mean_at_zero, var) = d.q_posterior(&x0, &zero, &t, &s);
    let (mean_at_one, _) = d.q_posterior(&x0, &zero.ones_like(), &t, &s);
    let slope = &mean_at_one - &mean_at_zero;
    let marginal_mean = &mean_at_zero + &slope * &alpha_t * &x0;
    let marginal_var = (&slope * &sigma_t).square() + &var;
    assert!(max_abs(&marginal_mean, &(&alpha_s * &x0)) < 1e-12);
    assert!(max_abs(&marginal_var, &sigma_s.square()) < 1e-12);
    // And by sampling: forward to t, posterior back to s.
    tch::manual_seed(0);
    let n = 200_000;
    let x0_many = x0.repeat([1, n, 1, 1]);
    let x_t = d.q_sample(&x0_many, &t, &x0_many.randn_like());
    let (mean, var) = d.q_posterior(&x0_many, &x_t, &t, &s);
    let x_s = mean + var.sqrt() * x_t.randn_like();
    let emp_mean = x_s.mean_dim(1, true, Kind::Double);
    let emp_var = x_s.var_dim(1, true, true);
    assert!(max_abs(&emp_mean, &(&alpha_s * &x0)) < 0.01);
    assert!(max_abs(&emp_var, &sigma_s.square()) < 0.01);
}

#[test]
fn objectives_invert_exactly() {
    tch::manual_seed(0);
    let x0 = Tensor::randn([3, 2, 4, 4], CPU);
    let eps = Tensor::randn([3, 2, 4, 4], CPU);
    let d = GaussianDiffusion::new(&DiffusionConfig::default(), 64).unwrap();
    let t = Tensor::from_slice(&[0.1, 0.5, 0.9]).to_kind(Kind::Double);
    let (alpha, sigma) = d.alpha_sigma(&t);
    let x_t = &alpha * &x0 + &sigma * &eps;
    for objective in [Objective::Eps, Objective::V, Objective::X0] {
        let goal = target(objective, &x0, &eps, &alpha, &sigma);
        let (x0_hat, eps_hat) = x0_and_eps(objective, &goal, &x_t, &alpha, &sigma);
        assert!(max_abs(&x0_hat, &x0) < 1e-9, "{objective:?}");
        assert!(max_abs(&eps_hat, &eps) < 1e-9, "{objective:?}");
    }
    // v at alpha = sigma = 1/sqrt 2 is (eps - x0)/sqrt 2.
    let h = Tensor::from(std::f64::consts::FRAC_1_SQRT_2);
    let v = target(Objective::V, &x0, &eps, &h, &h);
    assert!(max_abs(&v, &((&eps - &x0) * std::f64::consts::FRAC_1_SQRT_2)) < 1e-12);
}

#[test]
fn min_snr_weights_follow_hang_et_al() {
    let snr = Tensor::from_slice(&[0.5, 5.0, 20.0]).to_kind(Kind::Double);
    let w = |o| loss_weight(LossWeighting::MinSnr, o, &snr, 5.0);
    let close = |a: Tensor, b: &[f64]| max_abs(&a, &Tensor::from_slice(b)) < 1e-12;
    assert!(close(w(Objective::Eps), &[1.0, 1.0, 0.25]));
    assert!(close(w(Objective::X0), &[0.5, 5.0, 5.0]));
    assert!(close(w(Objective::V), &[0.5 / 1.5, 5.0 / 6.0, 5.0 / 21.0]));
    assert!(close(loss_weight(LossWeighting::None, Objective::Eps, &snr, 5.0), &[1.0, 1.0, 1.0]));
}

#[test]
fn thresholding_on_hand_made_inputs() {
    let x = Tensor::from_slice(&[0.5, -3.0, 2.0, 1.0, 0.1, -0.2, 0.3, 0.4]).view([2, 1, 2, 2]);
    let get = |t: &Tensor| Vec::<f64>::try_from(t.flatten(0, -1).to_kind(Kind::Double)).unwrap();
    assert_eq!(get(&static_threshold(&x)), vec![0.5, -1.0, 1.0, 1.0, 0.1, -0.2, 0.3, 0.4]);
    // p = 100: s = max |x| = 3 for the first sample; the second stays as it is (s = 1).
    let y = get(&dynamic_threshold(&x, 100.0));
    let expected = [0.5 / 3.0, -1.0, 2.0 / 3.0, 1.0 / 3.0, 0.1, -0.2, 0.3, 0.4];
    assert!(y.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{y:?}");
    // p = 50: |x| sorted 0.5, 1, 2, 3 -> median (linear) 1.5; clip to 1.5, divide by 1.5.
    let y = get(&dynamic_threshold(&x, 50.0));
    let expected = [0.5 / 1.5, -1.0, 1.0, 1.0 / 1.5, 0.1, -0.2, 0.3, 0.4];
    assert!(y.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{y:?}");
    // p = 99.5 on a large sample of 4 * N(0, 1): s is near the 99.5th percentile of |N(0, 16)|.
    tch::manual_seed(0);
    let big = Tensor::randn([1, 1, 500, 500], (Kind::Float, Device::Cpu)) * 4.0;
    let out = dynamic_threshold(&big, 99.5);
    assert!((out.abs().max().double_value(&[]) - 1.0).abs() < 1e-6);
    let s = (&big / &out).abs().nanmedian().double_value(&[]);
    assert!((s / (4.0 * 2.807) - 1.0).abs() < 0.02, "s = {s}");
}

#[test]
fn noise_augmentation_uses_the_level_it_was_given() {
    let cfg = DiffusionConfig::default();
    let d = GaussianDiffusion::new(&cfg, 64).unwrap();
    let s = d.aug_schedule();
    let x = Tensor::rand([3, 3, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let noise = x.randn_like();
    let level = Tensor::from_slice(&[0.0f32, 0.3, 0.9]);
    let out = noise_augment(s, &x, &level, &noise);
    for (i, l) in [0.0, 0.3, 0.9].into_iter().enumerate() {
        let alpha = 1.0 / (1.0 + (-s.log_snr_at(l)).exp());
        let (alpha, sigma) = (alpha.sqrt(), (1.0 - alpha).sqrt());
        let expected = x.get(i as i64) * alpha + noise.get(i as i64) * sigma;
        assert!(max_abs(&out.get(i as i64), &expected) < 1e-6, "level {l}");
    }
    // Through the training path: the condition's noise scales with sigma(level).
    tch::manual_seed(3);
    // Smooth images, so the condition keeps its energy through the degradation.
    let ramp = Tensor::linspace(-0.8, 0.8, 64, (Kind::Float, Device::Cpu));
    let x0 = (ramp.view([1, 1, 1, 64]) + ramp.view([1, 1, 64, 1]) * 0.5).repeat([3, 3, 1, 1]);
    let cond = d.lowres_condition(&x0, 16, &level);
    let clean = degrade(&x0, 16, None);
    for (i, l) in [0.0, 0.3, 0.9].into_iter().enumerate() {
        let (c, y) = (clean.get(i as i64), cond.get(i as i64));
        let alpha_hat = (&y * &c).sum(Kind::Double).double_value(&[])
            / c.square().sum(Kind::Double).double_value(&[]);
        let resid = (&y - &c * alpha_hat).std(true).double_value(&[]);
        let snr = s.log_snr_at(l).exp();
        let (alpha, sigma) = ((snr / (1.0 + snr)).sqrt(), (1.0 / (1.0 + snr)).sqrt());
        assert!((alpha_hat - alpha).abs() < 0.02, "level {l}: alpha {alpha_hat} vs {alpha}");
        assert!((resid - sigma).abs() < 0.02 + 0.05 * sigma, "level {l}: sigma {resid} vs {sigma}");
    }
}

#[test]
fn lowres_condition_is_antialiased_and_blur_is_gaussian() {
    // A pixel-level checkerboard averages out under an antialiased 4x reduction.
    let idx = Tensor::arange(32, (Kind::Int64, Device::Cpu));
    let board = ((idx.unsqueeze(0) + idx.unsqueeze(1)).remainder(2) * 2 - 1).to_kind(Kind::Float);
    let board = board.view([1, 1, 32, 32]).repeat([1, 3, 1, 1]);
    // (Only the corners keep a trace, from the truncated filter at the border.)
    assert!(resize(&board, 8).abs().max().double_value(&[]) < 0.01);
    let aliased = board.upsample_nearest2d([8, 8], None, None);
    assert!(aliased.abs().max().double_value(&[]) > 0.5, "plain subsampling aliases");
    let lowres = degrade(&board, 8, None);
    assert_eq!(lowres.size(), vec![1, 3, 32, 32]);
    assert!(lowres.abs().max().double_value(&[]) < 0.01);
    // A constant image survives down and up.
    let flat = Tensor::full([1, 3, 32, 32], 0.25, (Kind::Float, Device::Cpu));
    assert!(max_abs(&degrade(&flat, 8, None), &flat) < 1e-6);
    // Blur of a delta is the sampled, normalised Gaussian.
    let delta = Tensor::zeros([1, 1, 15, 15], (Kind::Float, Device::Cpu));
    let _ = delta.get(0).get(0).get(7).get(7).fill_(1.0);
    let blurred = gaussian_blur(&delta, 1.0);
    let taps = Tensor::arange_start(-3, 4, (Kind::Float, Device::Cpu));
    let g = (taps.square() * -0.5).exp();
    let g = &g / g.sum(Kind::Float);
    let expected = g.unsqueeze(1) * g.unsqueeze(0);
    assert!(
        max_abs(&blurred.get(0).get(0).slice(0, 4, 11, 1).slice(1, 4, 11, 1), &expected) < 1e-6
    );
    assert!((blurred.sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-6);
}

#[test]
fn blur_augmentation_applies_with_its_probability() {
    tch::manual_seed(4);
    let x0 = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let level = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    let all = Tensor::ones([2], (Kind::Bool, Device::Cpu));
    let blurred = degrade(&x0, 16, Some((&all, 0.8)));
    let sharp = degrade(&x0, 16, None);
    assert!(max_abs(&blurred, &sharp) > 0.05);
    for (prob, expected) in [(1.0, &blurred), (0.0, &sharp)] {
        let cfg = DiffusionConfig { blur_aug_prob: prob, blur_sigma: 0.8, ..Default::default() };
        let d = GaussianDiffusion::new(&cfg, 32).unwrap();
        // Level 0 leaves only sigma = exp(-10) of noise.
        assert!(max_abs(&d.lowres_condition(&x0, 16, &level), expected) < 1e-3, "p = {prob}");
    }
}

#[test]
fn random_crops_are_aligned_windows_of_each_image() {
    use imagen_trainer::diffusion::augment::random_crop;
    tch::manual_seed(6);
    // Pixel values encode their coordinates, so a crop reveals its offset.
    let coords = Tensor::arange(32 * 32, (Kind::Float, Device::Cpu)).view([1, 1, 32, 32]);
    let images = Tensor::cat(&[&coords, &(&coords + 10_000.0)], 0);
    let mut offsets = std::collections::HashSet::new();
    for _ in 0..20 {
        let crops = random_crop(&images, 8, 4);
        assert_eq!(crops.size(), vec![2, 1, 8, 8]);
        for i in 0..2 {
            let first = crops.get(i).double_value(&[0, 0, 0]) - 10_000.0 * i as f64;
            let (y, x) = ((first / 32.0) as i64, first as i64 % 32);
            assert!(y % 4 == 0 && x % 4 == 0 && y <= 24 && x <= 24, "offset ({y}, {x})");
            let window = images.get(i).narrow(1, y, 8).narrow(2, x, 8);
            assert_eq!(max_abs(&crops.get(i), &window), 0.0);
            offsets.insert((y, x));
        }
    }
    assert!(offsets.len() > 5, "crops do not move: {offsets:?}");
}

#[test]
fn configs_that_would_sample_outside_what_was_trained_or_representable_are_refused() {
    // In f32 the cosine angle at t = 1 rounds past pi/2 from about logsnr_min = -36: NaN.
    let t = Tensor::from_slice(&[1.0f32]);
    let wide = DiffusionConfig { logsnr_min: -40.0, ..Default::default() };
    let at_end = Schedule::new(&wide, 64).log_snr(&t).double_value(&[0]);
    assert!(at_end.is_nan(), "{at_end}");
    let err = wide.validate().unwrap_err().to_string();
    assert!(err.contains("[-30, 30]"), "{err}");
    let edge = DiffusionConfig { logsnr_min: -30.0, ..Default::default() };
    edge.validate().unwrap();
    assert!(Schedule::new(&edge, 64).log_snr(&t).double_value(&[0]).is_finite());
    // An SR stage may not sample with the low-res condition noised beyond the levels training
    // drew; a base stage, which has no low-res condition, does not read the level.
    let mut stage = StageConfig::default();
    stage.diffusion.noise_aug_max = 0.1;
    stage.diffusion.sampler.aug_level = 0.2;
    stage.validate(0).unwrap();
    stage.unet.lowres_cond = true;
    let err = stage.validate(1).unwrap_err().to_string();
    assert!(err.contains("exceeds noise_aug_max") && err.contains("stages[1]"), "{err}");
}
