//! The card network (784-128-10, 3 bits) on MNIST-5k, in Clear, Simulate and Fhe.
//!
//!     cargo run --release --example mnist -- [--samples N] [--p-error P] [--json FILE] [--train]

mod support;

use fhe_nn::datasets::{mnist_5k, mnist_card_weights, Card, MNIST_CARD_TRAINING};

fn main() {
    let options = support::parse(
        "The card network (784-128-10, 3 bits) on MNIST-5k: Clear and Simulate on the 1,000 \
         test images, Fhe on the first few",
    );
    support::exit_on_error((|| {
        support::run(
            "mnist",
            Card::architecture(),
            &mnist_5k()?,
            mnist_card_weights()?,
            MNIST_CARD_TRAINING,
            3,
            &options,
        )
    })());
}
