//! The main job: Concrete ML's seed network on the 8×8 digits, in Clear, Simulate and Fhe.
//!
//!     cargo run --release --example digits -- [--samples N] [--p-error P] [--json FILE] [--train]

use fhe_nn::fhe_net;
use fhe_nn_suite::{data, driver};

fhe_net! {
    /// Concrete ML's seed network: 64 pixels, two hidden layers of 30, 3-bit everything.
    pub struct Seed<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 10, w = 3)>
}

fn main() {
    let options = match driver::Options::from_args(10) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let result = data::digits().map_err(|e| e.into()).and_then(|d| {
        let shipped = data::models_dir().join("digits_seed.safetensors");
        driver::run(
            "digits",
            Seed::architecture(),
            &d,
            &shipped,
            driver::DIGITS_TRAINING,
            &options,
        )
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
