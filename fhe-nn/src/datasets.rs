//! The data sets the project's figures come from, embedded in the library (feature
//! `datasets`, on by default), with their fixed splits:
//!
//! - digits (1,797 rows, UCI, CC BY 4.0): the rows are shuffled (Fisher–Yates,
//!   [`SplitMix64`]) seeded with [`SPLIT_SEED`]; the first 1,437 are the training split, the
//!   last 360 the test split.
//! - mnist_5k (5,000 rows, a subset of MNIST, CC BY-SA 3.0): the same shuffle and seed;
//!   first 4,000 train, last 1,000 test.
//!
//!
//! It also holds the shipped networks trained on them: [`Seed`] (digits) and [`Card`]
//! (MNIST), their weights ([`digits_seed_weights`], [`mnist_card_weights`]) and the trainer
//! settings that made them.
//!
//! ```
//! let digits = fhe_nn::datasets::digits()?;
//! assert_eq!(digits.test.images.dim(), (360, 64));
//! # Ok::<(), fhe_nn::datasets::DataError>(())
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::{Array1, Array2};

use crate::rng::SplitMix64;

/// Seed of the shuffle that defines the splits.
pub const SPLIT_SEED: u64 = 42;

/// Errors while reading a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Images (one row per sample, pixel values as read) and their labels.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Array2<f64>,
    pub labels: Array1<usize>,
}

/// A data set's training and test splits.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
    /// Largest pixel value of the format (16 for digits, 255 for MNIST).
    pub max_pixel: f64,
}

/// The 8×8 digits: 1,437 training and 360 test samples, pixels 0–16 (embedded in the
/// library: 57 kB).
pub fn digits() -> Result<Dataset, DataError> {
    parse(
        Path::new("digits.csv.gz"),
        include_bytes!("../data/digits.csv.gz"),
        64,
        1437,
        16.0,
    )
}

/// The MNIST 5k subset: 4,000 training and 1,000 test samples, 28×28 pixels 0–255
/// (embedded in the library: 1.1 MB).
pub fn mnist_5k() -> Result<Dataset, DataError> {
    parse(
        Path::new("mnist_5k.csv.gz"),
        include_bytes!("../data/mnist_5k.csv.gz"),
        784,
        4000,
        255.0,
    )
}

crate::fhe_net! {
    /// Concrete ML's seed network on the 8×8 digits: 64 pixels, two hidden layers of 30,
    /// 3-bit inputs, weights and activations. Shipped weights: [`digits_seed_weights`].
    pub struct Seed<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 10, w = 3)>
}

crate::fhe_net! {
    /// The card network on 28×28 MNIST: 784 pixels, one hidden layer of 128, its first
    /// layer's accumulator declared at 9 bits (`acc = 9`: the weights are trained under
    /// `‖w‖₁ ≤ 63` per channel; 15 bits unbounded) and its output layer's at 8 (`acc = 8`:
    /// `‖w‖₁ ≤ 42` per class; 12 bits unbounded), the bounds that give the fastest Fhe at a
    /// Clear accuracy of at least 93.5% (docs/benchmarks.md): the narrow outputs decrypt
    /// exactly after a one-level bootstrap. Shipped weights: [`mnist_card_weights`].
    pub struct Card<QuantIdentity(3), QuantLinear(784, 128, w = 3, acc = 9), ReLU,
                    QuantIdentity(3), QuantLinear(128, 10, w = 3, acc = 8)>
}

crate::fhe_net! {
    /// The convolutional network of Concrete ML's CNN reference (`cml_cnn.py`) on the 8×8
    /// digits: three 3-bit convolutions (1→8 k3, 8→16 k3 stride 2, 16→32 k2), ReLU, then a
    /// linear layer to 10 classes. Shipped weights: [`digits_cnn_weights`].
    pub struct Cnn<QuantIdentity(3), QuantConv2d(1, 8, 3, w = 3, input = (8, 8)), ReLU,
                   QuantIdentity(3), QuantConv2d(8, 16, 3, stride = 2, w = 3), ReLU,
                   QuantIdentity(3), QuantConv2d(16, 32, 2, w = 3), ReLU,
                   QuantIdentity(3), Flatten, QuantLinear(32, 10, w = 3)>
}

