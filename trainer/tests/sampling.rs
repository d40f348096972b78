//! Samplers and the training loss: guidance, determinism, the cascade, and a tiny model that
//! overfits a handful of synthetic images.

mod common;

use imagen_trainer::diffusion::{
    guidance_at, guided_prediction, image_seeds, sample_cascade, sample_stage, DiffusionConfig,
    GaussianDiffusion, LossMode, Objective, SamplerConfig, SamplerKind, Stage, Thresholding,
};
use imagen_trainer::unet::{UNet, UNetConfig};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

/// The tests seed and draw from libtorch's one global generator: run them one at a time.
/// One intra-op thread: on a loaded machine OpenMP's spinning threads cost 5-20x.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    tch::set_num_threads(1);
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn toy_unet(side: i64, lowres: bool, dim: i64) -> UNetConfig {
    UNetConfig {
        image_side: side,
        lowres_cond: lowres,
        lowres_side: side / 2,
        dim,
        dim_mults: vec![1, 2],
        num_resnet_blocks: vec![1, 1],
        layer_attns: vec![false, true],
        layer_cross_attns: vec![false, false],
        attn_heads: 2,
        attn_dim_head: 16,
        resnet_groups: 8,
        text_embed_dim: 8,
        cond_dim: 32,
        ..UNetConfig::default()
    }
}

/// A U-Net whose zero-initialised output conv is randomised, so that it predicts something.
fn random_unet(cfg: &UNetConfig) -> (nn::VarStore, UNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = UNet::new(vs.root(), cfg).unwrap();
    common::randomise_final_conv(&vs, 0.1);
    (vs, unet)
}

fn captions(b: i64) -> (Tensor, Tensor) {
    let text = Tensor::randn([b, 3, 8], CPU);
    (text, Tensor::ones([b, 3], (Kind::Bool, Device::Cpu)))
}

#[test]
fn guidance_mixes_conditional_and_unconditional_predictions() {
    let _rng = exclusive();
    tch::manual_seed(0);
    let cfg = toy_unet(8, false, 16);
    let (_vs, unet) = random_unet(&cfg);
    let x = Tensor::randn([2, 3, 8, 8], CPU);
    let t = Tensor::from_slice(&[0.3f32, 0.7]);
    let (text, mask) = captions(2);
    let run = |drop: bool| {
        let drop = Tensor::from_slice(&[drop, drop]);
        unet.forward(&x, &t, &text, &mask, None, None, &drop, false)
    };
    let (cond, uncond) = (run(false), run(true));
    let guided = guided_prediction(&unet, &x, &t, &text, &mask, None, None, 3.0);
    let expected = &uncond + (&cond - &uncond) * 3.0;
    assert!((guided - expected).abs().max().double_value(&[]) < 1e-5);
    let plain = guided_prediction(&unet, &x, &t, &text, &mask, None, None, 1.0);
    assert!((plain - &cond).abs().max().double_value(&[]) < 1e-6);
    assert!((cond - uncond).abs().max().double_value(&[]) > 1e-4);
}

#[test]
fn guidance_applies_only_inside_its_log_snr_interval() {
    let _rng = exclusive();
    let cfg = toy_unet(8, false, 16);
    tch::manual_seed(0);
    let (_vs, unet) = random_unet(&cfg);
    let diffusion = GaussianDiffusion::new(&DiffusionConfig::default(), 8).unwrap();
    let (text, mask) = captions(2);
    let guided = SamplerConfig {
        kind: SamplerKind::Ddim,
        steps: 4,
        guidance_scale: 3.0,
        ..Default::default()
    };
    let sample = |sampler: &SamplerConfig| {
        sample_stage(&unet, &diffusion, sampler, &text, &mask, None, &[3, 4])
    };
    let max_diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    // The steps sit at t = 1, 0.75, 0.5, 0.25: an interval holding every log-SNR changes nothing,
    // one holding none is sampling without guidance, one holding some is neither.
    let log_snr: Vec<f64> =
        [1.0, 0.75, 0.5, 0.25].iter().map(|&t| diffusion.schedule().log_snr_at(t)).collect();
    let every =
        SamplerConfig { guidance_min_logsnr: -30.0, guidance_max_logsnr: 30.0, ..guided.clone() };
    let none =
        SamplerConfig { guidance_min_logsnr: 25.0, guidance_max_logsnr: 30.0, ..guided.clone() };
    let unguided = SamplerConfig { guidance_scale: 1.0, ..guided.clone() };
    let late_free =
        SamplerConfig { guidance_max_logsnr: (log_snr[1] + log_snr[2]) / 2.0, ..guided.clone() };
    assert_eq!(guidance_at(&late_free, log_snr[1]), 3.0);
    assert_eq!(guidance_at(&late_free, log_snr[2]), 1.0);
    let reference = sample(&guided);
    assert_eq!(max_diff(&sample(&every), &reference), 0.0);
    assert_eq!(max_diff(&sample(&none), &sample(&unguided)), 0.0);
    let partial = sample(&late_free);
    assert!(max_diff(&partial, &reference) > 1e-4);
    assert!(max_diff(&partial, &sample(&unguided)) > 1e-4);
}

