//! Sampled images on disk: one PNG per prompt, written as each batch of the cascade finishes (an
//! FID's 30,000 samples at 1024 pixels are ~94 GB as 8-bit pixels, so they are never all held),
//! a grid of the first ones, the prompts and a page that shows each image above its prompt.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainerError};

/// Images in the grid at most: the first ones. A grid of every sample of an FID run would not fit
/// in a PNG (30,000 tiles of 1024 pixels), nor be looked at.
pub const GRID_IMAGES: usize = 64;

/// Images in [-1, 1] as the 8-bit values a PNG stores, [B, 3, H, W] u8 on their device.
pub(super) fn quantize(images: &Tensor) -> Tensor {
    ((images.to_kind(Kind::Float).clamp(-1.0, 1.0) + 1.0) * 127.5).round().to_kind(Kind::Uint8)
}

/// NCHW images, [-1, 1] floats or already 8-bit, -> u8 NHWC bytes.
pub fn to_rgb8(images: &Tensor) -> Vec<u8> {
    let bytes =
        if images.kind() == Kind::Uint8 { images.shallow_clone() } else { quantize(images) };
    let bytes = bytes.permute([0, 2, 3, 1]).contiguous().to_device(Device::Cpu);
    Vec::<u8>::try_from(bytes.view([-1])).expect("u8 tensor to bytes")
}

/// Tiles `n` images of `side` (u8 RGB, NHWC) into a grid `cols` wide with a 2-pixel border.
pub fn grid(rgb: &[u8], n: usize, side: usize, cols: usize) -> (Vec<u8>, usize, usize) {
    let pad = 2;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let (w, h) = (cols * (side + pad) + pad, rows * (side + pad) + pad);
    let mut out = vec![255u8; w * h * 3];
    for i in 0..n {
        let (r, c) = (i / cols, i % cols);
        for y in 0..side {
            let src = (i * side * side + y * side) * 3;
            let dst = ((pad + r * (side + pad) + y) * w + pad + c * (side + pad)) * 3;
            out[dst..dst + side * 3].copy_from_slice(&rgb[src..src + side * 3]);
        }
    }
    (out, w, h)
}

