//! A deterministic scorer for generated synthetic scenes: finds the shape and reads its colour,
//! shape, size and position back, to compare with what the caption asked for.
//!
//! The background is the median colour of the image border (no shape of the spec reaches the
//! border). Each pixel takes the nearest of the six palette colours and that background; after a
//! 3x3 majority vote, the largest 4-connected region of palette pixels is the shape. Its mean
//! colour gives the colour. Each of the three shapes is fitted to the region by area and centroid;
//! the one overlapping it best (intersection over union) gives the shape, and its box the size
//! (box side) and position (box centre).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::spec::{Colour, Position, SceneAttributes, Shape, Size};

/// What the scorer read from an image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub colour: Colour,
    pub shape: Shape,
    pub size: Size,
    pub position: Position,
    /// Box centre (x, y) in fractions of the image side.
    pub centre: (f64, f64),
    /// Side of the fitted shape's box as a fraction of the image side.
    pub box_side: f64,
    /// Intersection over union of the region and the fitted shape.
    pub iou: f64,
    /// Shape pixels over image pixels.
    pub area_fraction: f64,
}

/// Per attribute, whether the image shows what the caption asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AttributeMatch {
    pub colour: bool,
    pub shape: bool,
    pub size: bool,
    pub position: bool,
}

impl AttributeMatch {
    pub fn all(&self) -> bool {
        self.colour && self.shape && self.size && self.position
    }
}

/// Scores `image` against the attributes its caption asked for. An image without any shape
/// matches nothing.
pub fn score(image: &RgbImage, expected: &SceneAttributes) -> AttributeMatch {
    match detect(image) {
        None => AttributeMatch::default(),
        Some(d) => AttributeMatch {
            colour: d.colour == expected.colour,
            shape: d.shape == expected.shape,
            size: d.size == expected.size,
            position: d.position == expected.position,
        },
    }
}

/// Finds the shape; `None` when no pixel is nearer a palette colour than the background.
pub fn detect(image: &RgbImage) -> Option<Detection> {
    let (w, h) = image.dimensions();
    let (w, h) = (w as usize, h as usize);
    if w < 3 || h < 3 {
        return None;
    }
    let background = border_median(image);
    let palette: Vec<[f64; 3]> = Colour::ALL.iter().map(|c| rgb_f64(c.rgb())).collect();
    let is_shape: Vec<bool> = image
        .pixels()
        .map(|p| {
            let p = rgb_f64(p.0);
            let bg = dist2(p, background);
            palette.iter().any(|&c| dist2(p, c) < bg)
        })
        .collect();
    let region = largest_region(&majority_3x3(&is_shape, w, h), w, h)?;

    let mut sum = [0.0f64; 3];
    for &i in &region {
        for (total, &v) in sum.iter_mut().zip(&image.as_raw()[3 * i..3 * i + 3]) {
            *total += f64::from(v);
        }
    }
    let n = region.len() as f64;
    let mean = sum.map(|s| s / n);
    let colour = *Colour::ALL
        .iter()
        .min_by(|a, b| dist2(mean, rgb_f64(a.rgb())).total_cmp(&dist2(mean, rgb_f64(b.rgb()))))?;

    // Fit each shape by its moments (area and centroid) and keep the best overlap: robust to the
    // soft, noisy edges that move a bounding box by a pixel or two.
    let centroid = region
        .iter()
        .fold((0.0, 0.0), |(sx, sy), &i| (sx + (i % w) as f64 + 0.5, sy + (i / w) as f64 + 0.5));
    let centroid = (centroid.0 / n, centroid.1 / n);
    let mut in_region = vec![false; w * h];
    region.iter().for_each(|&i| in_region[i] = true);
    let (shape, fit) = Shape::ALL
        .iter()
        .map(|&shape| (shape, fit_shape(shape, n, centroid, &in_region, w, h)))
        .max_by(|a, b| a.1.iou.total_cmp(&b.1.iou))?;
    let side = ((w * h) as f64).sqrt();
    let box_side = fit.side / side;
    let centre = (fit.centre.0 / w as f64, fit.centre.1 / h as f64);
    let size = *Size::ALL.iter().min_by(|a, b| {
        (a.box_fraction() - box_side).abs().total_cmp(&(b.box_fraction() - box_side).abs())
    })?;
    let position = *Position::ALL.iter().min_by(|a, b| {
        let d = |p: &Position| {
            let (x, y) = p.centre();
            (x - centre.0).powi(2) + (y - centre.1).powi(2)
        };
        d(a).total_cmp(&d(b))
    })?;
    Some(Detection {
        colour,
        shape,
        size,
        position,
        centre,
        box_side,
        iou: fit.iou,
        area_fraction: n / (w * h) as f64,
    })
}

