//! The main job: Concrete ML's seed network on the 8×8 digits, in Clear, Simulate and Fhe.
//!
//!     cargo run --release --example digits -- [--samples N] [--p-error P] [--json FILE] [--train]

mod support;

use fhe_nn::datasets::{digits, digits_seed_weights, Seed, DIGITS_SEED_TRAINING};

fn main() {
    let options = support::parse(
        "Concrete ML's seed network (64-30-30-10, 3 bits) on the 8×8 digits: Clear and \
         Simulate on the 360 test images, Fhe on the first few",
    );
    support::exit_on_error((|| {
        support::run(
            "digits",
            Seed::architecture(),
            &digits()?,
            digits_seed_weights()?,
            DIGITS_SEED_TRAINING,
            10,
            &options,
        )
    })());
}
