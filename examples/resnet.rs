//! A residual network on the 8×8 digits (the network of Concrete ML's `cml_resnet.py`): a
//! convolution stem, one residual block whose two sides share a quantizer before the add,
//! ReLU, 2×2 max pooling and a linear classifier, in Clear, Simulate and Fhe.
//!
//!     cargo run --release --example resnet -- [--samples N] [--p-error P] [--json FILE] [--train]

mod support;

use fhe_nn::datasets::{digits, digits_resnet_weights, Resnet, DIGITS_RESNET_TRAINING};
use fhe_nn::tensors::TensorFile;

fn main() {
    let options = support::parse(
        "A residual block and a max pool on the 8×8 digits: Clear and Simulate on the 360 test \
         images, Fhe on the first few",
    );
    support::exit_on_error((|| {
        // With `--train` the shipped weights are not used.
        let weights = if options.train {
            TensorFile::default()
        } else {
            digits_resnet_weights()?
        };
        support::run(
            "resnet",
            Resnet::architecture(),
            &digits()?,
            weights,
            DIGITS_RESNET_TRAINING,
            3,
            &options,
        )
    })());
}
