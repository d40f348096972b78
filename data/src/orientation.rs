//! EXIF orientation: a camera's JPEG (or a PNG or WebP carrying EXIF) stores its pixels as the
//! sensor read them and says in its Orientation tag (0x0112) how to turn them upright, as every
//! viewer does. Shards kept as downloaded (img2dataset's `resize_mode no`) hold such images; read
//! without the tag, a portrait photo trains as a sideways one, and its crop is taken along the
//! wrong axis.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};

/// The orientation a JPEG's EXIF segment (APP1, `Exif\0\0` then a TIFF block) records, read from
/// the segments before the first scan; `NoTransforms` when there is none or it cannot be read.
pub fn of_jpeg(bytes: &[u8]) -> Orientation {
    let mut at = 2; // past SOI
    while at + 4 <= bytes.len() && bytes[at] == 0xFF {
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1; // a fill byte before a marker
            continue;
        }
        if matches!(marker, 0xDA | 0xD9) {
            break; // the scan (or the end): EXIF comes before it
        }
        let len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let Some(segment) = bytes.get(at + 4..at + 2 + len) else { break };
        if marker == 0xE1 {
            if let Some(tiff) = segment.strip_prefix(b"Exif\0\0") {
                return Orientation::from_exif_chunk(tiff).unwrap_or(Orientation::NoTransforms);
            }
        }
        at += 2 + len;
    }
    Orientation::NoTransforms
}

/// `rgb` (`w` x `h`, packed RGB) turned upright: the new width, height and pixels.
pub fn apply(w: u32, h: u32, rgb: Vec<u8>, orientation: Orientation) -> (u32, u32, Vec<u8>) {
    // A short buffer stays as it is, for the resize to refuse.
    if orientation == Orientation::NoTransforms || rgb.len() < w as usize * h as usize * 3 {
        return (w, h, rgb);
    }
    let image = RgbImage::from_raw(w, h, rgb).expect("the length was checked");
    let mut image = DynamicImage::ImageRgb8(image);
    image.apply_orientation(orientation);
    let image = image.into_rgb8();
    (image.width(), image.height(), image.into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_rgb, CropMode, ImageLimits, Transform};

    /// A 32 x 16 JPEG, red on its left half and blue on its right, with an EXIF segment saying
    /// `orientation` (big-endian TIFF, one IFD entry) when given.
    fn jpeg(orientation: Option<u8>) -> Vec<u8> {
        let image = RgbImage::from_fn(32, 16, |x, _| {
            image::Rgb(if x < 16 { [255, 0, 0] } else { [0, 0, 255] })
        });
        let mut plain = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 95)
            .encode_image(&image)
            .unwrap();
        let Some(o) = orientation else { return plain };
        let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, o, 0, 0, 0, 0, 0, 0]);
        let segment = [b"Exif\0\0".as_slice(), &tiff].concat();
        let len = (segment.len() + 2) as u16;
        [&plain[..2], &[0xFF, 0xE1], &len.to_be_bytes(), &segment, &plain[2..]].concat()
    }

    fn pixel(w: u32, rgb: &[u8], x: u32, y: u32) -> [u8; 3] {
        let i = (y * w + x) as usize * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    }

    #[test]
    fn a_jpeg_is_turned_as_its_exif_orientation_says() {
        let t = Transform {
            side: 8,
            crop: CropMode::Center,
            crop_at: 0.5,
            flip: false,
            limits: ImageLimits::default(),
            dct_scaling: false,
        };
        assert_eq!(of_jpeg(&jpeg(None)), Orientation::NoTransforms);
        assert_eq!(of_jpeg(&jpeg(Some(1))), Orientation::NoTransforms);
        let (w, h, rgb) = decode_rgb(&jpeg(Some(1)), &t).unwrap();
        assert_eq!((w, h), (32, 16));
        // 6: the stored pixels are turned 90 degrees clockwise to stand upright, so the red left
        // half comes to the top.
        assert_eq!(of_jpeg(&jpeg(Some(6))), Orientation::Rotate90);
        let (w, h, rgb6) = decode_rgb(&jpeg(Some(6)), &t).unwrap();
        assert_eq!((w, h), (16, 32));
        let red = |p: [u8; 3]| p[0] > 200 && p[2] < 60;
        let blue = |p: [u8; 3]| p[2] > 200 && p[0] < 60;
        assert!(red(pixel(w, &rgb6, 8, 4)) && blue(pixel(w, &rgb6, 8, 28)));
        assert!(red(pixel(32, &rgb, 4, 8)) && blue(pixel(32, &rgb, 28, 8)));
        // At a reduced DCT scale too.
        let scaled = Transform { dct_scaling: true, side: 4, ..t };
        let (w, h, _) = decode_rgb(&jpeg(Some(6)), &scaled).unwrap();
        assert!(h == 2 * w && w < 16, "{w}x{h}");
        // A damaged EXIF segment leaves the image as stored.
        let mut damaged = jpeg(Some(6));
        damaged[12..16].copy_from_slice(b"XXXX");
        assert_eq!(decode_rgb(&damaged, &t).unwrap().0, 32);
    }
}