fn write_png(path: &Path, rgb: &[u8], w: usize, h: usize) -> Result<()> {
    image::save_buffer(path, rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| TrainerError::Io { path: path.to_owned(), source: std::io::Error::other(e) })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError {
    let path = path.to_owned();
    move |source| TrainerError::Io { path, source }
}

/// The file name of sample `i`.
pub fn sample_name(i: usize) -> String {
    format!("{i:04}.png")
}

/// Removes what an earlier [`SampleWriter`] into `out` wrote (its `prompts.txt` marks it): its
/// numbered images, grid, prompts and page, and the `stage-N/` folders of an earlier cascade's
/// intermediate stages. Called before sampling into `out` again: otherwise a run with fewer
/// prompts, or fewer stages, would leave the old images among the new. Other files are left
/// alone.
pub fn clear_previous_samples(out: &Path) -> Result<()> {
    let prompts = out.join("prompts.txt");
    if !prompts.is_file() {
        return Ok(());
    }
    // The earlier run's images are the names it gave its prompts: 0000.png up to one per line.
    let earlier = std::fs::read_to_string(&prompts).map_err(io(&prompts))?.lines().count();
    for entry in std::fs::read_dir(out).map_err(io(out))? {
        let path = entry.map_err(io(out))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let numbered = name.strip_suffix(".png").is_some_and(|stem| {
            stem.parse::<usize>().is_ok_and(|i| i < earlier && sample_name(i) == name)
        });
        if numbered || ["grid.png", "prompts.txt", "index.html"].contains(&name.as_str()) {
            std::fs::remove_file(&path).map_err(io(&path))?;
        } else if name.starts_with("stage-") && path.join("prompts.txt").is_file() {
            clear_previous_samples(&path)?;
            // Only if nothing else was put there.
            let _ = std::fs::remove_dir(&path);
        }
    }
    Ok(())
}

/// Writes one folder of samples as they come: `<out>/<NNNN>.png` per image (encoded on all
/// cores), then at [`finish`](Self::finish) `<out>/grid.png` (the first [`GRID_IMAGES`]) and
/// `<out>/index.html` (each image above its prompt). `<out>/prompts.txt` (line i is the prompt of
/// image i) is written first, so that a run stopped halfway leaves a folder that
/// [`clear_previous_samples`] knows as its own.
pub struct SampleWriter {
    out: PathBuf,
    prompts: Vec<String>,
    written: usize,
    side: Option<usize>,
    /// The first images' pixels, for the grid.
    grid_rgb: Vec<u8>,
}

impl SampleWriter {
    /// A writer of one image per prompt of `prompts` into `out` (created if missing).
    pub fn create(out: &Path, prompts: &[String]) -> Result<Self> {
        // Line i of prompts.txt is image i's prompt.
        if let Some(i) = prompts.iter().position(|p| p.contains(['\n', '\r'])) {
            return Err(TrainerError::Samples {
                path: out.to_owned(),
                message: format!(
                    "prompt {i} ({:?}) holds a line break: prompts.txt keeps one prompt a line",
                    prompts[i]
                ),
            });
        }
        std::fs::create_dir_all(out).map_err(io(out))?;
        let prompts_path = out.join("prompts.txt");
        std::fs::write(&prompts_path, prompts.join("\n") + "\n").map_err(io(&prompts_path))?;
        Ok(Self {
            out: out.to_owned(),
            prompts: prompts.to_vec(),
            written: 0,
            side: None,
            grid_rgb: Vec::new(),
        })
    }

    fn error(&self, message: String) -> TrainerError {
        TrainerError::Samples { path: self.out.clone(), message }
    }

    /// Writes the next images (NCHW, 8-bit or [-1, 1] floats, on any device), in prompt order.
    pub fn push(&mut self, images: &Tensor) -> Result<()> {
        let (n, _, h, w) = images.size4().map_err(TrainerError::Torch)?;
        let (n, side) = (n as usize, h as usize);
        if h != w || self.side.is_some_and(|s| s != side) {
            return Err(
                self.error(format!("an image of {h}x{w} among {:?}-pixel squares", self.side))
            );
        }
        if self.written + n > self.prompts.len() {
            return Err(self.error(format!(
                "{} images for {} prompts",
                self.written + n,
                self.prompts.len()
            )));
        }
        self.side = Some(side);
        let rgb = to_rgb8(images);
        let each = side * side * 3;
        let first = self.written;
        rgb.par_chunks(each).enumerate().try_for_each(|(i, pixels)| {
            write_png(&self.out.join(sample_name(first + i)), pixels, side, side)
        })?;
        let for_grid = GRID_IMAGES.saturating_sub(first).min(n);
        self.grid_rgb.extend_from_slice(&rgb[..for_grid * each]);
        self.written += n;
        Ok(())
    }

    /// Writes the grid and the page once every prompt has its image. Returns the grid's path.
    pub fn finish(self) -> Result<PathBuf> {
        if self.written != self.prompts.len() {
            return Err(self.error(format!(
                "{} images for {} prompts",
                self.written,
                self.prompts.len()
            )));
        }
        let side = self.side.unwrap_or(0);
        let in_grid = self.written.min(GRID_IMAGES);
        let cols = (in_grid as f64).sqrt().ceil() as usize;
        let (g, w, h) = grid(&self.grid_rgb, in_grid, side, cols);
        let grid_path = self.out.join("grid.png");
        write_png(&grid_path, &g, w, h)?;
        let mut html = String::from("<!doctype html><meta charset=utf-8><title>imagen samples</title>\n<body style=\"font-family:sans-serif\">\n");
        for (i, prompt) in self.prompts.iter().enumerate() {
            let escaped = prompt.replace('&', "&amp;").replace('<', "&lt;");
            html.push_str(&format!(
                "<figure style=\"display:inline-block;width:160px\"><img src=\"{}\" width=128 height=128 style=\"image-rendering:pixelated\" loading=lazy><figcaption>{escaped}</figcaption></figure>\n",
                sample_name(i)
            ));
        }
        let html_path = self.out.join("index.html");
        std::fs::write(&html_path, html).map_err(io(&html_path))?;
        Ok(grid_path)
    }
}

/// Writes `images` (NCHW, one per prompt) as a [`SampleWriter`] would. Returns the grid's path.
pub fn write_samples(out: &Path, images: &Tensor, prompts: &[String]) -> Result<PathBuf> {
    let mut writer = SampleWriter::create(out, prompts)?;
    writer.push(images)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_row_major_with_borders() {
        // Two 1x1 images, red and blue, in a grid two wide.
        let rgb = [255, 0, 0, 0, 0, 255];
        let (g, w, h) = grid(&rgb, 2, 1, 2);
        assert_eq!((w, h), (8, 5));
        let px = |x: usize, y: usize| &g[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(px(2, 2), &[255, 0, 0]);
        assert_eq!(px(5, 2), &[0, 0, 255]);
        assert_eq!(px(0, 0), &[255, 255, 255]);
    }

    #[test]
    fn rgb8_maps_the_range_ends() {
        let t =
            Tensor::from_slice(&[-1.0f32, 0.0, 1.0, 2.0]).view([1, 1, 2, 2]).repeat([1, 3, 1, 1]);
        assert_eq!(&to_rgb8(&t)[..3], &[0, 0, 0]);
        assert_eq!(&to_rgb8(&t)[9..12], &[255, 255, 255]);
    }

    #[test]
    fn images_written_in_batches_are_the_images_written_at_once_and_the_grid_takes_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let n = GRID_IMAGES + 6;
        let prompts: Vec<String> = (0..n).map(|i| format!("prompt <{i}>")).collect();
        // Image i is filled with the value i.
        let images = Tensor::arange(n as i64, (Kind::Uint8, Device::Cpu))
            .view([n as i64, 1, 1, 1])
            .expand([n as i64, 3, 2, 2], false)
            .contiguous();
        let mut writer = SampleWriter::create(dir.path(), &prompts).unwrap();
        // Stopped halfway, the folder is already marked as samples.
        assert!(dir.path().join("prompts.txt").is_file());
        for part in images.split(5, 0) {
            writer.push(&part).unwrap();
        }
        let grid_path = writer.finish().unwrap();
        for i in [0, 5, n - 1] {
            let img = image::open(dir.path().join(sample_name(i))).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (2, 2));
            assert!(img.as_raw().iter().all(|&v| v as usize == i), "image {i}");
        }
        let g = image::open(&grid_path).unwrap().to_rgb8();
        let (_, w, h) = grid(&vec![0; GRID_IMAGES * 12], GRID_IMAGES, 2, 8);
        assert_eq!(g.dimensions(), (w as u32, h as u32), "a grid of the first {GRID_IMAGES}");
        // The last tile holds image GRID_IMAGES - 1.
        assert_eq!(g.get_pixel(w as u32 - 3, h as u32 - 3).0, [GRID_IMAGES as u8 - 1; 3]);
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert_eq!(html.matches("<figure").count(), n);
        assert!(html.contains("prompt &lt;69>"), "escaped");
        // More images than prompts, or too few at the end, is an error, not a short folder.
        let mut writer = SampleWriter::create(dir.path(), &prompts[..2]).unwrap();
        assert!(writer.push(&images.narrow(0, 0, 3)).is_err());
        writer.push(&images.narrow(0, 0, 1)).unwrap();
        assert!(writer.finish().unwrap_err().to_string().contains("1 images for 2 prompts"));
    }
}
