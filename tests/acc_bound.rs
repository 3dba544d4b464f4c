//! A declared accumulator bound (`acc = N` on a weighted layer): the analysis uses it, the
//! report says which lookups fit thanks to it, and loading holds every output channel of the
//! weights to it (`‖w‖₁ · max|x| ≤ 2^(N−1) − 1`), ONNX imports included.

use fhe_nn::arch::layer::Layer;
use fhe_nn::datasets::{digits, mnist_card_weights, Card, Cnn};
use fhe_nn::onnx::{OnnxError, OnnxModel};
use fhe_nn::tensors::{TensorFile, Values};
use fhe_nn::{fhe_net, Architecture, LoadError, Mode, QuantModel};

fhe_net! {
    /// The card network with its first layer's accumulator declared at 12 bits.
    struct BoundedCard<QuantIdentity(3), QuantLinear(784, 128, w = 3, acc = 12), ReLU,
                       QuantIdentity(3), QuantLinear(128, 10, w = 3)>
}

/// `arch` with declared layer `layer` (0-based) bounded to `acc` bits.
fn with_acc(arch: &Architecture, layer: usize, acc: u32) -> Architecture {
    let mut layers = arch.layers().to_vec();
    match &mut layers[layer] {
        Layer::QuantLinear { options, .. } => options.acc = Some(acc),
        Layer::QuantConv2d(conv) => conv.options.acc = Some(acc),
        other => panic!("{other} is not weighted"),
    }
    Architecture::new(arch.name(), layers).unwrap()
}

/// The largest `‖w‖₁` over the output channels of tensor `name` (`[out, …]`).
fn largest_l1(file: &TensorFile, name: &str) -> i64 {
    let t = &file.tensors[name];
    let Values::Int(w) = &t.values else {
        panic!("{name} holds integers")
    };
    w.chunks(w.len() / t.shape[0])
        .map(|row| row.iter().map(|x| x.abs()).sum())
        .max()
        .unwrap()
}

/// The narrowest signed width whose declared range holds `±magnitude`.
fn bits_for(magnitude: i64) -> u32 {
    (2..).find(|&b| (1i64 << (b - 1)) > magnitude).unwrap()
}

#[test]
fn the_analysis_and_the_report_use_the_bound() {
    assert_eq!(BoundedCard::ACCUMULATOR_BITS[1], Some(12));
    assert_eq!(BoundedCard::RANGES[1], Some((-2047, 2047)));
    let lookup = BoundedCard::architecture().analysis()[3].lookup.unwrap();
    assert_eq!((lookup.input_bits, lookup.unbounded_bits), (12, Some(15)));
    let report = BoundedCard::report().to_string();
    assert!(
        report.contains("fits by the declared acc bound (15 bits unbounded)"),
        "{report}"
    );
    assert!(
        report.contains("QuantLinear(784, 128, w = 3, acc = 12)"),
        "{report}"
    );
    // The unbounded card's lookup is not marked.
    let plain = Card::architecture().analysis()[3].lookup.unwrap();
    assert_eq!(plain.unbounded_bits, None);
}

#[test]
fn loading_holds_every_channel_to_the_bound() {
    let weights = mnist_card_weights().unwrap();
    // Inputs of the card's first layer: signed 3-bit, up to 4 in magnitude.
    let needed = bits_for(4 * largest_l1(&weights, "layers.1.weight"));
    assert!(needed < 15, "the shipped card needs {needed} bits");
    let card = Card::architecture();
    // The narrowest bound the shipped weights keep loads, gives the same Clear outputs as
    // the unbounded declaration, and compiles.
    let fits = QuantModel::from_tensors(&with_acc(card, 1, needed), &weights).unwrap();
    let plain = QuantModel::from_tensors(card, &weights).unwrap();
    let test = fhe_nn::datasets::mnist_5k().unwrap().test.images;
    let some = test.slice(fhe_nn::ndarray::s![..50, ..]);
    assert_eq!(
        fits.predict_clear(some).unwrap(),
        plain.predict_clear(some).unwrap()
    );
    let compiled = fits.compile(some, &Default::default()).unwrap();
    assert_eq!(
        compiled.predict(some, Mode::Clear).unwrap(),
        plain
            .compile(some, &Default::default())
            .unwrap()
            .predict(some, Mode::Clear)
            .unwrap()
    );
    // One bit less: refused, naming the layer and a channel that breaks it.
    match QuantModel::from_tensors(&with_acc(card, 1, needed - 1), &weights) {
        Err(e @ LoadError::AccumulatorBoundBroken { .. }) => {
            let LoadError::AccumulatorBoundBroken {
                layer,
                channel,
                l1_norm,
                max_input,
                bound,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*layer, *max_input), (2, 4));
            assert!(l1_norm * max_input > *bound, "{e}");
            assert!(*channel < 128);
            assert!(e.to_string().contains("acc = "), "{e}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn onnx_imports_are_held_to_the_declared_bound() {
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cnn_brevitas.onnx"),
    )
    .unwrap();
    let imported = OnnxModel::read(&bytes).unwrap();
    // The first weighted layer whose weights need fewer bits than its worst case.
    let arch = Cnn::architecture();
    let (conv, needed) = (1..arch.layers().len())
        .filter(|&i| arch.layers()[i].weight_options().is_some())
        .find_map(|i| {
            let input = arch.analysis()[i - 1].range?;
            let max_input = input.min.abs().max(input.max.abs());
            let needed =
                bits_for(max_input * largest_l1(&imported.weights, &format!("layers.{i}.weight")));
            (needed < arch.analysis()[i].accumulator_bits?).then_some((i, needed))
        })
        .expect("a layer whose weights need less than the worst case");
    let fits = with_acc(Cnn::architecture(), conv, needed);
    let model = QuantModel::from_onnx(&fits, &bytes).unwrap();
    let test = digits().unwrap().test.images;
    assert_eq!(
        model.predict_clear(test.view()).unwrap(),
        QuantModel::from_onnx(Cnn::architecture(), &bytes)
            .unwrap()
            .predict_clear(test.view())
            .unwrap()
    );
    let tight = with_acc(Cnn::architecture(), conv, needed - 1);
    assert!(matches!(
        QuantModel::from_onnx(&tight, &bytes),
        Err(OnnxError::Load(LoadError::AccumulatorBoundBroken { .. }))
    ));
}

#[test]
fn the_trainer_refuses_a_bound_it_cannot_keep_yet() {
    let data = fhe_nn::datasets::mnist_5k().unwrap();
    let x = data.train.images.slice(fhe_nn::ndarray::s![..10, ..]);
    let labels = &data.train.labels.to_vec()[..10];
    let result = fhe_nn::train::train(
        BoundedCard::architecture(),
        x,
        labels,
        fhe_nn::train::TrainConfig::default(),
        |_| {},
    );
    assert_eq!(
        result.unwrap_err(),
        fhe_nn::train::TrainError::AccBoundNotSupported { layer: 2, acc: 12 }
    );
}
