//! Fixture helpers shared by the FID tests: the hashed Inception weights of
//! scripts/make_fid_fixtures.py, assembled into a safetensors file once per test process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tch::Tensor;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fid")
}

/// The state dict's (name, shape) in pytorch-fid's order, as the fixture script recorded it.
pub fn state_dict_keys() -> Vec<(String, Vec<i64>)> {
    let text = std::fs::read_to_string(fixture_dir().join("state_dict_keys.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xCBF2_9CE4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
}

fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `hashed_conv_weight` of scripts/make_fid_fixtures.py, bit for bit.
pub fn hashed_conv_weight(name: &str, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let fan_in: i64 = shape[1..].iter().product();
    let scale = (3.0f64 / fan_in as f64).sqrt() as f32;
    let seed = fnv1a64(name.as_bytes());
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let u24 = (splitmix64(seed.wrapping_add(i)) >> 40) as f32;
            (u24 * 2f32.powi(-23) - 1.0) * scale
        })
        .collect();
    Tensor::from_slice(&values).view(shape)
}

/// A safetensors file holding the full fixture state dict (hashed convolutions plus the
/// calibrated batch norms), with pytorch-fid's names; written once per test process.
pub fn fixture_weights() -> &'static Path {
    static WEIGHTS: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = WEIGHTS.get_or_init(|| {
        let bn: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(fixture_dir().join("bn.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        let tensors: Vec<(String, Tensor)> = state_dict_keys()
            .into_iter()
            .map(|(name, shape)| {
                let t = if name.ends_with("conv.weight") {
                    hashed_conv_weight(&name, &shape)
                } else {
                    bn[&name].shallow_clone()
                };
                (name, t)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fid_inception_fixture.safetensors");
        Tensor::write_safetensors(&tensors, &path).unwrap();
        (dir, path)
    });
    path
}

/// Reads `name` from the FID fixture's expected.npz as f64 values and shape.
pub fn expected(name: &str) -> (Vec<f64>, Vec<usize>) {
    npz_array(&fixture_dir().join("expected.npz"), name)
}

/// Reads array `name` of an .npz that numpy wrote (f64, f32 or i64) as f64 values and shape.
pub fn npz_array(path: &Path, name: &str) -> (Vec<f64>, Vec<usize>) {
    use ndarray_npy::NpzReader;
    let file = std::fs::File::open(path).unwrap();
    let mut npz = NpzReader::new(file).unwrap();
    let entry = format!("{name}.npy");
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, ndarray::IxDyn>(&entry) {
        return (a.iter().copied().collect(), a.shape().to_vec());
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i64>, ndarray::IxDyn>(&entry) {
        return (a.iter().map(|&x| x as f64).collect(), a.shape().to_vec());
    }
    let a = npz.by_name::<ndarray::OwnedRepr<f32>, ndarray::IxDyn>(&entry).unwrap();
    (a.iter().map(|&x| f64::from(x)).collect(), a.shape().to_vec())
}

/// Largest elementwise |got - want| divided by the largest |want|: a relative error that a few
/// near-zero entries cannot inflate.
pub fn max_rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let err = got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    err / scale
}

pub fn tensor_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap()
}
