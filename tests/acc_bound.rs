//! A declared accumulator bound (`acc = N` on a weighted layer): the analysis uses it, the
//! report says which lookups fit thanks to it, and loading holds every output channel's exact
//! accumulator range to it (`±(2^(N−1) − 1)`), ONNX imports included.

use fhe_nn::arch::layer::Layer;
use fhe_nn::datasets::{digits, mnist_card_weights, Card, Cnn};
use fhe_nn::onnx::{OnnxError, OnnxModel};
use fhe_nn::tensors::{TensorFile, Values};
use fhe_nn::{fhe_net, Architecture, LoadError, Mode, QuantModel};

fhe_net! {
    /// The design card's network without a declared bound.
    struct UnboundedCard<QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                         QuantIdentity(3), QuantLinear(128, 10, w = 3)>
}

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

/// The largest accumulator magnitude over the output channels of tensor `name`
/// (`[out, …]`) for inputs in `[lo, hi]`, computed here by hand: each weight times whichever
/// end of the input range gives the largest, then the smallest, sum.
fn largest_exact(file: &TensorFile, name: &str, (lo, hi): (i64, i64)) -> i64 {
    let t = &file.tensors[name];
    let Values::Int(w) = &t.values else {
        panic!("{name} holds integers")
    };
    w.chunks(w.len() / t.shape[0])
        .map(|row| {
            let top: i64 = row.iter().map(|&x| (x * lo).max(x * hi)).sum();
            let bottom: i64 = row.iter().map(|&x| (x * lo).min(x * hi)).sum();
            top.abs().max(bottom.abs())
        })
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
    let plain = UnboundedCard::architecture().analysis()[3].lookup.unwrap();
    assert_eq!(plain.unbounded_bits, None);
}

#[test]
fn loading_holds_every_channel_to_the_bound() {
    let weights = mnist_card_weights().unwrap();
    // Inputs of the card's first layer: signed 3-bit, [-4, 3]. The bound needed is that of
    // the exact ranges, no more than the ℓ1 norm's.
    let needed = bits_for(largest_exact(&weights, "layers.1.weight", (-4, 3)));
    assert!(needed <= bits_for(4 * largest_l1(&weights, "layers.1.weight")));
    assert!(needed < 15, "the shipped card needs {needed} bits");
    // The shipped card declares `acc = 9`; its weights keep it.
    assert!(QuantModel::from_tensors(Card::architecture(), &weights).is_ok());
    let card = UnboundedCard::architecture();
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
                min,
                max,
                bound,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*layer, 2);
            assert!(min.unsigned_abs().max(max.unsigned_abs()) > *bound, "{e}");
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
            let needed = bits_for(largest_exact(
                &imported.weights,
                &format!("layers.{i}.weight"),
                (input.min, input.max),
            ));
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

/// Test accuracy of `model`'s Clear predictions.
fn accuracy(model: &QuantModel, images: fhe_nn::ndarray::ArrayView2<f64>, labels: &[usize]) -> f64 {
    let predicted = fhe_nn::argmax_rows(model.predict_clear(images).unwrap().view());
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    right as f64 / labels.len() as f64
}

#[test]
fn training_under_a_bound_keeps_it_and_still_learns() {
    let data = fhe_nn::datasets::mnist_5k().unwrap();
    let (x, labels) = (
        data.train.images.slice(fhe_nn::ndarray::s![..1500, ..]),
        &data.train.labels.to_vec()[..1500],
    );
    let config = fhe_nn::train::TrainConfig {
        epochs: 4,
        ..fhe_nn::datasets::MNIST_CARD_TRAINING
    };
    // acc = 10: each first-layer channel may have ‖w‖₁ ≤ ⌊511 / 4⌋ = 127 over 784 weights
    // (the unbounded worst case is 15 bits).
    let bounded = with_acc(UnboundedCard::architecture(), 1, 10);
    let trained = fhe_nn::train::train(&bounded, x, labels, config.clone(), |_| {}).unwrap();
    // Loading checks every channel: the bound holds by construction.
    let model = QuantModel::from_tensors(&bounded, &trained).unwrap();
    let largest = largest_l1(&trained, "layers.1.weight");
    assert!(largest <= 127, "‖w‖₁ = {largest}");
    let plain =
        fhe_nn::train::train(UnboundedCard::architecture(), x, labels, config, |_| {}).unwrap();
    let plain = QuantModel::from_tensors(UnboundedCard::architecture(), &plain).unwrap();
    let test_labels = data.test.labels.to_vec();
    let (with_bound, without) = (
        accuracy(&model, data.test.images.view(), &test_labels),
        accuracy(&plain, data.test.images.view(), &test_labels),
    );
    eprintln!(
        "4 epochs on 1,500 images: acc = 10 {with_bound:.3}, unbounded {without:.3} (largest ‖w‖₁ {largest})"
    );
    assert!(with_bound > 0.75, "{with_bound}");
}

