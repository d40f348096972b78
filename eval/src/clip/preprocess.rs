//! `CLIPImageProcessor`: resize (the shortest edge, or to an exact size), centre-crop, rescale
//! to [0, 1], normalise by the channel mean and std, each step as `preprocessor_config.json` says
//! and as transformers' PIL backend does it.

use image::{imageops::FilterType, RgbImage};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// The fields of `preprocessor_config.json` used here; defaults are OpenAI CLIP's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipPreprocess {
    /// Whether to resize. Default true.
    pub do_resize: bool,
    /// The resize: `{"shortest_edge": 224}` or a plain number scales the shortest edge to it,
    /// keeping the aspect ratio; `{"height": h, "width": w}` resizes to exactly h x w.
    /// Default: shortest edge 224.
    pub size: SizeSpec,
    /// PIL's resampling filter of the resize. Default 3 (bicubic).
    pub resample: Resample,
    /// Whether to centre-crop. Default true.
    pub do_center_crop: bool,
    /// Crop: `{"height": 224, "width": 224}` or a plain number. Default 224.
    pub crop_size: SizeSpec,
    /// Whether to multiply the 0-255 values by `rescale_factor`. Default true.
    pub do_rescale: bool,
    /// Default 1/255.
    pub rescale_factor: f64,
    /// Whether to normalise by `image_mean` and `image_std`. Default true.
    pub do_normalize: bool,
    /// Default [0.48145466, 0.4578275, 0.40821073].
    pub image_mean: [f64; 3],
    /// Default [0.26862954, 0.26130258, 0.27577711].
    pub image_std: [f64; 3],
}

/// A resampling filter by PIL's code, as preprocessor configs name it: 0 nearest, 1 Lanczos,
/// 2 bilinear, 3 bicubic (the `image` crate's filters of the same kernels).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "u8")]
pub struct Resample(FilterType);

impl TryFrom<u8> for Resample {
    type Error = String;

    fn try_from(code: u8) -> Result<Self, String> {
        Ok(Resample(match code {
            0 => FilterType::Nearest,
            1 => FilterType::Lanczos3,
            2 => FilterType::Triangle,
            3 => FilterType::CatmullRom,
            _ => {
                return Err(format!(
                    "resample {code}: PIL's box (4) and hamming (5) filters are not supported; \
                     use 0 (nearest), 1 (Lanczos), 2 (bilinear) or 3 (bicubic)"
                ))
            }
        }))
    }
}

/// A size as transformers writes it in preprocessor configs.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    Plain(u32),
    ShortestEdge { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
}

impl SizeSpec {
    /// (height, width) of a crop: a plain number or a shortest edge is a square.
    fn crop(self) -> (u32, u32) {
        match self {
            SizeSpec::Plain(s) | SizeSpec::ShortestEdge { shortest_edge: s } => (s, s),
            SizeSpec::HeightWidth { height, width } => (height, width),
        }
    }

    /// (height, width) that an image of `h` x `w` is resized to.
    fn resized(self, h: u32, w: u32) -> (u32, u32) {
        let short = match self {
            SizeSpec::Plain(s) | SizeSpec::ShortestEdge { shortest_edge: s } => s,
            SizeSpec::HeightWidth { height, width } => return (height, width),
        };
        // transformers: new_long = int(short_target * long / short).
        let scaled = |long: u32, short_side: u32| {
            (u64::from(short) * u64::from(long) / u64::from(short_side)) as u32
        };
        if w <= h {
            (scaled(h, w), short)
        } else {
            (short, scaled(w, h))
        }
    }
}

impl Default for ClipPreprocess {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: SizeSpec::ShortestEdge { shortest_edge: 224 },
            resample: Resample(FilterType::CatmullRom),
            do_center_crop: true,
            crop_size: SizeSpec::HeightWidth { height: 224, width: 224 },
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.48145466, 0.4578275, 0.40821073],
            image_std: [0.26862954, 0.26130258, 0.27577711],
        }
    }
}

impl ClipPreprocess {
    /// `pixel_values` `[1, 3, crop height, crop width]` of one image. Resizing uses the `image`
    /// crate's filters; their rounding differs from PIL's by a few 1/255 on edges.
    pub fn pixel_values(&self, img: &RgbImage) -> Tensor {
        let resized;
        let mut img = img;
        if self.do_resize {
            let (h, w) = self.size.resized(img.height(), img.width());
            resized = image::imageops::resize(img, w, h, self.resample.0);
            img = &resized;
        }
        let cropped;
        if self.do_center_crop {
            cropped = center_crop(img, self.crop_size.crop());
            img = &cropped;
        }
        let (ch, cw) = (img.height(), img.width());
        let mut x = Tensor::from_slice(img.as_raw())
            .view([1, i64::from(ch), i64::from(cw), 3])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float);
        if self.do_rescale {
            x *= self.rescale_factor;
        }
        if self.do_normalize {
            let channels =
                |v: &[f64; 3]| Tensor::from_slice(v).to_kind(Kind::Float).view([1, 3, 1, 1]);
            x = (x - channels(&self.image_mean)) / channels(&self.image_std);
        }
        x
    }
}

/// transformers' `center_crop`: the centre `height` x `width`, where a side longer than the
/// image's is padded with zeros (the image then sits `ceil(pad / 2)` from the crop's start).
fn center_crop(img: &RgbImage, (height, width): (u32, u32)) -> RgbImage {
    // (first source row or column, first destination one, how many) along one axis.
    let axis = |have: u32, want: u32| {
        if want <= have {
            ((have - want) / 2, 0, want)
        } else {
            (0, (want - have).div_ceil(2), have)
        }
    };
    let (src_y, dst_y, rows) = axis(img.height(), height);
    let (src_x, dst_x, cols) = axis(img.width(), width);
    let mut out = RgbImage::new(width, height);
    let region = image::imageops::crop_imm(img, src_x, src_y, cols, rows).to_image();
    image::imageops::replace(&mut out, &region, i64::from(dst_x), i64::from(dst_y));
    out
}
