//! Image folders as pytorch-fid reads them: the files directly in the folder whose extension is
//! an image's, in sorted order, decoded to RGB.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::{EvalError, Result};

/// pytorch-fid's `IMAGE_EXTENSIONS`. Matched case-insensitively (pytorch-fid's glob is
/// case-sensitive on Linux and would drop `IMG.PNG`).
pub const IMAGE_EXTENSIONS: [&str; 9] =
    ["bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"];

/// The files of one folder, split into images and the rest.
#[derive(Debug, Clone, Default)]
pub struct ImageFolder {
    /// Files with an image extension, sorted by path.
    pub images: Vec<PathBuf>,
    /// Other files, not read.
    pub skipped: Vec<PathBuf>,
}

/// The mosaic `imagen sample` writes beside its numbered samples (with their `prompts.txt`).
const SAMPLES_GRID: &str = "grid.png";

/// Lists `dir` (not recursively; sub-folders are ignored, as pytorch-fid does). In a folder of
/// `imagen sample`'s output (it has `prompts.txt`), `grid.png` is the mosaic of the samples, not
/// one of them, and is left out.
pub fn list_images(dir: &Path) -> Result<ImageFolder> {
    let io = |source| EvalError::Io { path: dir.to_path_buf(), source };
    let samples_folder = dir.join("prompts.txt").is_file();
    let mut folder = ImageFolder::default();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if !path.is_file() {
            continue;
        }
        let mosaic = samples_folder && path.file_name().is_some_and(|n| n == SAMPLES_GRID);
        if is_image_path(&path) && !mosaic {
            folder.images.push(path);
        } else {
            folder.skipped.push(path);
        }
    }
    folder.images.sort();
    folder.skipped.sort();
    Ok(folder)
}

/// Whether the extension is one of [`IMAGE_EXTENSIONS`].
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes an image to RGB (`PIL.Image.open(path).convert("RGB")`).
pub fn load_rgb(path: &Path) -> Result<image::RgbImage> {
    let img = image::ImageReader::open(path)
        .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?
        .with_guessed_format()
        .map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?
        .decode()
        .map_err(|source| EvalError::Image { path: path.to_path_buf(), source })?;
    Ok(img.into_rgb8())
}

/// Stacks RGB images of one size into `[B, 3, H, W]` f32 in [0, 1], exactly as torchvision's
/// `ToTensor` does (u8 to float, divided by 255).
pub fn to_tensor(images: &[image::RgbImage]) -> Tensor {
    let (w, h) = images[0].dimensions();
    let data: Vec<u8> = images.iter().flat_map(|img| img.as_raw().iter().copied()).collect();
    Tensor::from_slice(&data)
        .view([images.len() as i64, h as i64, w as i64, 3])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0
}

#[cfg(test)]
mod tests {
    use super::list_images;

    #[test]
    fn the_grid_of_a_samples_folder_is_not_a_sample() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["0000.png", "0001.png", "grid.png", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names = |dir: &std::path::Path| -> Vec<String> {
            let folder = list_images(dir).unwrap();
            folder.images.iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect()
        };
        // Any folder: every image file counts, as in pytorch-fid.
        assert_eq!(names(dir.path()), ["0000.png", "0001.png", "grid.png"]);
        // `imagen sample`'s output (its prompts.txt beside the images): the mosaic is left out.
        std::fs::write(dir.path().join("prompts.txt"), "a\nb\n").unwrap();
        assert_eq!(names(dir.path()), ["0000.png", "0001.png"]);
        assert!(list_images(dir.path()).unwrap().skipped.iter().any(|p| p.ends_with("grid.png")));
    }
}
