//! An RGB image that embedded-graphics draws on: lines, rectangles and text in its built-in
//! bitmap fonts, so report figures need no system fonts.

use embedded_graphics::mono_font::ascii::FONT_6X10;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Text};
use image::RgbImage;

pub const BLACK: [u8; 3] = [0, 0, 0];
pub const GREY: [u8; 3] = [200, 200, 200];

pub struct Canvas(pub RgbImage);

fn rgb(c: [u8; 3]) -> Rgb888 {
    Rgb888::new(c[0], c[1], c[2])
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Self(RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255])))
    }

    pub fn line(&mut self, from: (i32, i32), to: (i32, i32), colour: [u8; 3], width: u32) {
        let style = PrimitiveStyle::with_stroke(rgb(colour), width);
        let _ = Line::new(Point::new(from.0, from.1), Point::new(to.0, to.1))
            .into_styled(style)
            .draw(self);
    }

    pub fn fill(&mut self, x: i32, y: i32, w: u32, h: u32, colour: [u8; 3]) {
        let _ = Rectangle::new(Point::new(x, y), Size::new(w, h))
            .into_styled(PrimitiveStyle::with_fill(rgb(colour)))
            .draw(self);
    }

    /// Text in the 6x10 font with its baseline at y, aligned on x (left, centre or right).
    pub fn text(&mut self, s: &str, x: i32, y: i32, align: Alignment) {
        let style = MonoTextStyle::new(&FONT_6X10, rgb(BLACK));
        let _ = Text::with_alignment(s, Point::new(x, y), style, align).draw(self);
    }

    /// Copies `img` with its top-left corner at (x, y).
    pub fn paste(&mut self, img: &RgbImage, x: u32, y: u32) {
        for (px, py, p) in img.enumerate_pixels() {
            if x + px < self.0.width() && y + py < self.0.height() {
                self.0.put_pixel(x + px, y + py, *p);
            }
        }
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        let (w, h) = self.0.dimensions();
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < w && (p.y as u32) < h {
                self.0.put_pixel(p.x as u32, p.y as u32, image::Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }
}
