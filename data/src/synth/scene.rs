//! The synthetic scene spec shared with evaluation and the demo: a background fill with one filled
//! shape whose colour, shape, size and position the caption states. A scene is a pure function of
//! (seed, global index).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Shape fill colours: (name, exact sRGB).
pub const COLOURS: [(&str, [u8; 3]); 6] = [
    ("red", [230, 25, 25]),
    ("green", [25, 190, 25]),
    ("blue", [30, 60, 230]),
    ("yellow", [240, 220, 20]),
    ("purple", [150, 40, 200]),
    ("orange", [255, 140, 0]),
];
/// Background fills: (name, exact sRGB).
pub const BACKGROUNDS: [(&str, [u8; 3]); 3] =
    [("white", [255, 255, 255]), ("black", [0, 0, 0]), ("gray", [128, 128, 128])];
/// Shapes; the triangle is upward isosceles: apex at the top centre of its box, base at the bottom.
pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
/// Sizes: (name, box side as a fraction of the image side).
pub const SIZES: [(&str, f64); 2] = [("small", 0.25), ("large", 0.45)];
/// Positions: (name, centre of the shape's box as fractions of the image side, x then y down).
pub const POSITIONS: [(&str, [f64; 2]); 5] = [
    ("top left", [0.27, 0.27]),
    ("top right", [0.73, 0.27]),
    ("bottom left", [0.27, 0.73]),
    ("bottom right", [0.73, 0.73]),
    ("center", [0.5, 0.5]),
];
/// Number of distinct attribute combinations.
pub const COMBINATIONS: usize =
    COLOURS.len() * SHAPES.len() * SIZES.len() * POSITIONS.len() * BACKGROUNDS.len();
/// Global indices of the held-out split start here, disjoint from any training index.
pub const HELDOUT_BASE: u64 = 1_000_000_000;

/// One scene's attributes, by name, as they appear in the metadata columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    pub colour: String,
    pub shape: String,
    pub size: String,
    pub position: String,
    pub background: String,
}

impl Scene {
    /// The scene at a global index. Every block of `COMBINATIONS` consecutive indices holds each
    /// combination exactly once, in an order shuffled by (seed, block), so any split is balanced.
    pub fn at(seed: u64, index: u64) -> Scene {
        let block = index / COMBINATIONS as u64;
        let mut order: Vec<usize> = (0..COMBINATIONS).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ block.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
        Scene::from_combination(order[(index % COMBINATIONS as u64) as usize])
    }

    /// The scene of a combination number in `0..COMBINATIONS` (mixed radix over the attributes).
    pub fn from_combination(mut c: usize) -> Scene {
        let mut digit = |n: usize| {
            let d = c % n;
            c /= n;
            d
        };
        let colour = COLOURS[digit(COLOURS.len())].0;
        let shape = SHAPES[digit(SHAPES.len())];
        let size = SIZES[digit(SIZES.len())].0;
        let position = POSITIONS[digit(POSITIONS.len())].0;
        let background = BACKGROUNDS[digit(BACKGROUNDS.len())].0;
        Scene {
            colour: colour.into(),
            shape: shape.into(),
            size: size.into(),
            position: position.into(),
            background: background.into(),
        }
    }

    /// "a small red circle in the top left corner on a white background".
    pub fn caption(&self) -> String {
        let place = if self.position == "center" {
            "in the center".to_string()
        } else {
            format!("in the {} corner", self.position)
        };
        format!(
            "a {} {} {} {place} on a {} background",
            self.size, self.colour, self.shape, self.background
        )
    }

