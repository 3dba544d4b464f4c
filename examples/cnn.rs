//! A convolutional network on the 8×8 digits (the network of Concrete ML's CNN reference),
//! in Clear, Simulate and Fhe.
//!
//!     cargo run --release --example cnn -- [--samples N] [--p-error P] [--json FILE] [--train]

mod support;

use clap::Parser;
use fhe_nn::datasets::{digits, digits_cnn_weights, Cnn, DIGITS_CNN_TRAINING};
use fhe_nn::tensors::TensorFile;

/// Three 3-bit convolutions and a linear layer on the 8×8 digits: Clear and Simulate on the
/// 360 test images, Fhe on the first few.
#[derive(Parser, Debug)]
#[command()]
struct Cli {
    #[command(flatten)]
    options: support::Options,
}

fn main() {
    let cli = Cli::parse();
    let result = (|| {
        // With `--train` the shipped weights are not used.
        let weights = if cli.options.train {
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
            &cli.options,
        )
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
