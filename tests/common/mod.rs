//! Helpers shared by the integration tests (each test binary uses some of them).
#![allow(dead_code)]

use fhe_nn::datasets::digits;
pub use fhe_nn::datasets::Seed;
use fhe_nn::tensors::TensorFile;
use fhe_nn::train::{train, TrainConfig};
use fhe_nn::{fhe_net, QuantModel};
use ndarray::Array2;

fhe_net! {
    /// A tiny network on 2×2-pooled, binarized digits: every lookup fits an exact table.
    pub struct Tiny<QuantIdentity(1, unsigned), QuantLinear(16, 8, w = 2), ReLU,
                    QuantIdentity(2, unsigned), QuantLinear(8, 10, w = 2)>
}

/// The 8×8 images averaged over 2×2 blocks: 16 features.
pub fn pooled(images: &Array2<f64>) -> Array2<f64> {
    Array2::from_shape_fn((images.nrows(), 16), |(i, f)| {
        let (r, c) = (2 * (f / 4), 2 * (f % 4));
        [(r, c), (r, c + 1), (r + 1, c), (r + 1, c + 1)]
            .iter()
            .map(|&(y, x)| images[(i, 8 * y + x)])
            .sum::<f64>()
            / 4.0
    })
}

/// The shipped Rust-trained seed model, read from its file
/// (`fhe-nn/data/digits_seed.safetensors`).
pub fn shipped_seed() -> QuantModel {
    QuantModel::load(Seed::architecture(), shipped_seed_path()).unwrap()
}

/// The file of the shipped seed weights.
pub fn shipped_seed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fhe-nn/data/digits_seed.safetensors")
}

/// The tiny network's weights, trained on the digits, and its pooled test images.
pub fn tiny_weights() -> (TensorFile, Array2<f64>) {
    let data = digits().unwrap();
    let x = pooled(&data.train.images);
    let labels = data.train.labels.to_vec();
    let config = TrainConfig {
        epochs: 15,
        batch_size: 32,
        learning_rate: 0.02,
        seed: 3,
        batch_norm: false,
        joins_at_fork_scale: false,
    };
    let weights = train(Tiny::architecture(), x.view(), &labels, config, |_| {}).unwrap();
    (weights, pooled(&data.test.images))
}

/// The tiny network trained on the digits; returns it with its pooled test images.
pub fn tiny_model() -> (QuantModel, Array2<f64>) {
    let (weights, test) = tiny_weights();
    let model = QuantModel::from_tensors(Tiny::architecture(), &weights).unwrap();
    (model, test)
}

/// `file` as an `.npz` archive (integer tensors as `int32`, as NumPy writes small integers).
pub fn npz_bytes(file: &TensorFile) -> Vec<u8> {
    use fhe_nn::tensors::Values;
    let mut npz = ndarray_npy::NpzWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, t) in &file.tensors {
        match &t.values {
            Values::Int(v) => {
                let ints: Vec<i32> = v.iter().map(|&x| x as i32).collect();
                npz.add_array(
                    name.as_str(),
                    &ndarray::ArrayD::from_shape_vec(t.shape.clone(), ints).unwrap(),
                )
            }
            Values::Float(v) => npz.add_array(
                name.as_str(),
                &ndarray::ArrayD::from_shape_vec(t.shape.clone(), v.clone()).unwrap(),
            ),
        }
        .unwrap();
    }
    npz.finish().unwrap().into_inner()
}

const FHE_SAMPLES: usize = 30;
const SIMULATIONS_PER_SAMPLE: usize = 40;

/// The rows of `test` an attempt compares on: the first `FHE_SAMPLES`, then the next.
pub fn attempt_rows(attempt: usize) -> std::ops::Range<usize> {
    attempt * FHE_SAMPLES..(attempt + 1) * FHE_SAMPLES
}

/// Per traced stage, how many values differ from Clear's.
fn mismatches(clear: &[Vec<i64>], other: &[Vec<i64>]) -> Vec<f64> {
    clear
        .iter()
        .zip(other)
        .map(|(c, o)| c.iter().zip(o).filter(|(a, b)| a != b).count() as f64)
        .collect()
}

/// Runs a statistical comparison of Fhe with Simulate, `trial(attempt)`, each attempt on a
/// fresh key pair and other samples. Its bounds are 3 sigma per stage, so a correct model
/// lands outside them on about 1 run in 300 per stage; a first attempt outside is therefore
/// repeated once, and the test fails if the second is outside too (under a correct model
/// about 1 run in 10^5; a model that is wrong fails both). What each attempt measured is
/// printed.
pub fn within_bounds_on_a_fresh_key_pair(trial: impl Fn(usize) -> Result<(), String>) {
    let mut misses = Vec::new();
    for attempt in 0..2 {
        match trial(attempt) {
            Ok(()) => return,
            Err(miss) => {
                eprintln!("attempt {attempt} outside the bounds: {miss}");
                misses.push(miss);
            }
        }
    }
    panic!(
        "Fhe outside Simulate's bounds on two key pairs: {}",
        misses.join("; ")
    );
}

