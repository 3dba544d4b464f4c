//! The card network (784-128-10, 3 bits) on MNIST-5k, in Clear, Simulate and Fhe.
//!
//!     cargo run --release --example mnist -- [--samples N] [--p-error P] [--json FILE] [--train]

mod support;

use clap::Parser;
use fhe_nn::datasets::{mnist_5k, mnist_card_weights, Card, MNIST_CARD_TRAINING};

/// The card network (784-128-10, 3 bits) on MNIST-5k: Clear and Simulate on the 1,000 test
/// images, Fhe on the first few.
#[derive(Parser, Debug)]
#[command()]
struct Cli {
    #[command(flatten)]
    options: support::Options,
}

fn main() {
    let cli = Cli::parse();
    let result = (|| {
        support::run(
            "mnist",
            Card::architecture(),
            &mnist_5k()?,
            mnist_card_weights()?,
            MNIST_CARD_TRAINING,
            3,
            &cli.options,
        )
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