/// The spec's shape of `shape` in the box of side `side` (pixels) centred at `centre`, fitted to
/// a region, with its intersection over union with the region.
struct Fit {
    side: f64,
    centre: (f64, f64),
    iou: f64,
}

/// Box of the shape with the region's area and centroid: side from the area (the shape fills
/// 1, pi/4 or 1/2 of its box), centre from the centroid (a triangle's lies 1/6 of the side below
/// its box centre).
fn fit_shape(
    shape: Shape,
    area: f64,
    centroid: (f64, f64),
    in_region: &[bool],
    w: usize,
    h: usize,
) -> Fit {
    let fill = match shape {
        Shape::Square => 1.0,
        Shape::Circle => std::f64::consts::FRAC_PI_4,
        Shape::Triangle => 0.5,
    };
    let side = (area / fill).sqrt();
    let centre = match shape {
        Shape::Triangle => (centroid.0, centroid.1 - side / 6.0),
        _ => centroid,
    };
    let half = side / 2.0;
    let clamp = |v: f64, hi: usize| (v.max(0.0) as usize).min(hi);
    let (x0, x1) = (clamp(centre.0 - half - 1.0, w), clamp(centre.0 + half + 1.0, w));
    let (y0, y1) = (clamp(centre.1 - half - 1.0, h), clamp(centre.1 + half + 1.0, h));
    let (mut ideal, mut both) = (0.0, 0.0);
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (x as f64 + 0.5 - centre.0, y as f64 + 0.5 - centre.1);
            if inside(shape, dx, dy, half) {
                ideal += 1.0;
                both += f64::from(u8::from(in_region[y * w + x]));
            }
        }
    }
    let iou = both / (area + ideal - both);
    Fit { side, centre, iou }
}

/// Whether offset (dx, dy) from the box centre lies in the shape of half-side `half`.
fn inside(shape: Shape, dx: f64, dy: f64, half: f64) -> bool {
    match shape {
        Shape::Square => dx.abs() <= half && dy.abs() <= half,
        Shape::Circle => dx * dx + dy * dy <= half * half,
        Shape::Triangle => {
            let t = (dy + half) / (2.0 * half);
            (0.0..=1.0).contains(&t) && dx.abs() <= t * half
        }
    }
}

fn rgb_f64(p: [u8; 3]) -> [f64; 3] {
    p.map(f64::from)
}

fn dist2(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum()
}

/// Per-channel median of the one-pixel frame of the image.
fn border_median(image: &RgbImage) -> [f64; 3] {
    let (w, h) = image.dimensions();
    let mut channels: [Vec<u8>; 3] = Default::default();
    for (x, y, p) in image.enumerate_pixels() {
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
            for (channel, v) in channels.iter_mut().zip(p.0) {
                channel.push(v);
            }
        }
    }
    channels.map(|mut v| {
        v.sort_unstable();
        f64::from(v[v.len() / 2])
    })
}

/// Each pixel takes the majority of its 3x3 neighbourhood (out of the image counts as not
/// shape): single pixels flipped by noise on a soft edge would otherwise move the bounding box.
fn majority_3x3(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    (0..mask.len())
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let mut count = 0;
            for yy in y.saturating_sub(1)..(y + 2).min(h) {
                for xx in x.saturating_sub(1)..(x + 2).min(w) {
                    count += usize::from(mask[yy * w + xx]);
                }
            }
            count >= 5
        })
        .collect()
}

/// Pixel indices of the largest 4-connected region of `mask`.
fn largest_region(mask: &[bool], w: usize, h: usize) -> Option<Vec<usize>> {
    let mut seen = vec![false; mask.len()];
    let mut best: Option<Vec<usize>> = None;
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let mut region = vec![start];
        let mut next = 0;
        while next < region.len() {
            let i = region[next];
            next += 1;
            let (x, y) = (i % w, i / w);
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
            ];
            for j in neighbours.into_iter().flatten() {
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    region.push(j);
                }
            }
        }
        if best.as_ref().is_none_or(|b| region.len() > b.len()) {
            best = Some(region);
        }
    }
    best
}
