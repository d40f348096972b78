//! Parity with pytorch-fid 0.3.0: features, statistics and FID against the values its own code
//! computed on the same weights and images (scripts/make_fid_fixtures.py).

mod common;

use std::collections::BTreeMap;

use common::{expected, fixture_dir, fixture_weights, max_rel_err, state_dict_keys, tensor_f64};
use imagen_eval::fid::{folder_activations, side_statistics, DEFAULT_BATCH_SIZE};
use imagen_eval::{frechet_distance, load_fid_inception, ActivationStats, EvalError, FidDims};
use tch::{nn, Device, Tensor};

fn images(set: &str) -> std::path::PathBuf {
    fixture_dir().join("images").join(set)
}

/// Activations of the first `n` images of a set.
fn first_activations(dims: FidDims, set: &str, n: usize) -> Tensor {
    let (model, _vs) = load_fid_inception(fixture_weights(), dims, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for entry in imagen_eval::images::list_images(&images(set)).unwrap().images.iter().take(n) {
        std::fs::copy(entry, dir.path().join(entry.file_name().unwrap())).unwrap();
    }
    folder_activations(&model, dir.path(), DEFAULT_BATCH_SIZE, Device::Cpu).unwrap().activations
}

#[test]
fn parameter_names_and_shapes_are_pytorch_fids() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = imagen_eval::FidInception::new(vs.root(), FidDims::D2048);
    let ours: BTreeMap<String, Vec<i64>> =
        vs.variables().into_iter().map(|(name, t)| (name, t.size())).collect();
    let theirs: BTreeMap<String, Vec<i64>> = state_dict_keys()
        .into_iter()
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn smaller_dims_declare_only_the_blocks_they_need() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = imagen_eval::FidInception::new(vs.root(), FidDims::D64);
    let names = vs.variables();
    assert_eq!(names.len(), 3 * 5);
    assert!(names.keys().all(|n| n.starts_with("blocks.0.")));
}

#[test]
fn features_and_statistics_match_at_64_dims() {
    for set in ["a", "b"] {
        let acts = first_activations(FidDims::D64, set, 80);
        let (want, shape) = expected(&format!("feat64_{set}"));
        assert_eq!(acts.size(), [shape[0] as i64, shape[1] as i64]);
        let err = max_rel_err(&tensor_f64(&acts), &want);
        eprintln!("features 64 {set}: relative error {err:.1e}");
        assert!(err < 1e-4, "features 64 {set}: {err}");
        let stats = ActivationStats::from_activations(&acts).unwrap();
        let err = max_rel_err(&stats.mu, &expected(&format!("mu64_{set}")).0);
        assert!(err < 1e-4, "mu 64 {set}: {err}");
        let err = max_rel_err(&stats.sigma, &expected(&format!("sigma64_{set}")).0);
        assert!(err < 1e-4, "sigma 64 {set}: {err}");
    }
}

/// The deeper blocks on 10 images per set; for 768 and 2048 the fixture keeps 16 columns of
/// sigma and its trace (the FID itself is singular with 10 images, even in pytorch-fid).
#[test]
fn features_and_statistics_match_at_192_768_2048_dims() {
    for dims in [FidDims::D192, FidDims::D768, FidDims::D2048] {
        let d = dims.dims();
        for set in ["a", "b"] {
            let acts = first_activations(dims, set, 10);
            let err = max_rel_err(&tensor_f64(&acts), &expected(&format!("feat{d}_{set}")).0);
            eprintln!("features {d} {set}: relative error {err:.1e}");
            assert!(err < 1e-4, "features {d} {set}: {err}");
            let stats = ActivationStats::from_activations(&acts).unwrap();
            let err = max_rel_err(&stats.mu, &expected(&format!("mu{d}_{set}")).0);
            assert!(err < 1e-4, "mu {d} {set}: {err}");
            if d == 192 {
                let err = max_rel_err(&stats.sigma, &expected(&format!("sigma{d}_{set}")).0);
                assert!(err < 1e-4, "sigma {d} {set}: {err}");
            } else {
                let cols: Vec<f64> =
                    stats.sigma.chunks(d).flat_map(|row| row[..16].to_vec()).collect();
                let err = max_rel_err(&cols, &expected(&format!("sigma{d}_{set}_cols")).0);
                assert!(err < 1e-4, "sigma columns {d} {set}: {err}");
                let trace: f64 = (0..d).map(|i| stats.sigma[i * d + i]).sum();
                let want = expected(&format!("trace_sigma{d}_{set}")).0[0];
                assert!(((trace - want) / want).abs() < 1e-4, "trace {d} {set}: {trace} {want}");
            }
        }
    }
}

