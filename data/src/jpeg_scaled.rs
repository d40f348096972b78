//! DCT-scaled JPEG decoding (1/2, 1/4, 1/8 of the size) with libjpeg-turbo's decoder, as vendored
//! and statically built by `mozjpeg`: what Pillow's `draft` does. At a reduced scale most of the
//! work left is entropy decoding, where libjpeg-turbo's Huffman decoder beats the pure-Rust
//! `jpeg-decoder`'s (BENCHMARKS.md, "Data pipeline"); no nasm is needed (its SIMD would only speed
//! the colour conversion and IDCT, a small share at these scales).
//!
//! libjpeg reports a fatal error by calling `error_exit`, which here unwinds back to the caller's
//! `catch_unwind` with the library's message; it reports a truncated file as a warning and pads
//! the image with grey, which here fails the image like any other corruption.

use std::cell::Cell;
use std::os::raw::c_int;

use mozjpeg::{ColorSpace, Decompress};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error};

use crate::decode::DecodeFailure;
use crate::stats::SkipReason;

thread_local! {
    /// Set by a "premature end of data" warning during the current decode on this thread.
    static PREMATURE_END: Cell<bool> = const { Cell::new(false) };
}

/// Why libjpeg gave up, carried by the unwinding error exit.
pub struct LibjpegError(pub String);

unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let mut buffer = [0u8; 80];
    // SAFETY: libjpeg calls this with its own valid error manager installed; format_message
    // writes a NUL-terminated string of at most 80 bytes (JMSG_LENGTH_MAX) into its buffer, which
    // the binding declares shared: call it through the type that says it writes.
    unsafe {
        if let Some(format) = (*cinfo.err).format_message {
            type Writes = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &mut [u8; 80]);
            let format = std::mem::transmute::<
                unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]),
                Writes,
            >(format);
            format(cinfo, &mut buffer);
        }
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let message = String::from_utf8_lossy(&buffer[..end]).into_owned();
    // resume_unwind, not panic!: no panic hook prints a damaged sample to stderr.
    std::panic::resume_unwind(Box::new(LibjpegError(message)));
}

unsafe extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // SAFETY: as above, `err` is the manager this decode installed.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == mozjpeg_sys::JWRN_JPEG_EOF as c_int {
        PREMATURE_END.with(|p| p.set(true));
    }
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of a zeroed manager.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

/// What [`decode`] made of a JPEG.
pub enum Scaled {
    /// Decoded at a reduced scale: (width, height, packed RGB).
    Decoded(u32, u32, Vec<u8>),
    /// Left to the full-scale decoder: the image is not at least twice `side`, or its colour
    /// space is CMYK or YCCK.
    Full,
}

/// Decodes at the smallest of 1/8, 1/4 and 1/2 of the size whose shorter side still covers
/// `side`, after `check(width, height)` accepts the header. Call inside `catch_unwind`: a fatal
/// libjpeg error unwinds with a [`LibjpegError`].
pub fn decode(
    bytes: &[u8],
    side: u32,
    check: impl Fn(u32, u32) -> Result<(), DecodeFailure>,
) -> Result<Scaled, DecodeFailure> {
    let corrupt = |e: std::io::Error| DecodeFailure {
        reason: SkipReason::CorruptImage,
        detail: format!("JPEG: {e}"),
    };
    PREMATURE_END.with(|p| p.set(false));
    let mut dec = Decompress::with_err(error_manager()).from_mem(bytes).map_err(corrupt)?;
    let (w, h) = (dec.width() as u32, dec.height() as u32);
    check(w, h)?;
    let short = w.min(h) as u64;
    let Some(numerator) = [1u8, 2, 4].into_iter().find(|&n| short * n as u64 >= 8 * side as u64)
    else {
        return Ok(Scaled::Full);
    };
    let rgb_source = matches!(
        dec.color_space(),
        ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB | ColorSpace::JCS_GRAYSCALE
    );
    if !rgb_source {
        return Ok(Scaled::Full);
    }
    dec.scale(numerator);
    let mut started = dec.rgb().map_err(corrupt)?;
    let (sw, sh) = (started.width() as u32, started.height() as u32);
    let pixels = started.read_scanlines::<u8>().map_err(corrupt)?;
    started.finish().map_err(corrupt)?;
    let fail = |detail: &str| DecodeFailure {
        reason: SkipReason::CorruptImage,
        detail: detail.to_string(),
    };
    if PREMATURE_END.with(|p| p.get()) {
        return Err(fail("truncated JPEG (premature end of data)"));
    }
    if pixels.len() != sw as usize * sh as usize * 3 {
        return Err(fail("decoded size does not match the header"));
    }
    Ok(Scaled::Decoded(sw, sh, pixels))
}