#[test]
fn cascade_is_deterministic_for_a_seed_and_stops_where_asked() {
    let _rng = exclusive();
    let base_cfg = toy_unet(8, false, 16);
    let sr_cfg = toy_unet(16, true, 16);
    tch::manual_seed(0);
    let (_vs1, base) = random_unet(&base_cfg);
    let (_vs2, sr) = random_unet(&sr_cfg);
    let diffusion_cfg = DiffusionConfig::default();
    let base_diffusion = GaussianDiffusion::new(&diffusion_cfg, 8).unwrap();
    let sr_diffusion = GaussianDiffusion::new(&diffusion_cfg, 16).unwrap();
    let ddpm = SamplerConfig { steps: 4, guidance_scale: 2.0, ..Default::default() };
    let ddim = SamplerConfig { kind: SamplerKind::Ddim, steps: 3, ..ddpm.clone() };
    let stages = [
        Stage { unet: &base, diffusion: &base_diffusion, sampler: &ddpm },
        Stage { unet: &sr, diffusion: &sr_diffusion, sampler: &ddim },
    ];
    let (text, mask) = captions(2);
    let a = sample_cascade(&stages, &text, &mask, 7, None).unwrap();
    let b = sample_cascade(&stages, &text, &mask, 7, None).unwrap();
    let c = sample_cascade(&stages, &text, &mask, 8, None).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].size(), vec![2, 3, 8, 8]);
    assert_eq!(a[1].size(), vec![2, 3, 16, 16]);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x - y).abs().max().double_value(&[]), 0.0);
    }
    assert!((&a[1] - &c[1]).abs().max().double_value(&[]) > 1e-3);
    assert!(a[1].abs().max().double_value(&[]) <= 1.0);
    let first = sample_cascade(&stages, &text, &mask, 7, Some(0)).unwrap();
    assert_eq!(first.len(), 1);
    let err = sample_cascade(&stages, &text, &mask, 7, Some(2)).unwrap_err().to_string();
    assert!(err.contains("2, but the cascade has 2 stage(s), 0 to 1"), "{err}");
    // A super-resolution stage cannot start a cascade, nor a base stage follow one.
    let reversed = [stages[1], stages[0]];
    let err = sample_cascade(&reversed, &text, &mask, 7, None).unwrap_err().to_string();
    assert!(err.contains("stages[0].unet.lowres_cond") && err.contains("base first"), "{err}");
    let err = sample_cascade(&stages[..1].repeat(2), &text, &mask, 7, None).unwrap_err();
    assert!(err.to_string().contains("stages[1].unet.lowres_cond"), "{err}");
    assert_eq!((&first[0] - &a[0]).abs().max().double_value(&[]), 0.0);
    // An image's noise is its own: the second caption sampled alone, as image 1 of the run, is
    // the second image of the pair (up to the order a kernel adds in at another batch size).
    let images = image_seeds(7, 1, 1);
    let one = |t: &Tensor| t.narrow(0, 1, 1);
    let (text1, mask1) = (one(&text), one(&mask));
    let mut prev: Option<Tensor> = None;
    for (k, stage) in stages.iter().enumerate() {
        let seeds = imagen_trainer::diffusion::stage_seeds(&images, k);
        let out = sample_stage(
            stage.unet,
            stage.diffusion,
            stage.sampler,
            &text1,
            &mask1,
            prev.as_ref(),
            &seeds,
        );
        let diff = (&out - one(&a[k])).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "stage {k}: {diff}");
        prev = Some(out);
    }
}

#[test]
fn training_loss_is_per_sample_and_reproducible_for_a_seed() {
    let _rng = exclusive();
    let cfg = toy_unet(16, true, 16);
    tch::manual_seed(0);
    let (_vs, unet) = random_unet(&cfg);
    let diffusion = GaussianDiffusion::new(&DiffusionConfig::default(), 16).unwrap();
    let x0 = Tensor::rand([3, 3, 16, 16], CPU) * 2.0 - 1.0;
    let (text, mask) = captions(3);
    tch::manual_seed(5);
    let (loss, t) = diffusion.loss(&unet, &x0, &text, &mask, Some(8), LossMode::Train);
    tch::manual_seed(5);
    let (again, t_again) = diffusion.loss(&unet, &x0, &text, &mask, Some(8), LossMode::Train);
    assert_eq!(loss.size(), vec![3]);
    assert_eq!(t.size(), vec![3]);
    assert_eq!((&loss - again).abs().max().double_value(&[]), 0.0);
    assert_eq!((&t - t_again).abs().max().double_value(&[]), 0.0);
    assert!(t.min().double_value(&[]) >= 0.0 && t.max().double_value(&[]) <= 1.0);
    loss.mean(Kind::Float).backward();
}

