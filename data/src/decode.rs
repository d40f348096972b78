//! Compressed image -> RGB pixels of the stage's side: decode (JPEG at a DCT-reduced scale when the
//! target is much smaller, as Pillow's `draft` does), antialiased resize of the crop square, and an
//! optional horizontal flip.
//!
//! JPEG decoders, chosen by measurement (BENCHMARKS.md, "Data pipeline"): libjpeg-turbo's (through
//! `mozjpeg`, see `jpeg_scaled`) when a DCT scale of 1/2 or smaller applies, `zune-jpeg` at full
//! scale (its SIMD IDCT and colour conversion are faster). `turbojpeg` was not used: its -sys crate
//! needs either a system libturbojpeg or cmake + nasm, which a fresh machine lacks; `mozjpeg`
//! builds the same decoder from vendored C with the C compiler alone.

use std::cell::RefCell;
use std::io::Cursor;

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use serde::{Deserialize, Serialize};

use crate::jpeg_scaled::{self, LibjpegError, Scaled};
use crate::orientation;
use crate::stats::SkipReason;

/// Where the square crop sits along the image's longer axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    #[default]
    Center,
    Random,
}

/// Bounds on what is decoded at all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageLimits {
    /// Images whose shorter side is smaller are skipped.
    pub min_side: u32,
    /// Images with more pixels are skipped before decoding.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { min_side: 8, max_pixels: 100_000_000 }
    }
}

/// How one sample is turned into pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    pub side: u32,
    pub crop: CropMode,
    /// Position of a random crop along the free axis, in [0, 1].
    pub crop_at: f64,
    pub flip: bool,
    pub limits: ImageLimits,
    /// Use DCT-scaled JPEG decoding when the image is at least twice the target.
    pub dct_scaling: bool,
}

/// An image failed; the reason and a detail for the warning.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeFailure {
    pub reason: SkipReason,
    pub detail: String,
}

fn fail(reason: SkipReason, detail: impl ToString) -> DecodeFailure {
    DecodeFailure { reason, detail: detail.to_string() }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Jpeg,
    Png,
    Webp,
}

fn sniff(bytes: &[u8]) -> Option<Kind> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Kind::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Kind::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Kind::Webp)
    } else {
        None
    }
}