#[test]
fn post_training_quantization_targets_a_bound_too() {
    // Unbounded weights (4 epochs on 1,500 images) as floats, quantized again one bit under
    // the narrowest bound they keep as they are.
    let data = fhe_nn::datasets::mnist_5k().unwrap();
    let config = fhe_nn::train::TrainConfig {
        epochs: 4,
        ..fhe_nn::datasets::MNIST_CARD_TRAINING
    };
    let weights = fhe_nn::train::train(
        UnboundedCard::architecture(),
        data.train.images.slice(fhe_nn::ndarray::s![..1500, ..]),
        &data.train.labels.to_vec()[..1500],
        config,
        |_| {},
    )
    .unwrap();
    let mut floats = TensorFile::default();
    for layer in [1, 4] {
        let w = &weights.tensors[&format!("layers.{layer}.weight")];
        let (Values::Int(ints), Values::Float(scale)) = (
            &w.values,
            &weights.tensors[&format!("layers.{layer}.weight_scale")].values,
        ) else {
            panic!("integer weights, float scales")
        };
        let per_row = ints.len() / w.shape[0];
        let values = ints
            .iter()
            .enumerate()
            .map(|(k, &i)| i as f64 * scale[(k / per_row) % scale.len()])
            .collect();
        floats.tensors.insert(
            format!("layers.{layer}.weight"),
            fhe_nn::tensors::Tensor::float(w.shape.clone(), values),
        );
        let bias = format!("layers.{layer}.bias");
        floats
            .tensors
            .insert(bias.clone(), weights.tensors[&bias].clone());
    }
    let labels = data.test.labels.to_vec();
    let ptq = |arch: &Architecture| {
        let quantized = fhe_nn::train::Trainer::from_float(arch, &floats, data.train.images.view())
            .unwrap()
            .export();
        let model = QuantModel::from_tensors(arch, &quantized).unwrap();
        (
            accuracy(&model, data.test.images.view(), &labels),
            quantized,
        )
    };
    let acc = bits_for(4 * largest_l1(&weights, "layers.1.weight")) - 1;
    let (plain, _) = ptq(UnboundedCard::architecture());
    let (bounded, quantized) = ptq(&with_acc(UnboundedCard::architecture(), 1, acc));
    let budget = ((1i64 << (acc - 1)) - 1) / 4;
    assert!(largest_l1(&quantized, "layers.1.weight") <= budget);
    eprintln!("PTQ of the card: unbounded {plain:.3}, acc = {acc} {bounded:.3}");
    // Without retraining, halving the budget costs some accuracy; training under the bound
    // recovers it (the test above).
    assert!(bounded > plain - 0.10, "{bounded} vs {plain}");
}

fhe_net! {
    /// Ten inputs in [0, 7] summed by one neuron, declared at 8 bits.
    struct Ten<QuantIdentity(3, unsigned), QuantLinear(20, 1, w = 2, acc = 8)>
}

/// Ten +1 and ten −1 weights on inputs in [0, 7]: the accumulator lies in [−70, 70], which
/// `acc = 8` (±127) holds, although `‖w‖₁ · max|x|` = 140 does not fit; 19 ones and one −1
/// reach [−7, 133]: refused.
#[test]
fn the_bound_is_checked_on_the_exact_range_not_the_l1_norm() {
    let file = |weights: Vec<i64>| {
        let mut f = TensorFile::default();
        let scalar = |v: f64| fhe_nn::tensors::Tensor::float(vec![], vec![v]);
        f.tensors.insert("layers.0.scale".into(), scalar(1.0));
        f.tensors.insert(
            "layers.1.weight".into(),
            fhe_nn::tensors::Tensor::int(vec![1, 20], weights),
        );
        f.tensors
            .insert("layers.1.weight_scale".into(), scalar(1.0));
        f.tensors.insert(
            "layers.1.bias".into(),
            fhe_nn::tensors::Tensor::float(vec![1], vec![0.0]),
        );
        f
    };
    let balanced: Vec<i64> = (0..20).map(|i| if i < 10 { 1 } else { -1 }).collect();
    let model = QuantModel::from_tensors(Ten::architecture(), &file(balanced)).unwrap();
    let all = fhe_nn::ndarray::Array2::from_elem((1, 20), 7.0);
    assert_eq!(model.predict_clear(all.view()).unwrap()[(0, 0)], 0.0);
    let mut lopsided = vec![1i64; 19];
    lopsided.push(-1);
    match QuantModel::from_tensors(Ten::architecture(), &file(lopsided)) {
        Err(LoadError::AccumulatorBoundBroken {
            min, max, bound, ..
        }) => {
            assert_eq!((min, max, bound), (-7, 133, 127));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}
