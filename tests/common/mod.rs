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
