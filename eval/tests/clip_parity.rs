//! CLIP against transformers on a tiny random `CLIPModel` (scripts/make_clip_fixtures.py):
//! tokenizer ids, text and image embeddings, preprocessing, and the cosine behind the score.

mod common;

use std::path::PathBuf;

use common::{max_rel_err, npz_array, tensor_f64};
use imagen_eval::clip::{cosine, ClipPreprocess, ClipScorer};
use tch::{Device, Kind, Tensor};

const CAPTIONS: [&str; 3] = [
    "a small red circle in the top left corner on a white background",
    "a large blue square in the center on a black background",
    "a photo of a cat, 2 dogs & a bird!",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip")
}

fn expected(name: &str) -> (Vec<f64>, Vec<usize>) {
    npz_array(&dir().join("expected.npz"), name)
}

fn expected_tensor(name: &str) -> Tensor {
    let (v, shape) = expected(name);
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&v).view(shape.as_slice()).to_kind(Kind::Float)
}

fn image(i: usize) -> image::RgbImage {
    image::open(dir().join(format!("image{i}.png"))).unwrap().to_rgb8()
}

#[test]
fn tokens_and_text_embeddings_match_transformers() {
    let clip = ClipScorer::load(&dir(), Device::Cpu).unwrap();
    for (j, caption) in CAPTIONS.iter().enumerate() {
        let ids = clip.token_ids(caption).unwrap();
        let want: Vec<i64> = expected(&format!("ids{j}")).0.iter().map(|&x| x as i64).collect();
        assert_eq!(ids, want, "{caption}");
        let got = tensor_f64(&clip.model().text_features(&ids));
        let err = max_rel_err(&got, &expected(&format!("text_embeds{j}")).0);
        assert!(err < 1e-4, "text embedding {j}: {err}");
    }
}

#[test]
fn image_embeddings_match_transformers_on_its_pixel_values() {
    let clip = ClipScorer::load(&dir(), Device::Cpu).unwrap();
    for i in 0..3 {
        let got =
            tensor_f64(&clip.model().image_features(&expected_tensor(&format!("pixel_values{i}"))));
        let err = max_rel_err(&got, &expected(&format!("image_embeds{i}")).0);
        assert!(err < 1e-4, "image embedding {i}: {err}");
    }
}

/// Resizing is the `image` crate's bicubic, not PIL's: within about 2/255 per pixel, not bit-exact.
#[test]
fn preprocessing_and_cosines_are_close_to_transformers() {
    let clip = ClipScorer::load(&dir(), Device::Cpu).unwrap();
    for i in 0..3 {
        let ours = clip.preprocess().pixel_values(&image(i));
        let theirs = expected_tensor(&format!("pixel_values{i}"));
        let diff = (&ours - &theirs).abs();
        let (max, mean) = (diff.max().double_value(&[]), diff.mean(Kind::Float).double_value(&[]));
        eprintln!("image {i}: pixel values max |diff| {max:.4}, mean {mean:.5}");
        assert!(max < 0.03 && mean < 0.01, "image {i}: max {max} mean {mean}");
        for (j, caption) in CAPTIONS.iter().enumerate() {
            let got = clip.cosine(&image(i), caption).unwrap();
            let want = expected(&format!("cos{i}{j}")).0[0];
            assert!((got - want).abs() < 0.01, "cos image {i} caption {j}: {got} vs {want}");
            let exact = cosine(
                &clip.model().image_features(&theirs),
                &clip.model().text_features(&clip.token_ids(caption).unwrap()),
            );
            assert!((exact - want).abs() < 1e-5, "cos on transformers' pixels: {exact} vs {want}");
            let score = clip.score(&image(i), caption).unwrap();
            assert!((score - 100.0 * got.max(0.0)).abs() < 1e-12);
        }
    }
}

/// Other `preprocessor_config.json`s (the fixture script's variants) on the same images: an exact
/// height x width resize, a crop wider and taller than the resized image (zero padding),
/// bilinear resampling, no crop, and no normalising with another rescale factor.
#[test]
fn preprocessing_follows_the_config_as_transformers_does() {
    for variant in ["height_width", "pad", "bilinear", "no_crop", "no_normalize"] {
        let json = std::fs::read(dir().join(format!("preprocessor_{variant}.json"))).unwrap();
        let pre: ClipPreprocess = serde_json::from_slice(&json).unwrap();
        for i in 0..3 {
            let ours = pre.pixel_values(&image(i));
            let theirs = expected_tensor(&format!("pixel_values_{variant}{i}"));
            assert_eq!(ours.size(), theirs.size(), "{variant} image {i}");
            let diff = (&ours - &theirs).abs();
            let (max, mean) =
                (diff.max().double_value(&[]), diff.mean(Kind::Float).double_value(&[]));
            eprintln!("{variant} image {i}: pixel values max |diff| {max:.4}, mean {mean:.5}");
            assert!(max < 0.05 && mean < 0.01, "{variant} image {i}: max {max} mean {mean}");
        }
    }
    let err = serde_json::from_str::<ClipPreprocess>(r#"{"resample": 4}"#).unwrap_err();
    assert!(err.to_string().contains("resample 4"), "{err}");
}

#[test]
fn a_missing_clip_file_says_what_is_needed() {
    let empty = tempfile::tempdir().unwrap();
    let err = ClipScorer::load(empty.path(), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("huggingface-cli download"), "{err}");
}
