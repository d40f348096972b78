//! The low-res condition of the super-resolution stages (Imagen §2.5): the high-res target
//! downsampled with antialiasing to the previous stage's side and upsampled back, optionally
//! blurred, then corrupted by the forward process at an augmentation level that the U-Net sees.

use tch::{Kind, Tensor};

use super::schedule::Schedule;

/// Resizes [B, C, H, W] to side x side: antialiased bilinear when shrinking, bilinear when
/// growing (align_corners = false, as PyTorch's `interpolate(..., antialias=True)`).
pub fn resize(x: &Tensor, side: i64) -> Tensor {
    let (_, _, h, w) = x.size4().expect("images are [B, C, H, W]");
    if h == side && w == side {
        return x.shallow_clone();
    }
    if side < h || side < w {
        x.internal_upsample_bilinear2d_aa([side, side], false, None, None)
    } else {
        x.upsample_bilinear2d([side, side], false, None, None)
    }
}

/// Separable Gaussian blur with standard deviation `sigma` pixels, reflect-padded.
pub fn gaussian_blur(x: &Tensor, sigma: f64) -> Tensor {
    let c = x.size()[1];
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let taps = Tensor::arange_start(-radius, radius + 1, (Kind::Float, x.device()));
    let kernel = (taps.square() / (-2.0 * sigma * sigma)).exp();
    let kernel = (&kernel / kernel.sum(Kind::Float)).to_kind(x.kind());
    let k = 2 * radius + 1;
    let padded = x.reflection_pad2d([radius, radius, radius, radius]);
    let horizontal = kernel.view([1, 1, 1, k]).expand([c, 1, 1, k], false);
    let vertical = kernel.view([1, 1, k, 1]).expand([c, 1, k, 1], false);
    let no_bias: Option<Tensor> = None;
    padded.conv2d(&horizontal, no_bias.as_ref(), [1, 1], [0, 0], [1, 1], c).conv2d(
        &vertical,
        no_bias.as_ref(),
        [1, 1],
        [0, 0],
        [1, 1],
        c,
    )
}

/// The clean low-res condition at the target's side: down to `lowres_side` and back up,
/// blurred at low resolution for the samples where `blur` ([B] bool) is set.
pub fn degrade(x0: &Tensor, lowres_side: i64, blur: Option<(&Tensor, f64)>) -> Tensor {
    let side = x0.size()[2];
    let mut low = resize(x0, lowres_side);
    if let Some((which, sigma)) = blur {
        let blurred = gaussian_blur(&low, sigma);
        low = blurred.where_self(&which.view([-1, 1, 1, 1]), &low);
    }
    resize(&low, side)
}

/// Noise conditioning augmentation: the forward process at `level` ([B], a diffusion time in
/// [0, 1]) applied to the condition with the given `noise`.
pub fn noise_augment(
    schedule: &Schedule,
    lowres: &Tensor,
    level: &Tensor,
    noise: &Tensor,
) -> Tensor {
    let (alpha, sigma) = schedule.alpha_sigma(&level.to_kind(Kind::Float));
    let bcast = |t: Tensor| t.view([-1, 1, 1, 1]).to_kind(lowres.kind());
    bcast(alpha) * lowres + bcast(sigma) * noise
}

/// Random side x side crops, one per sample, at offsets that are multiples of `align` (the SR
/// factor, so the crop's low-res version lines up with low-res pixels). The 256->1024 stage
/// trains on 256 crops of its 1024 targets this way (Imagen App. F). Draws from the global RNG.
pub fn random_crop(x: &Tensor, side: i64, align: i64) -> Tensor {
    let (b, _, h, w) = x.size4().expect("images are [B, C, H, W]");
    assert!(side <= h && side <= w, "crop {side} is larger than the {h}x{w} image");
    let slots = |extent: i64| (extent - side) / align + 1;
    let ys = Tensor::randint(slots(h), [b], (Kind::Int64, tch::Device::Cpu)) * align;
    let xs = Tensor::randint(slots(w), [b], (Kind::Int64, tch::Device::Cpu)) * align;
    let crops: Vec<Tensor> = (0..b)
        .map(|i| {
            let (y, x0) = (ys.int64_value(&[i]), xs.int64_value(&[i]));
            x.get(i).narrow(1, y, side).narrow(2, x0, side)
        })
        .collect();
    Tensor::stack(&crops, 0)
}