/// Decodes `bytes` and writes `side*side*3` RGB bytes into `out`.
pub fn decode_into(bytes: &[u8], t: &Transform, out: &mut [u8]) -> Result<(), DecodeFailure> {
    // A decoder that panics on malformed input costs one counted sample, not the run.
    let decoded = std::panic::catch_unwind(|| decode_rgb(bytes, t)).unwrap_or_else(|payload| {
        let detail = match payload.downcast::<LibjpegError>() {
            Ok(e) => format!("libjpeg: {}", e.0),
            Err(panic) => format!("decoder panicked: {}", crate::error::panic_message(&*panic)),
        };
        Err(fail(SkipReason::CorruptImage, detail))
    });
    let (w, h, rgb) = decoded?;
    resize_crop(rgb, w, h, t, out)?;
    if t.flip {
        let row = t.side as usize * 3;
        for line in out.chunks_exact_mut(row) {
            for x in 0..t.side as usize / 2 {
                let y = t.side as usize - 1 - x;
                for c in 0..3 {
                    line.swap(x * 3 + c, y * 3 + c);
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn check_size(w: u32, h: u32, limits: &ImageLimits) -> Result<(), DecodeFailure> {
    if w.min(h) < limits.min_side {
        return Err(fail(SkipReason::ImageTooSmall, format!("{w}x{h}")));
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(fail(SkipReason::ImageTooLarge, format!("{w}x{h}")));
    }
    Ok(())
}

/// Decodes to packed RGB, turned upright as its EXIF orientation says; returns (width, height,
/// pixels).
pub fn decode_rgb(bytes: &[u8], t: &Transform) -> Result<(u32, u32, Vec<u8>), DecodeFailure> {
    match sniff(bytes) {
        Some(Kind::Jpeg) => {
            let (w, h, rgb) = decode_jpeg(bytes, t)?;
            Ok(orientation::apply(w, h, rgb, orientation::of_jpeg(bytes)))
        }
        Some(kind) => {
            let format =
                if kind == Kind::Png { image::ImageFormat::Png } else { image::ImageFormat::WebP };
            let corrupt = |e: image::ImageError| fail(SkipReason::CorruptImage, e);
            let reader = image::ImageReader::with_format(Cursor::new(bytes), format);
            let (w, h) = reader.into_dimensions().map_err(corrupt)?;
            check_size(w, h, &t.limits)?;
            let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
            let mut limits = image::Limits::default();
            limits.max_alloc = Some(t.limits.max_pixels.saturating_mul(8));
            reader.limits(limits);
            let mut decoder = reader.into_decoder().map_err(corrupt)?;
            let upright = image::ImageDecoder::orientation(&mut decoder)
                .unwrap_or(image::metadata::Orientation::NoTransforms);
            let img = image::DynamicImage::from_decoder(decoder).map_err(corrupt)?.into_rgb8();
            Ok(orientation::apply(w, h, img.into_raw(), upright))
        }
        None => Err(fail(SkipReason::NotAnImage, "not a JPEG, PNG or WebP file")),
    }
}

fn decode_jpeg(bytes: &[u8], t: &Transform) -> Result<(u32, u32, Vec<u8>), DecodeFailure> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let check = |w: u32, h: u32| check_size(w, h, &t.limits);
    if t.dct_scaling {
        if let Scaled::Decoded(w, h, rgb) = jpeg_scaled::decode(bytes, t.side, check)? {
            return Ok((w, h, rgb));
        }
    }
    let corrupt = |e: &dyn std::fmt::Display| fail(SkipReason::CorruptImage, e);
    // zune-jpeg fills what a truncated file lacks with grey and succeeds; its strict mode would
    // also refuse the stray bytes between markers that libjpeg (and so PIL) decodes through with
    // a warning. So truncation is checked on its own, as PIL refuses it.
    if !ends_after_its_last_scan(bytes) {
        return Err(corrupt(&"truncated: no end-of-image marker after the last scan"));
    }
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(u16::MAX as usize)
        .set_max_height(u16::MAX as usize);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    dec.decode_headers().map_err(|e| corrupt(&e))?;
    let (w, h) = dec.dimensions().ok_or_else(|| corrupt(&"no frame header"))?;
    let (w, h) = (w as u32, h as u32);
    check(w, h)?;
    let pixels = dec.decode().map_err(|e| corrupt(&e))?;
    if pixels.len() != w as usize * h as usize * 3 {
        return Err(corrupt(&"decoded size does not match the header"));
    }
    Ok((w, h, pixels))
}

/// Whether a JPEG's end-of-image marker (FF D9) follows its last start-of-scan (FF DA). Neither
/// can occur inside entropy-coded data (an FF there is stuffed or a restart marker), and an
/// embedded EXIF thumbnail's markers come before the image's own scan: a file cut anywhere in
/// or after its scan data lacks the final FF D9.
fn ends_after_its_last_scan(bytes: &[u8]) -> bool {
    // From the end, the first of the two met decides; a whole file meets FF D9 at once. No scan
    // at all: the decoder's own error names what is missing.
    let last = bytes.windows(2).rev().find(|w| w[0] == 0xFF && matches!(w[1], 0xD9 | 0xDA));
    last.is_none_or(|w| w[1] == 0xD9)
}

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resizes the crop square of `rgb` (the whole shorter side) to `side` x `side` into `out`, with a
/// bilinear convolution whose support widens with the scale (antialiased, as Pillow's resize).
fn resize_crop(
    rgb: Vec<u8>,
    w: u32,
    h: u32,
    t: &Transform,
    out: &mut [u8],
) -> Result<(), DecodeFailure> {
    let need = w as usize * h as usize * 3;
    if rgb.len() < need {
        return Err(fail(SkipReason::CorruptImage, "short pixel buffer"));
    }
    let short = w.min(h) as f64;
    let at = match t.crop {
        CropMode::Center => 0.5,
        CropMode::Random => t.crop_at.clamp(0.0, 1.0),
    };
    let (left, top) = ((w as f64 - short) * at, (h as f64 - short) * at);
    // The typed API: only the RGB8 kernels are compiled into this crate (the untyped `resize`
    // instantiates every pixel type's, which made this crate the slowest of the build to compile).
    let src = TypedImageRef::<U8x3>::from_buffer(w, h, &rgb)
        .map_err(|e| fail(SkipReason::CorruptImage, e))?;
    let mut dst = TypedImage::<U8x3>::from_buffer(t.side, t.side, out)
        .map_err(|e| fail(SkipReason::CorruptImage, e))?;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(left, top, short, short);
    RESIZER
        .with(|r| r.borrow_mut().resize_typed(&src, &mut dst, &options))
        .map_err(|e| fail(SkipReason::CorruptImage, e))
}