crate::fhe_net! {
    /// The tiny residual network of Concrete ML's `cml_resnet.py` on the 8×8 digits: a
    /// convolution stem, one residual block whose two sides pass through one shared 3-bit
    /// quantizer before the add (`Fork` … `Add(3)`, as Brevitas writes it), ReLU,
    /// `MaxPool2d(2)`, and a linear classifier. 3-bit inputs, weights and activations.
    pub struct Resnet<QuantIdentity(3), QuantConv2d(1, 4, 3, input = (8, 8), w = 3), ReLU,
                      QuantIdentity(3), Fork,
                      QuantConv2d(4, 4, 3, padding = 1, w = 3), ReLU, QuantIdentity(3),
                      QuantConv2d(4, 4, 3, padding = 1, w = 3), Add(3),
                      ReLU, QuantIdentity(3), MaxPool2d(2), QuantIdentity(3),
                      Flatten, QuantLinear(36, 10, w = 3)>
}

/// The trainer settings the shipped CNN weights were made with (on the digits training
/// split): `cargo run --release --example cnn -- --train --save fhe-nn/data/digits_cnn.safetensors`.
pub const DIGITS_CNN_TRAINING: crate::train::TrainConfig = crate::train::TrainConfig {
    epochs: 60,
    batch_size: 64,
    learning_rate: 0.01,
    seed: 1,
    batch_norm: false,
    joins_at_fork_scale: false,
};

/// The trainer settings the shipped [`Resnet`] weights were made with (on the digits
/// training split): `cargo run --release --example resnet -- --train --save
/// fhe-nn/data/digits_resnet.safetensors` (91.1% Clear accuracy). Longer and slower than
/// `cml_resnet.py`'s 60 epochs at 0.01; the add's shared quantizer is held at the block
/// input's scale, so the fork's side of the add costs no lookup; with the max pool taken
/// before the add's ReLU and quantizer, 576 lookups (the analysis's bound: 828).
pub const DIGITS_RESNET_TRAINING: crate::train::TrainConfig = crate::train::TrainConfig {
    epochs: 150,
    batch_size: 64,
    learning_rate: 0.005,
    seed: 1,
    batch_norm: false,
    joins_at_fork_scale: true,
};

/// The trainer settings the shipped seed weights were made with (on the digits training
/// split): `cargo run --release --example digits -- --train --save fhe-nn/data/digits_seed.safetensors`.
pub const DIGITS_SEED_TRAINING: crate::train::TrainConfig = crate::train::TrainConfig {
    epochs: 300,
    batch_size: 64,
    learning_rate: 0.003,
    seed: 1,
    batch_norm: false,
    joins_at_fork_scale: false,
};

/// The trainer settings the shipped card weights were made with (on the MNIST-5k training
/// split): `cargo run --release --example mnist -- --train --save fhe-nn/data/mnist_card.safetensors`.
pub const MNIST_CARD_TRAINING: crate::train::TrainConfig = crate::train::TrainConfig {
    epochs: 30,
    batch_size: 32,
    learning_rate: 0.001,
    seed: 1,
    batch_norm: false,
    joins_at_fork_scale: false,
};

/// The shipped weights of Concrete ML's seed network on digits,
/// `QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU, QuantIdentity(3), QuantLinear(30, 30,
/// w = 3), ReLU, QuantIdentity(3), QuantLinear(30, 10, w = 3)`, trained by fhe-nn's QAT
/// trainer (embedded: 14 kB).
pub fn digits_seed_weights() -> Result<crate::tensors::TensorFile, crate::error::LoadError> {
    crate::tensors::TensorFile::from_safetensors(include_bytes!("../data/digits_seed.safetensors"))
}

