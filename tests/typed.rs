//! Typed models from the named form of `fhe_net!`: arrays of the declared sizes in and out,
//! the same numbers as the untyped batch calls.

mod common;

use common::Seed;
use fhe_nn::datasets::digits;
use fhe_nn::{FheOptions, Mode, ParameterChoice};

#[test]
fn typed_calls_take_and_return_arrays_of_the_declared_sizes() {
    let model = Seed::load(common::shipped_seed_path()).unwrap();
    let test = digits().unwrap().test.images;
    let sample: [f64; 64] = test.row(0).to_vec().try_into().unwrap();
    let exact: [f64; 10] = model.predict(&sample).unwrap();
    let batch = model.predict_clear(test.view()).unwrap();
    assert_eq!(exact.to_vec(), batch.row(0).to_vec());

    let options = FheOptions {
        parameters: ParameterChoice::Vetted(4),
        ..FheOptions::default()
    };
    let compiled = model.compile(test.view(), &options).unwrap();
    let clear: [f64; 10] = compiled.predict_one(&sample, Mode::Clear).unwrap();
    let batch = compiled.predict(test.view(), Mode::Clear).unwrap();
    assert_eq!(clear.to_vec(), batch.row(0).to_vec());
    // Sample 0 of a batch draws the same noise as a single sample with the same seed.
    let simulated = compiled
        .predict_one(&sample, Mode::Simulate { seed: 1 })
        .unwrap();
    let batch = compiled
        .predict(test.view(), Mode::Simulate { seed: 1 })
        .unwrap();
    assert_eq!(simulated.to_vec(), batch.row(0).to_vec());
    // Restricting the inputs to non-negative pixels keeps Clear on pixels unchanged.
    let restricted = model.restrict_inputs(0, 3).unwrap();
    assert_eq!(restricted.predict(&sample).unwrap(), exact);
    assert!(restricted.predict(&[-100.0; 64]).is_err());
}
