//! The random numbers of a training step: diffusion times, noise, condition dropout and, for
//! super-resolution stages, the augmentation level, blur choice and augmentation noise.

use tch::{Device, Kind, Tensor};

/// One batch's draws, in the order the global generator produces them.
pub struct TrainingDraws {
    /// Diffusion times, uniform on [0, 1). [B]
    pub t: Tensor,
    /// The forward process's noise, shaped like the batch.
    pub noise: Tensor,
    /// Uniform [B]; a sample's condition is dropped where it is below the dropout probability.
    pub drop_u: Tensor,
    /// SR stages: uniform [B], scaled to the augmentation level.
    pub aug_u: Option<Tensor>,
    /// SR stages with blur augmentation: uniform [B], blurred where below its probability.
    pub blur_u: Option<Tensor>,
    /// SR stages: noise for the low-res condition (degraded and brought back to full size).
    pub aug_noise: Option<Tensor>,
}

/// What a batch looks like to the draws.
#[derive(Debug, Clone, Copy)]
pub struct DrawShape {
    pub channels: i64,
    pub side: i64,
    /// SR stages: the low-res condition's side.
    pub lowres_side: Option<i64>,
    pub blur: bool,
}

impl TrainingDraws {
    /// `b` samples from the global generator.
    pub fn global(b: i64, shape: DrawShape, device: Device) -> Self {
        let opts = (Kind::Float, device);
        let t = Tensor::rand([b], opts);
        let noise = Tensor::randn([b, shape.channels, shape.side, shape.side], opts);
        let drop_u = Tensor::rand([b], opts);
        let (aug_u, blur_u, aug_noise) = match shape.lowres_side {
            Some(_) => {
                let aug_u = Tensor::rand([b], opts);
                let blur_u = shape.blur.then(|| Tensor::rand([b], opts));
                let aug_noise = Tensor::randn([b, shape.channels, shape.side, shape.side], opts);
                (Some(aug_u), blur_u, Some(aug_noise))
            }
            None => (None, None, None),
        };
        Self { t, noise, drop_u, aug_u, blur_u, aug_noise }
    }

    /// One sample per seed, each from the global generator re-seeded with its seed. A sample's
    /// draws then depend on its seed alone, not on its batch-mates: a global batch split over
    /// ranks (each rank drawing for its own samples) draws exactly what one process would.
    pub fn per_sample(seeds: &[i64], shape: DrawShape, device: Device) -> Self {
        let parts: Vec<Self> = seeds
            .iter()
            .map(|&seed| {
                tch::manual_seed(seed);
                Self::global(1, shape, device)
            })
            .collect();
        let cat =
            |f: &dyn Fn(&Self) -> &Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
        let cat_opt = |f: &dyn Fn(&Self) -> Option<&Tensor>| {
            let pieces: Option<Vec<&Tensor>> = parts.iter().map(f).collect();
            pieces.map(|p| Tensor::cat(&p, 0))
        };
        Self {
            t: cat(&|d| &d.t),
            noise: cat(&|d| &d.noise),
            drop_u: cat(&|d| &d.drop_u),
            aug_u: cat_opt(&|d| d.aug_u.as_ref()),
            blur_u: cat_opt(&|d| d.blur_u.as_ref()),
            aug_noise: cat_opt(&|d| d.aug_noise.as_ref()),
        }
    }
}
