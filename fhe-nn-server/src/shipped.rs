//! The models the `fhe-nn-server` binary serves: the digits seed network and the MNIST card
//! network, with the weights shipped in `fhe_nn::datasets`, or compiled models' files.

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

/// Largest compiled-model file read (bytes), as [`fhe_nn::fhe::COMPILED_MODEL_LIMIT`] plus
/// the envelope.
const MAX_COMPILED_FILE: u64 = fhe_nn::fhe::COMPILED_MODEL_LIMIT + 4096;

/// The model a `--models` entry names, and the name it is served under: a shipped name
/// (compiled now, see [`compile`]), or `NAME=FILE`, a compiled model's file
/// ([`CompiledModel::to_bytes`]) read and checked (its tables built again, its fingerprint
/// compared with the file's).
pub fn load(entry: &str, options: &FheOptions) -> Result<(String, CompiledModel), Error> {
    let Some((name, path)) = entry.split_once('=') else {
        return Ok((entry.to_string(), compile(entry, options)?));
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(format!("model name `{name}`: use letters, digits, `-` and `_`").into());
    }
    let size = std::fs::metadata(path)
        .map_err(|e| format!("compiled model {path}: {e}"))?
        .len();
    if size > MAX_COMPILED_FILE {
        return Err(
            format!("compiled model {path}: {size} bytes, more than {MAX_COMPILED_FILE}").into(),
        );
    }
    let bytes = std::fs::read(path).map_err(|e| format!("compiled model {path}: {e}"))?;
    let compiled =
        CompiledModel::from_bytes(&bytes).map_err(|e| format!("compiled model {path}: {e}"))?;
    Ok((name.to_string(), compiled))
}