    /// Renders the scene as `side*side*3` RGB bytes. Pixels wholly inside the shape or the
    /// background carry the exact spec colour; edge pixels are blended by 4x4 supersampled coverage.
    pub fn render(&self, side: u32) -> Vec<u8> {
        let fg = lookup(&COLOURS, &self.colour);
        let bg = lookup(&BACKGROUNDS, &self.background);
        let box_frac = SIZES.iter().find(|s| s.0 == self.size).expect("known size").1;
        let centre = POSITIONS.iter().find(|p| p.0 == self.position).expect("known position").1;
        let n = side as usize;
        let s = side as f64;
        let half = box_frac * s / 2.0;
        let (cx, cy) = (centre[0] * s, centre[1] * s);
        let inside = |x: f64, y: f64| -> bool {
            match self.shape.as_str() {
                "circle" => (x - cx).powi(2) + (y - cy).powi(2) <= half * half,
                "square" => (x - cx).abs() <= half && (y - cy).abs() <= half,
                _ => {
                    let top = cy - half;
                    y >= top && y <= cy + half && (x - cx).abs() <= (y - top) / 2.0
                }
            }
        };
        let mut out = Vec::with_capacity(n * n * 3);
        for _ in 0..n * n {
            out.extend_from_slice(&bg);
        }
        // Only pixels overlapping the shape's box can differ from the background.
        let lo = |c: f64| ((c - half).floor().max(0.0)) as usize;
        let hi = |c: f64| ((c + half).ceil().min(s)) as usize;
        const SUB: usize = 4;
        for y in lo(cy)..hi(cy) {
            for x in lo(cx)..hi(cx) {
                let mut hits = 0;
                for j in 0..SUB {
                    for i in 0..SUB {
                        let px = x as f64 + (i as f64 + 0.5) / SUB as f64;
                        let py = y as f64 + (j as f64 + 0.5) / SUB as f64;
                        hits += inside(px, py) as usize;
                    }
                }
                let a = hits as f64 / (SUB * SUB) as f64;
                let p = &mut out[(y * n + x) * 3..][..3];
                for c in 0..3 {
                    p[c] = (bg[c] as f64 * (1.0 - a) + fg[c] as f64 * a).round() as u8;
                }
            }
        }
        out
    }
}

fn lookup(table: &[(&str, [u8; 3])], name: &str) -> [u8; 3] {
    table.iter().find(|e| e.0 == name).expect("a scene holds only spec names").1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_follows_the_spec() {
        let mut s = Scene::from_combination(0);
        assert_eq!(s.caption(), "a small red circle in the top left corner on a white background");
        s.position = "center".into();
        assert_eq!(s.caption(), "a small red circle in the center on a white background");
    }

    #[test]
    fn every_block_holds_every_combination_once() {
        let mut seen: Vec<Scene> =
            (0..COMBINATIONS as u64).map(|i| Scene::at(7, 540 + i)).collect();
        seen.sort_by_key(|s| s.caption());
        seen.dedup();
        assert_eq!(seen.len(), COMBINATIONS);
        assert_eq!(Scene::at(7, 12), Scene::at(7, 12));
        assert_ne!(
            (0..20).map(|i| Scene::at(1, i)).collect::<Vec<_>>(),
            (0..20).map(|i| Scene::at(2, i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn render_puts_exact_colours_where_the_spec_says() {
        let scene = Scene {
            colour: "blue".into(),
            shape: "triangle".into(),
            size: "large".into(),
            position: "bottom right".into(),
            background: "gray".into(),
        };
        let side = 100;
        let img = scene.render(side);
        let px = |x: usize, y: usize| {
            [img[(y * 100 + x) * 3], img[(y * 100 + x) * 3 + 1], img[(y * 100 + x) * 3 + 2]]
        };
        // Box: side 45 centred at (73, 73): x,y in [50.5, 95.5]; apex at (73, 50.5).
        assert_eq!(px(73, 90), [30, 60, 230]); // near the base, centre
        assert_eq!(px(55, 60), [128, 128, 128]); // left of the apex's slope
        assert_eq!(px(73, 40), [128, 128, 128]); // above the apex
        assert_eq!(px(10, 10), [128, 128, 128]);
        let circle = Scene {
            shape: "circle".into(),
            position: "top left".into(),
            size: "small".into(),
            ..scene
        };
        let img = circle.render(side);
        assert_eq!(&img[(27 * 100 + 27) * 3..][..3], &[30, 60, 230]);
        // Radius 12.5: (27+13, 27) is just outside.
        assert_eq!(&img[(27 * 100 + 41) * 3..][..3], &[128, 128, 128]);
    }
}
