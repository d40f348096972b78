//! Loss curves of several runs in one PNG: axes with ticks and labels, one colour per run, a
//! legend.

use std::path::Path;

use embedded_graphics::text::Alignment;

use super::canvas::{Canvas, BLACK, GREY};
use crate::error::{Result, TrainerError};

/// Distinct colours for the curves (matplotlib's first two, then more).
pub const CURVE_COLOURS: [[u8; 3]; 4] =
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];

pub const PLOT_WIDTH: u32 = 800;
pub const PLOT_HEIGHT: u32 = 500;

/// One curve: its legend label and (x, y) points in x order.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` (curve i in `CURVE_COLOURS[i]`) against shared axes.
pub fn plot(series: &[Series], title: &str, x_label: &str, y_label: &str) -> Canvas {
    let (left, right, top, bottom) = (70i32, 20i32, 40i32, 50i32);
    let (w, h) = (PLOT_WIDTH as i32, PLOT_HEIGHT as i32);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let mut c = Canvas::new(PLOT_WIDTH, PLOT_HEIGHT);
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let range = |v: Vec<f64>, pad: f64| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let span = if hi > lo { hi - lo } else { 1.0 };
        (lo - pad * span, hi + pad * span)
    };
    let (x0, x1) = range(all.iter().map(|p| p.0).collect(), 0.0);
    let (y0, y1) = range(all.iter().map(|p| p.1).collect(), 0.05);
    let px = |x: f64| left + ((x - x0) / (x1 - x0) * pw as f64).round() as i32;
    let py = |y: f64| top + ph - ((y - y0) / (y1 - y0) * ph as f64).round() as i32;

    // Grid and ticks: five intervals on each axis.
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let (gx, gy) = (px(xv), py(yv));
        c.line((gx, top), (gx, top + ph), GREY, 1);
        c.line((left, gy), (left + pw, gy), GREY, 1);
        c.line((gx, top + ph), (gx, top + ph + 4), BLACK, 1);
        c.line((left - 4, gy), (left, gy), BLACK, 1);
        c.text(&tick(xv), gx, top + ph + 16, Alignment::Center);
        c.text(&tick(yv), left - 7, gy + 3, Alignment::Right);
    }
    c.line((left, top + ph), (left + pw, top + ph), BLACK, 1);
    c.line((left, top), (left, top + ph), BLACK, 1);
    c.text(title, w / 2, 16, Alignment::Center);
    c.text(x_label, left + pw / 2, h - 12, Alignment::Center);
    c.text(y_label, left, top - 8, Alignment::Center);

    for (i, s) in series.iter().enumerate() {
        let colour = CURVE_COLOURS[i % CURVE_COLOURS.len()];
        let pts: Vec<(i32, i32)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|p| (px(p.0), py(p.1)))
            .collect();
        for pair in pts.windows(2) {
            c.line(pair[0], pair[1], colour, 2);
        }
        if pts.len() == 1 {
            c.fill(pts[0].0 - 2, pts[0].1 - 2, 5, 5, colour);
        }
        // Legend, top right, one row per curve.
        let (lx, ly) = (left + pw - 150, top + 14 + 16 * i as i32);
        c.fill(lx - 6, ly - 9, 156, 14, [255, 255, 255]);
        c.line((lx, ly - 3), (lx + 24, ly - 3), colour, 3);
        c.text(&s.label, lx + 30, ly, Alignment::Left);
    }
    c
}

fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-2..1e4).contains(&a) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.1e}")
    }
}

/// Writes `canvas` as a PNG.
pub fn save_png(canvas: &Canvas, path: &Path) -> Result<()> {
    canvas
        .0
        .save(path)
        .map_err(|e| TrainerError::Io { path: path.to_owned(), source: std::io::Error::other(e) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_curves_and_the_axes_are_drawn() {
        let series = [
            Series { label: "a".into(), points: vec![(0.0, 1.0), (10.0, 0.5), (20.0, 0.2)] },
            Series { label: "b".into(), points: vec![(0.0, 0.9), (20.0, 0.8)] },
        ];
        let c = plot(&series, "t", "step", "loss");
        assert_eq!(c.0.dimensions(), (PLOT_WIDTH, PLOT_HEIGHT));
        let count = |rgb: [u8; 3]| c.0.pixels().filter(|p| p.0 == rgb).count();
        assert!(count(CURVE_COLOURS[0]) > 300 && count(CURVE_COLOURS[1]) > 300);
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(1500.0), "1500");
        assert_eq!(tick(0.001), "1.0e-3");
    }
}
