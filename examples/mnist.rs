//! The card network (784-128-10, 3-bit) on the MNIST 5k subset, in Clear, Simulate and Fhe.
//!
//!     cargo run --release --example mnist -- [--samples N] [--p-error P] [--json FILE] [--train]

use fhe_nn::fhe_net;
use fhe_nn_suite::{data, driver};

fhe_net! {
    /// The card network.
    pub struct Card<QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(128, 10, w = 3)>
}

fn main() {
    let options = match driver::Options::from_args(3) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let result = data::mnist_5k().map_err(|e| e.into()).and_then(|d| {
        let shipped = data::models_dir().join("mnist_card.safetensors");
        driver::run(
            "mnist",
            Card::architecture(),
            &d,
            &shipped,
            driver::MNIST_TRAINING,
            &options,
        )
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
