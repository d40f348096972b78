//! The conditioning scorer on scenes drawn here from the scene spec, clean and perturbed.

use image::RgbImage;
use imagen_eval::conditioning::{
    detect, score, AttributeMatch, Background, Colour, ConditioningAccuracy, Position,
    SceneAttributes, Shape, Size,
};

/// Draws a scene as the spec defines it, testing each pixel's centre against the shape.
fn render(s: &SceneAttributes, side: u32) -> RgbImage {
    let n = f64::from(side);
    let (cx, cy) = s.position.centre();
    let (cx, cy, half) = (cx * n, cy * n, s.size.box_fraction() * n / 2.0);
    RgbImage::from_fn(side, side, |x, y| {
        let (px, py) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
        let (dx, dy) = (px - cx, py - cy);
        let inside = match s.shape {
            Shape::Square => dx.abs() <= half && dy.abs() <= half,
            Shape::Circle => dx * dx + dy * dy <= half * half,
            Shape::Triangle => {
                let t = (py - (cy - half)) / (2.0 * half);
                (0.0..=1.0).contains(&t) && dx.abs() <= t * half
            }
        };
        image::Rgb(if inside { s.colour.rgb() } else { s.background.rgb() })
    })
}

/// Deterministic noise of amplitude `amp` on every channel (xorshift).
fn add_noise(img: &mut RgbImage, amp: i32, seed: u64) {
    let mut state = seed | 1;
    for p in img.pixels_mut() {
        for c in p.0.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let delta = (state % (2 * amp as u64 + 1)) as i32 - amp;
            *c = (i32::from(*c) + delta).clamp(0, 255) as u8;
        }
    }
}

/// 3x3 box blur (soft edges, as a generator's are).
fn blur(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let mut sum = [0u32; 3];
        let mut n = 0;
        for yy in y.saturating_sub(1)..(y + 2).min(h) {
            for xx in x.saturating_sub(1)..(x + 2).min(w) {
                let p = img.get_pixel(xx, yy).0;
                (0..3).for_each(|c| sum[c] += u32::from(p[c]));
                n += 1;
            }
        }
        image::Rgb(sum.map(|s| (s / n) as u8))
    })
}

fn next<T: Copy + PartialEq>(all: &[T], v: T) -> T {
    all[(all.iter().position(|x| *x == v).unwrap() + 1) % all.len()]
}

#[test]
fn every_scene_of_the_spec_is_read_back_exactly_at_64_px() {
    for s in SceneAttributes::all() {
        let d = detect(&render(&s, 64)).unwrap_or_else(|| panic!("nothing found: {s:?}"));
        assert_eq!(
            (d.colour, d.shape, d.size, d.position),
            (s.colour, s.shape, s.size, s.position),
            "{}: {d:?}",
            s.caption()
        );
    }
}

#[test]
fn noisy_blurred_and_larger_scenes_still_score_fully() {
    let all = SceneAttributes::all();
    let acc: ConditioningAccuracy = all
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut img = blur(&render(s, 64));
            add_noise(&mut img, 25, i as u64 + 1);
            score(&img, s)
        })
        .collect();
    assert_eq!(acc.all, all.len(), "{acc:?}");
    for s in all.iter().step_by(17) {
        assert!(score(&render(s, 256), s).all(), "{}", s.caption());
    }
}

#[test]
fn a_wrong_attribute_fails_only_that_attribute() {
    for s in SceneAttributes::all().iter().step_by(7) {
        let mut drawn = *s;
        drawn.colour = next(Colour::ALL, s.colour);
        let m = score(&render(&drawn, 64), s);
        assert_eq!(m, AttributeMatch { colour: false, shape: true, size: true, position: true });
        let mut drawn = *s;
        drawn.shape = next(Shape::ALL, s.shape);
        let m = score(&render(&drawn, 64), s);
        assert_eq!(m, AttributeMatch { colour: true, shape: false, size: true, position: true });
        let mut drawn = *s;
        drawn.size = next(Size::ALL, s.size);
        let m = score(&render(&drawn, 64), s);
        assert_eq!(m, AttributeMatch { colour: true, shape: true, size: false, position: true });
        let mut drawn = *s;
        drawn.position = next(Position::ALL, s.position);
        let m = score(&render(&drawn, 64), s);
        assert_eq!(m, AttributeMatch { colour: true, shape: true, size: true, position: false });
        // The background is not scored.
        let mut drawn = *s;
        drawn.background = next(Background::ALL, s.background);
        assert!(score(&render(&drawn, 64), s).all());
    }
}

#[test]
fn an_image_without_a_shape_matches_nothing() {
    let blank = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
    let s = SceneAttributes::all()[0];
    assert_eq!(detect(&blank), None);
    assert_eq!(score(&blank, &s), AttributeMatch::default());
}

#[test]
fn accuracy_is_reported_per_attribute() {
    let s = SceneAttributes::all()[3];
    let mut wrong_shape = s;
    wrong_shape.shape = next(Shape::ALL, s.shape);
    let acc: ConditioningAccuracy =
        [render(&s, 64), render(&wrong_shape, 64)].iter().map(|img| score(img, &s)).collect();
    let r = acc.rates();
    assert_eq!(
        (r.samples, r.colour, r.shape, r.size, r.position, r.all),
        (2, 1.0, 0.5, 1.0, 1.0, 0.5)
    );
}

#[test]
fn captions_round_trip_and_others_are_refused() {
    for s in SceneAttributes::all() {
        assert_eq!(SceneAttributes::from_caption(&s.caption()), Some(s));
    }
    let s = SceneAttributes {
        colour: Colour::Purple,
        shape: Shape::Triangle,
        size: Size::Large,
        position: Position::Center,
        background: Background::Gray,
    };
    assert_eq!(s.caption(), "a large purple triangle in the center on a gray background");
    assert_eq!(
        SceneAttributes::from_caption(
            "a small red circle in the top left corner on a white background"
        )
        .map(|s| s.position),
        Some(Position::TopLeft)
    );
    for bad in [
        "a large purple triangle in the center corner on a gray background",
        "a small red circle in the top left on a white background",
        "a huge red circle in the center on a white background",
        "a photo of a cat",
    ] {
        assert_eq!(SceneAttributes::from_caption(bad), None, "{bad}");
    }
}