#[test]
fn fid_of_two_folders_matches_at_64_dims() {
    let (model, _vs) = load_fid_inception(fixture_weights(), FidDims::D64, Device::Cpu).unwrap();
    let a = side_statistics(&model, &images("a"), DEFAULT_BATCH_SIZE, Device::Cpu).unwrap();
    let b = side_statistics(&model, &images("b"), 7, Device::Cpu).unwrap();
    assert_eq!((a.images, a.skipped, a.unreadable), (Some(80), 1, 0));
    assert_eq!((b.images, b.skipped, b.unreadable), (Some(80), 0, 0));
    let got = imagen_eval::fid(&a, &b).unwrap();
    let want = expected("fid64").0[0];
    eprintln!("FID 64: {got} (pytorch-fid {want})");
    assert!(((got - want) / want).abs() < 1e-3, "FID {got} vs pytorch-fid {want}");

    // The same with B given as pytorch-fid's own --save-stats file.
    let b_npz =
        side_statistics(&model, &fixture_dir().join("stats64_b.npz"), 50, Device::Cpu).unwrap();
    assert_eq!(b_npz.images, None);
    let got = imagen_eval::fid(&a, &b_npz).unwrap();
    assert!(((got - want) / want).abs() < 1e-3, "FID against npz {got} vs {want}");
}

#[test]
fn frechet_distance_matches_scipy_sqrtm() {
    let stats = |i: usize| ActivationStats {
        mu: expected(&format!("fr_mu{i}")).0,
        sigma: expected(&format!("fr_sigma{i}")).0,
        dims: 40,
    };
    let got = frechet_distance(&stats(1), &stats(2)).unwrap();
    let want = expected("fr_fid").0[0];
    assert!(((got - want) / want).abs() < 1e-9, "{got} vs {want}");
    let zero = frechet_distance(&stats(1), &stats(1)).unwrap();
    assert!(zero.abs() < 1e-6 * want, "FID of a Gaussian with itself: {zero}");
}

#[test]
fn frechet_distance_of_gaussians_has_its_closed_form() {
    // Diagonal covariances commute: tr((S1 S2)^(1/2)) = sum sqrt(a_i b_i).
    let a = ActivationStats { mu: vec![0.0, 1.0], sigma: vec![4.0, 0.0, 0.0, 1.0], dims: 2 };
    let b = ActivationStats { mu: vec![3.0, 1.0], sigma: vec![1.0, 0.0, 0.0, 9.0], dims: 2 };
    let want = 9.0 + (4.0 + 1.0) + (1.0 + 9.0) - 2.0 * (2.0 + 3.0);
    let got = frechet_distance(&a, &b).unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    let c = ActivationStats { mu: vec![0.0; 3], sigma: vec![0.0; 9], dims: 3 };
    assert!(matches!(frechet_distance(&a, &c), Err(EvalError::Invalid(_))));
}

#[test]
fn npz_statistics_round_trip_and_read_numpys_files() {
    let theirs = ActivationStats::read_npz(&fixture_dir().join("stats64_a.npz")).unwrap();
    assert_eq!(theirs.dims, 64);
    assert_eq!(theirs.mu, expected("mu64_a").0);
    assert_eq!(theirs.sigma, expected("sigma64_a").0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.npz");
    theirs.write_npz(&path).unwrap();
    assert_eq!(ActivationStats::read_npz(&path).unwrap(), theirs);
    // Statistics with a NaN are a damaged file, named, not an FID of NaN.
    let mut damaged = theirs.clone();
    damaged.sigma[5] = f64::NAN;
    damaged.write_npz(&path).unwrap();
    let err = ActivationStats::read_npz(&path).unwrap_err().to_string();
    assert!(
        err.contains("stats.npz") && err.contains("sigma holds a value that is not finite"),
        "{err}"
    );
}

#[test]
fn missing_weights_say_how_to_export_them() {
    let err = load_fid_inception(
        std::path::Path::new("/nonexistent/w.safetensors"),
        FidDims::D64,
        Device::Cpu,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EvalError::MissingWeights { .. }));
    assert!(msg.contains("InceptionV3([3]).state_dict()") && msg.contains("save_file"), "{msg}");
}

#[test]
fn weights_of_the_wrong_shape_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let t = Tensor::zeros([32, 3, 5, 5], (tch::Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("blocks.0.0.conv.weight", &t)], &path).unwrap();
    let err = load_fid_inception(&path, FidDims::D64, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("blocks.0.0.conv.weight") && err.contains("[32, 3, 3, 3]"), "{err}");
}
