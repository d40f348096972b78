//! Samples of several runs for the same prompts in one image: a row per prompt, a column per
//! run, run names above the columns and each row's prompt to its right.

use embedded_graphics::text::Alignment;
use image::imageops::{resize, FilterType};
use image::RgbImage;

use super::canvas::Canvas;

/// Images are shown at least this many pixels wide (nearest-neighbour upscaling).
const MIN_CELL: u32 = 96;
const PAD: u32 = 4;
const HEADER: u32 = 20;
/// Room for the prompt text right of the images (characters of the 6x10 font).
const PROMPT_CHARS: usize = 60;

/// `columns[c][r]` is run c's sample for prompt r; all images of one size.
pub fn side_by_side(labels: &[&str], columns: &[Vec<RgbImage>], prompts: &[String]) -> Canvas {
    let rows = prompts.len();
    let side = columns.first().and_then(|c| c.first()).map_or(MIN_CELL, |i| i.width());
    let scale = MIN_CELL.div_ceil(side).max(1);
    let cell = side * scale;
    let images_w = PAD + columns.len() as u32 * (cell + PAD);
    let width = images_w + 8 + 6 * PROMPT_CHARS as u32;
    let height = HEADER + PAD + rows as u32 * (cell + PAD);
    let mut c = Canvas::new(width, height);
    for (col, label) in labels.iter().enumerate() {
        let x = PAD + col as u32 * (cell + PAD) + cell / 2;
        c.text(label, x as i32, 14, Alignment::Center);
    }
    for (row, prompt) in prompts.iter().enumerate() {
        let y = HEADER + PAD + row as u32 * (cell + PAD);
        for (col, images) in columns.iter().enumerate() {
            if let Some(img) = images.get(row) {
                let big = resize(img, cell, cell, FilterType::Nearest);
                c.paste(&big, PAD + col as u32 * (cell + PAD), y);
            }
        }
        let mut text: String = format!("{}. {prompt}", row + 1);
        if text.chars().count() > PROMPT_CHARS {
            text = text.chars().take(PROMPT_CHARS - 3).collect::<String>() + "...";
        }
        c.text(&text, (images_w + 8) as i32, (y + cell / 2 + 3) as i32, Alignment::Left);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_prompt_and_a_column_per_run() {
        let red = RgbImage::from_pixel(32, 32, image::Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(32, 32, image::Rgb([0, 0, 255]));
        let prompts = vec!["one".to_owned(), "two".to_owned()];
        let c = side_by_side(
            &["a", "b"],
            &[vec![red.clone(), red], vec![blue.clone(), blue]],
            &prompts,
        );
        // 32 px images shown at 96 px: column a red, column b blue, in both rows.
        let cell = 96;
        for row in 0..2u32 {
            let y = HEADER + PAD + row * (cell + PAD) + cell / 2;
            assert_eq!(c.0.get_pixel(PAD + cell / 2, y).0, [255, 0, 0]);
            assert_eq!(c.0.get_pixel(2 * PAD + cell + cell / 2, y).0, [0, 0, 255]);
        }
        assert_eq!(c.0.height(), HEADER + PAD + 2 * (cell + PAD));
    }
}