/// Four 16x16 images, a coloured square on a plain background each. Measured: the loss falls
/// about 8x in 600 steps and samples land about 60x closer to their images than noise does;
/// the test asks for 5x and 20x.
fn squares() -> Tensor {
    let specs: [([f64; 3], [f64; 3], i64, i64); 4] = [
        ([1.0, 1.0, 1.0], [1.0, -1.0, -1.0], 2, 2),
        ([-1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], 8, 2),
        ([0.0, 0.0, 0.0], [-1.0, -1.0, 1.0], 2, 8),
        ([-1.0, -1.0, -1.0], [1.0, 1.0, -1.0], 8, 8),
    ];
    let images: Vec<Tensor> = specs
        .iter()
        .map(|(bg, fg, y, x)| {
            let img =
                Tensor::from_slice(bg).to_kind(Kind::Float).view([3, 1, 1]).repeat([1, 16, 16]);
            let fill = Tensor::from_slice(fg).to_kind(Kind::Float).view([3, 1, 1]);
            img.narrow(1, *y, 6).narrow(2, *x, 6).copy_(&fill.expand([3, 6, 6], false));
            img
        })
        .collect();
    Tensor::stack(&images, 0)
}

#[test]
fn tiny_model_overfits_coloured_squares_and_samples_them() {
    let _rng = exclusive();
    tch::manual_seed(0);
    let cfg = toy_unet(16, false, 16);
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = UNet::new(vs.root(), &cfg).unwrap();
    let diffusion_cfg = DiffusionConfig { objective: Objective::V, ..Default::default() };
    let diffusion = GaussianDiffusion::new(&diffusion_cfg, 16).unwrap();
    let images = squares();
    let (text, mask) = captions(4);
    let batch = (images.repeat([2, 1, 1, 1]), text.repeat([2, 1, 1]), mask.repeat([2, 1]));

    let eval_loss = |seed: i64| {
        tch::no_grad(|| {
            tch::manual_seed(seed);
            let (loss, _) =
                diffusion.loss(&unet, &batch.0, &batch.1, &batch.2, None, LossMode::Train);
            loss.mean(Kind::Float).double_value(&[])
        })
    };
    let before: f64 = (0..4).map(|s| eval_loss(100 + s)).sum::<f64>() / 4.0;

    let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
    tch::manual_seed(1);
    for _ in 0..STEPS {
        let (loss, _) = diffusion.loss(&unet, &batch.0, &batch.1, &batch.2, None, LossMode::Train);
        opt.backward_step(&loss.mean(Kind::Float));
    }
    let after: f64 = (0..4).map(|s| eval_loss(100 + s)).sum::<f64>() / 4.0;
    eprintln!("loss before {before:.4}, after {after:.4}");

    let sampler = SamplerConfig {
        kind: SamplerKind::Ddim,
        steps: 20,
        guidance_scale: 1.0,
        thresholding: Thresholding::Static,
        ..Default::default()
    };
    let seeds = image_seeds(2, 0, text.size()[0] as usize);
    let samples = sample_stage(&unet, &diffusion, &sampler, &text, &mask, None, &seeds);
    let sample_mse = (&samples - &images).square().mean(Kind::Float).double_value(&[]);
    let noise_mse = (images.randn_like() - &images).square().mean(Kind::Float).double_value(&[]);
    eprintln!("sample MSE {sample_mse:.4}, noise MSE {noise_mse:.4}");
    assert!(after < before / 5.0, "loss fell only from {before} to {after}");
    assert!(sample_mse < noise_mse / 20.0, "samples {sample_mse} vs noise {noise_mse}");
    // Each caption brings back its own image.
    for i in 0..4 {
        let dist = (samples.get(i).unsqueeze(0) - &images).square().mean_dim(
            &[1i64, 2, 3][..],
            false,
            Kind::Float,
        );
        assert_eq!(dist.argmin(0, false).int64_value(&[]), i, "caption {i}: distances {dist}");
    }
}

const STEPS: usize = 600;

#[test]
fn a_super_resolution_stage_conditions_on_its_own_low_res_side_whatever_it_is_given() {
    let _rng = exclusive();
    tch::manual_seed(0);
    // A 4 -> 8 stage given an 8-pixel previous output: it was trained on targets degraded to 4
    // and back, so the condition must pass through 4 just the same.
    let cfg = toy_unet(8, true, 16);
    assert_eq!(cfg.lowres_side, 4);
    let (_vs, unet) = random_unet(&cfg);
    let diffusion = GaussianDiffusion::new(&DiffusionConfig::default(), 8).unwrap();
    let sampler = SamplerConfig { kind: SamplerKind::Ddim, steps: 3, ..Default::default() };
    let (text, mask) = captions(2);
    let sharp = Tensor::rand([2, 3, 8, 8], CPU) * 2.0 - 1.0;
    let sample = |prev: &Tensor| {
        sample_stage(&unet, &diffusion, &sampler, &text, &mask, Some(prev), &[5, 6])
    };
    let given_sharp = sample(&sharp);
    let given_low = sample(&imagen_trainer::diffusion::augment::resize(&sharp, 4));
    assert!((&given_sharp - &given_low).abs().max().double_value(&[]) < 1e-6);
}
