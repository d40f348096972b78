//! `CLIPImageProcessor`: resize the shortest edge (bicubic), centre-crop, rescale to [0, 1],
//! normalise by the channel mean and std.

use image::{imageops::FilterType, RgbImage};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// The fields of `preprocessor_config.json` used here; defaults are OpenAI CLIP's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipPreprocess {
    /// Target of the shortest edge: `{"shortest_edge": 224}` or a plain number. Default 224.
    pub size: SizeSpec,
    /// Crop: `{"height": 224, "width": 224}` or a plain number. Default 224.
    pub crop_size: SizeSpec,
    /// Default [0.48145466, 0.4578275, 0.40821073].
    pub image_mean: [f64; 3],
    /// Default [0.26862954, 0.26130258, 0.27577711].
    pub image_std: [f64; 3],
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
    fn side(self) -> u32 {
        match self {
            SizeSpec::Plain(s) | SizeSpec::ShortestEdge { shortest_edge: s } => s,
            SizeSpec::HeightWidth { height, width } => height.min(width),
        }
    }
}

impl Default for ClipPreprocess {
    fn default() -> Self {
        Self {
            size: SizeSpec::ShortestEdge { shortest_edge: 224 },
            crop_size: SizeSpec::HeightWidth { height: 224, width: 224 },
            image_mean: [0.48145466, 0.4578275, 0.40821073],
            image_std: [0.26862954, 0.26130258, 0.27577711],
        }
    }
}

impl ClipPreprocess {
    /// `pixel_values` `[1, 3, crop, crop]` of one image. Resizing uses the `image` crate's
    /// Catmull-Rom filter (PIL's bicubic kernel); its rounding differs from PIL's by a few
    /// 1/255 on edges.
    pub fn pixel_values(&self, img: &RgbImage) -> Tensor {
        let (w, h) = img.dimensions();
        let short = self.size.side();
        // transformers: new_long = int(short_target * long / short).
        let (nw, nh) = if w <= h {
            (short, (u64::from(short) * u64::from(h) / u64::from(w)) as u32)
        } else {
            ((u64::from(short) * u64::from(w) / u64::from(h)) as u32, short)
        };
        let resized = image::imageops::resize(img, nw, nh, FilterType::CatmullRom);
        let (ch, cw) = match self.crop_size {
            SizeSpec::HeightWidth { height, width } => (height, width),
            other => (other.side(), other.side()),
        };
        let (top, left) = (nh.saturating_sub(ch) / 2, nw.saturating_sub(cw) / 2);
        let crop = image::imageops::crop_imm(&resized, left, top, cw, ch).to_image();
        let x = Tensor::from_slice(crop.as_raw())
            .view([1, i64::from(ch), i64::from(cw), 3])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            / 255.0;
        let mean = Tensor::from_slice(&self.image_mean).to_kind(Kind::Float).view([1, 3, 1, 1]);
        let std = Tensor::from_slice(&self.image_std).to_kind(Kind::Float).view([1, 3, 1, 1]);
        (x - mean) / std
    }
}