/// The shipped weights of the card network on MNIST ([`Card`]: `QuantIdentity(3),
/// QuantLinear(784, 128, w = 3, acc = 9), ReLU, QuantIdentity(3), QuantLinear(128, 10, w = 3,
/// acc = 8)`), trained under those bounds by fhe-nn's QAT trainer (embedded: 408 kB; Clear
/// accuracy 94.3% on the test split).
pub fn mnist_card_weights() -> Result<crate::tensors::TensorFile, crate::error::LoadError> {
    crate::tensors::TensorFile::from_safetensors(include_bytes!("../data/mnist_card.safetensors"))
}

/// The shipped weights of the [`Cnn`] on digits, trained by fhe-nn's QAT trainer with
/// [`DIGITS_CNN_TRAINING`] (embedded: 16 kB).
pub fn digits_cnn_weights() -> Result<crate::tensors::TensorFile, crate::error::LoadError> {
    crate::tensors::TensorFile::from_safetensors(include_bytes!("../data/digits_cnn.safetensors"))
}

/// The shipped weights of the [`Resnet`] on digits, trained by fhe-nn's QAT trainer with
/// [`DIGITS_RESNET_TRAINING`] (embedded: 5 kB). The same network trained with Brevitas
/// (`tools/resnet_fixture.py`) is `models/resnet_brevitas.safetensors`, on which Clear
/// equals Concrete ML's `fhe="disable"`.
pub fn digits_resnet_weights() -> Result<crate::tensors::TensorFile, crate::error::LoadError> {
    crate::tensors::TensorFile::from_safetensors(include_bytes!(
        "../data/digits_resnet.safetensors"
    ))
}

/// Reads a gzip CSV of `pixels` columns then a label, shuffles it and splits it.
pub fn load(
    path: &Path,
    pixels: usize,
    train_rows: usize,
    max_pixel: f64,
) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes, pixels, train_rows, max_pixel)
}

/// Parses gzip CSV bytes (`path` names them in errors), then shuffles and splits.
fn parse(
    path: &Path,
    bytes: &[u8],
    pixels: usize,
    train_rows: usize,
    max_pixel: f64,
) -> Result<Dataset, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut rows: Vec<(Vec<f64>, usize)> = Vec::new();
    for (index, line) in BufReader::new(GzDecoder::new(bytes)).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let format = |message: String| DataError::Format {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != pixels + 1 {
            return Err(format(format!(
                "expected {} fields, found {}",
                pixels + 1,
                fields.len()
            )));
        }
        let mut image = Vec::with_capacity(pixels);
        for f in &fields[..pixels] {
            let v: f64 = f
                .trim()
                .parse()
                .map_err(|_| format(format!("pixel `{f}` is not a number")))?;
            if !(0.0..=max_pixel).contains(&v) {
                return Err(format(format!("pixel {v} outside [0, {max_pixel}]")));
            }
            image.push(v);
        }
        let label: f64 = fields[pixels]
            .trim()
            .parse()
            .map_err(|_| format(format!("label `{}` is not a number", fields[pixels])))?;
        if label.fract() != 0.0 || !(0.0..=9.0).contains(&label) {
            return Err(format(format!("label {label} is not a digit")));
        }
        rows.push((image, label as usize));
    }
    if rows.len() <= train_rows {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            line: rows.len(),
            message: format!("only {} rows, expected more than {train_rows}", rows.len()),
        });
    }
    SplitMix64::new(SPLIT_SEED).shuffle(&mut rows);
    let test_rows = rows.split_off(train_rows);
    Ok(Dataset {
        train: to_split(rows, pixels),
        test: to_split(test_rows, pixels),
        max_pixel,
    })
}

fn to_split(rows: Vec<(Vec<f64>, usize)>, pixels: usize) -> Split {
    let n = rows.len();
    let mut images = Array2::zeros((n, pixels));
    let mut labels = Array1::zeros(n);
    for (i, (image, label)) in rows.into_iter().enumerate() {
        images.row_mut(i).assign(&Array1::from(image));
        labels[i] = label;
    }
    Split { images, labels }
}