/// Simulate predicts Fhe: per stage (each lookup layer, and the decrypted outputs), the
/// number of values that differ from Clear over `FHE_SAMPLES` encrypted samples is within 3
/// sigma of Simulate's expectation for the same samples. `compiled` should make errors
/// frequent (a coarse set) for the comparison to mean something.
pub fn simulate_predicts_fhe(compiled: &fhe_nn::CompiledModel, test: ndarray::ArrayView2<f64>) {
    use fhe_nn::rng::SplitMix64;
    within_bounds_on_a_fresh_key_pair(|attempt| {
        let (client, eval) = compiled.keygen().unwrap();
        let server = compiled.server(eval).unwrap();

        // Traced values: each stage's lookup outputs and the decrypted outputs. Errors within
        // one sample are correlated (an early error moves later values), so the sample is
        // the unit: per sample, Simulate's runs give the mean and variance of each stage's
        // mismatch count, which Fhe's single run is compared with.
        // Stage k's accumulators are trace[2k]; the last stage has no lookup after it.
        let shape = compiled
            .clear_trace(&client.quantize(test.row(0)).unwrap())
            .unwrap();
        let layers = shape.len().div_ceil(2);
        let sizes: Vec<usize> = (0..layers).map(|k| shape[2 * k].len()).collect();
        let (mut fhe_total, mut sim_mean, mut sim_var) =
            (vec![0.0; layers], vec![0.0; layers], vec![0.0; layers]);
        let mut rng = SplitMix64::new(2024 + attempt as u64);
        let noise = compiled.simulation_noise();
        let points = |trace: &[Vec<i64>]| -> Vec<Vec<i64>> {
            (0..layers)
                .map(|k| trace[if k + 1 < layers { 2 * k + 1 } else { 2 * k }].clone())
                .collect()
        };
        for i in attempt_rows(attempt) {
            let row = test.row(i);
            let q = client.quantize(row).unwrap();
            let clear_points = points(&compiled.clear_trace(&q).unwrap());
            let trace = server.run_traced(&client.encrypt(row).unwrap()).unwrap();
            let fhe_points = compiled.decrypt_trace(&client, &trace).unwrap();
            for (k, c) in mismatches(&clear_points, &fhe_points)
                .into_iter()
                .enumerate()
            {
                fhe_total[k] += c;
            }
            let runs: Vec<Vec<f64>> = (0..SIMULATIONS_PER_SAMPLE)
                .map(|_| {
                    mismatches(
                        &clear_points,
                        &points(&compiled.simulate_trace(noise, &q, &mut rng).unwrap()),
                    )
                })
                .collect();
            for k in 0..layers {
                let n = SIMULATIONS_PER_SAMPLE as f64;
                let mean = runs.iter().map(|r| r[k]).sum::<f64>() / n;
                sim_mean[k] += mean;
                sim_var[k] += runs.iter().map(|r| (r[k] - mean).powi(2)).sum::<f64>() / (n - 1.0);
            }
        }
        let mut outside = Vec::new();
        for k in 0..layers {
            let values = (FHE_SAMPLES * sizes[k]) as f64;
            let bound =
                3.0 * (sim_var[k] * (1.0 + 1.0 / SIMULATIONS_PER_SAMPLE as f64)).sqrt() + 1.0;
            eprintln!(
                "stage {k}: fhe {:.4} ({} of {values}), simulate {:.4}, difference {:.1} values, 3-sigma bound {bound:.1}",
                fhe_total[k] / values,
                fhe_total[k],
                sim_mean[k] / values,
                (fhe_total[k] - sim_mean[k]).abs()
            );
            if (fhe_total[k] - sim_mean[k]).abs() > bound {
                outside.push(format!(
                    "stage {k}: fhe {} vs simulate {:.1} (bound {bound:.1})",
                    fhe_total[k], sim_mean[k]
                ));
            }
        }
        assert!(
            (0..layers).any(|k| sim_mean[k] / (FHE_SAMPLES * sizes[k]) as f64 > 0.02),
            "the coarse setting must make errors frequent for the test to mean something"
        );
        if outside.is_empty() {
            Ok(())
        } else {
            Err(outside.join(", "))
        }
    });
}
