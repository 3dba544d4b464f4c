//! A convolutional network on the 8×8 digits (the network of Concrete ML's CNN reference),
//! in Clear, Simulate and Fhe.
//!
//!     cargo run --release --example cnn -- [--samples N] [--p-error P] [--json FILE] [--train]

mod support;

use fhe_nn::datasets::{digits, digits_cnn_weights, Cnn, DIGITS_CNN_TRAINING};
use fhe_nn::tensors::TensorFile;

fn main() {
    let options = support::parse(
        "Three 3-bit convolutions and a linear layer on the 8×8 digits: Clear and Simulate on \
         the 360 test images, Fhe on the first few",
    );
    support::exit_on_error((|| {
        // With `--train` the shipped weights are not used.
        let weights = if options.train {
            TensorFile::default()
        } else {
            digits_cnn_weights()?
        };
        support::run(
            "cnn",
            Cnn::architecture(),
            &digits()?,
            weights,
            DIGITS_CNN_TRAINING,
            3,
            &options,
        )
    })());
}
