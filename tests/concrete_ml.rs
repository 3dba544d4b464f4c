//! Clear mode against an independent implementation: Concrete ML 1.9's `fhe="disable"` on
//! Brevitas-trained networks: the seed network, the CNN (`tools/concrete_fixture.py
//! [seed|cnn]` made the models and fixtures) and the residual network of `cml_resnet.py`
//! (`tools/resnet_fixture.py`).

mod common;

use common::Seed;
use fhe_nn::tensors::{TensorFile, Values};
use fhe_nn::{argmax_rows, QuantModel};
use ndarray::Array2;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn array(file: &TensorFile, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = &file.tensors[name];
    let values = match &t.values {
        Values::Float(v) => v.clone(),
        Values::Int(v) => v.iter().map(|&x| x as f64).collect(),
    };
    (t.shape.clone(), values)
}

#[test]
fn clear_matches_concrete_ml_disable_mode() {
    matches_fixture(Seed::architecture(), "seed");
}

#[test]
fn clear_matches_concrete_ml_disable_mode_on_a_convolutional_network() {
    matches_fixture(fhe_nn::datasets::Cnn::architecture(), "cnn");
}

#[test]
fn clear_matches_concrete_ml_disable_mode_on_a_residual_network() {
    let arch = fhe_nn::datasets::Resnet::architecture();
    let model = matches_fixture(arch, "resnet");
    // Brevitas's shared quantizer re-quantizes the block's input (scale 2.54 to 2.37) to the
    // same integers on every value it holds ([0, 3] after ReLU): the fork's side of the add
    // needs no lookup, 144 fewer than the analysis's bound. The max pool then compares the
    // add's accumulators before its ReLU and quantizer (monotone: the max commutes with
    // them), which run once per window: 36 lookups instead of 144.
    assert_eq!(arch.lookups(), 828);
    assert_eq!(model.lookups(), 828 - 144 - 108);
}

/// `models/NAME_brevitas.safetensors` read by fhe-nn against Concrete ML's outputs on the
/// same network (`tests/fixtures/NAME_concrete_ml.safetensors`, the 360 test digits).
fn matches_fixture(arch: &fhe_nn::Architecture, name: &str) -> QuantModel {
    let model = QuantModel::load(
        arch,
        root().join(format!("models/{name}_brevitas.safetensors")),
    )
    .unwrap();
    // Concrete ML compiled with rounding_threshold_bits=None: every lookup is exact, as a
    // loaded (not compiled) model reads them.
    let fixture =
        TensorFile::read(&root().join(format!("tests/fixtures/{name}_concrete_ml.safetensors")))
            .unwrap();
    let (shape, inputs) = array(&fixture, "inputs");
    let inputs = Array2::from_shape_vec((shape[0], shape[1]), inputs).unwrap();
    let (_, q_expected) = array(&fixture, "quantized_inputs");
    let (_, expected) = array(&fixture, "outputs");
    let expected = Array2::from_shape_vec((shape[0], 10), expected).unwrap();
    assert_eq!(shape, vec![360, 64]);

    // Input quantization is bit-exact.
    let q = model.quantize_inputs(inputs.view()).unwrap();
    assert_eq!(q.len(), q_expected.len());
    let q_mismatch = q
        .iter()
        .zip(&q_expected)
        .filter(|(a, b)| **a as f64 != **b)
        .count();
    assert_eq!(q_mismatch, 0);

    let outputs = model.predict_clear(inputs.view()).unwrap();
    let ours = argmax_rows(outputs.view());
    let theirs = argmax_rows(expected.view());
    let agree = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / 360.0;
    eprintln!("{name}: argmax agreement with Concrete ML: {agree:.4}");
    assert!(agree >= 0.995, "argmax agreement {agree}");

    // De-quantized outputs within one quantization step of the output layer.
    let step = model.output_step();
    let mut within = 0;
    for (i, row) in outputs.rows().into_iter().enumerate() {
        if row
            .iter()
            .enumerate()
            .all(|(j, &v)| (v - expected[(i, j)]).abs() <= step[j] * 1.0001)
        {
            within += 1;
        }
    }
    eprintln!("{name}: outputs within one quantization step: {within}/360");
    assert!(
        within as f64 / 360.0 >= 0.99,
        "{within}/360 samples within one step"
    );

    let (_, labels) = array(&fixture, "labels");
    assert_eq!(labels.len(), 360);
    let acc = ours
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p as f64 == **l)
        .count() as f64
        / 360.0;
    let acc_cml = theirs
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p as f64 == **l)
        .count() as f64
        / 360.0;
    assert!(
        (acc - acc_cml).abs() <= 0.005,
        "accuracy {acc} vs Concrete ML {acc_cml}"
    );
    model
}
