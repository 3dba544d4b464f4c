//! The models the `fhe-nn-server` binary serves: the digits seed network and the MNIST card
//! network, with the weights shipped in `fhe_nn::datasets`.

pub use fhe_nn::datasets::{Card, Seed};
use fhe_nn::{CompiledModel, FheOptions};

/// Names of the shipped models.
pub const NAMES: [&str; 2] = ["digits", "mnist"];

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Compiles the shipped model `name` (`digits` or `mnist`) with `options`, calibrated on
/// its training images; pixels are never negative, so inputs are restricted to `0..=3`.
pub fn compile(name: &str, options: &FheOptions) -> Result<CompiledModel, Error> {
    let compiled: CompiledModel = match name {
        "digits" => {
            let model = Seed::from_tensors(&fhe_nn::datasets::digits_seed_weights()?)?
                .restrict_inputs(0, 3)?;
            let calibration = fhe_nn::datasets::digits()?.train.images;
            model.compile(calibration.view(), options)?.into()
        }
        "mnist" => {
            let model = Card::from_tensors(&fhe_nn::datasets::mnist_card_weights()?)?
                .restrict_inputs(0, 3)?;
            let calibration = fhe_nn::datasets::mnist_5k()?.train.images;
            model.compile(calibration.view(), options)?.into()
        }
        other => {
            return Err(
                format!("no shipped model `{other}` (shipped: {})", NAMES.join(", ")).into(),
            )
        }
    };
    Ok(compiled)
}
