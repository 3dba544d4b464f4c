//! The pure-Rust QAT trainer: reproduces the shipped model, deterministic, clear errors.

mod common;

use common::Seed;
use fhe_nn::datasets::{digits, digits_seed_weights, DIGITS_SEED_TRAINING as DIGITS_TRAINING};
use fhe_nn::tensors::TensorFile;
use fhe_nn::train::{train, TrainConfig, TrainError};
use fhe_nn::{argmax_rows, fhe_net, QuantModel};

fn accuracy(model: &QuantModel, data: &fhe_nn::datasets::Split) -> f64 {
    let pred = argmax_rows(model.predict_clear(data.images.view()).unwrap().view());
    pred.iter()
        .zip(data.labels.iter())
        .filter(|(p, l)| p == l)
        .count() as f64
        / pred.len() as f64
}

#[test]
fn trainer_reproduces_the_shipped_models_accuracy_deterministically() {
    let data = digits().unwrap();
    let labels = data.train.labels.to_vec();
    let start = std::time::Instant::now();
    let weights = train(
        Seed::architecture(),
        data.train.images.view(),
        &labels,
        DIGITS_TRAINING,
        |_| {},
    )
    .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let trained = QuantModel::from_tensors(Seed::architecture(), &weights).unwrap();
    let shipped =
        QuantModel::from_tensors(Seed::architecture(), &digits_seed_weights().unwrap()).unwrap();
    let (a, b) = (
        accuracy(&trained, &data.test),
        accuracy(&shipped, &data.test),
    );
    eprintln!("trained in {seconds:.1} s: test accuracy {a:.4}, shipped model {b:.4}");
    assert!(a >= 0.94, "test accuracy {a}");
    assert!((a - b).abs() <= 0.01, "retrained {a} vs shipped {b}");

    // Same seed, same weights.
    let again = train(
        Seed::architecture(),
        data.train.images.view(),
        &labels,
        DIGITS_TRAINING,
        |_| {},
    )
    .unwrap();
    assert_eq!(again, weights);
    // The exported file round-trips through safetensors.
    assert_eq!(
        TensorFile::from_safetensors(&weights.to_safetensors().unwrap()).unwrap(),
        weights
    );
}

#[test]
fn trainer_reports_progress_and_refuses_bad_input() {
    let data = digits().unwrap();
    let x = data.train.images.view();
    let labels = data.train.labels.to_vec();
    let config = TrainConfig {
        epochs: 2,
        ..TrainConfig::default()
    };
    let mut epochs = Vec::new();
    train(Seed::architecture(), x, &labels, config.clone(), |s| {
        epochs.push(s.epoch)
    })
    .unwrap();
    assert_eq!(epochs, vec![0, 1]);

    let err = train(
        Seed::architecture(),
        x,
        &labels[1..],
        config.clone(),
        |_| {},
    )
    .unwrap_err();
    assert_eq!(
        err,
        TrainError::LabelCount {
            inputs: 1437,
            labels: 1436
        }
    );
    let mut bad = labels.clone();
    bad[7] = 10;
    assert_eq!(
        train(Seed::architecture(), x, &bad, config.clone(), |_| {}).unwrap_err(),
        TrainError::Label {
            sample: 7,
            label: 10,
            classes: 10
        }
    );
    // Non-finite inputs (all NaN, or one infinity) are refused by name, never trained on.
    let nan = ndarray::Array2::from_elem(data.train.images.dim(), f64::NAN);
    assert!(matches!(
        train(
            Seed::architecture(),
            nan.view(),
            &labels,
            config.clone(),
            |_| {}
        )
        .unwrap_err(),
        TrainError::NonFinite {
            sample: 0,
            feature: 0,
            ..
        }
    ));
    let mut one_inf = data.train.images.clone();
    one_inf[(5, 9)] = f64::INFINITY;
    assert!(matches!(
        train(
            Seed::architecture(),
            one_inf.view(),
            &labels,
            config.clone(),
            |_| {}
        )
        .unwrap_err(),
        TrainError::NonFinite {
            sample: 5,
            feature: 9,
            ..
        }
    ));
    assert!(matches!(
        fhe_nn::train::Trainer::from_float(
            Seed::architecture(),
            &fhe_nn::tensors::TensorFile::default(),
            nan.view()
        ),
        Err(TrainError::NonFinite { .. })
    ));
    let narrow = data.train.images.slice(ndarray::s![.., ..32]);
    assert_eq!(
        train(
            Seed::architecture(),
            narrow,
            &labels,
            config.clone(),
            |_| {}
        )
        .unwrap_err(),
        TrainError::Width {
            expected: 64,
            found: 32
        }
    );
    // Pooling an unquantized convolution: the runtime pools quantized images only.
    let unquantized = fhe_net![
        QuantIdentity(3),
        QuantConv2d(1, 2, 3, w = 3, input = (8, 8)),
        AvgPool2d(2),
        QuantIdentity(3),
        Flatten,
        QuantLinear(18, 10, w = 3)
    ];
    assert!(matches!(
        train(&unquantized, x, &labels, config, |_| {}).unwrap_err(),
        TrainError::Unsupported { layer: 3, .. }
    ));
}

#[test]
fn the_trainer_trains_average_pooling_as_the_runtime_runs_it() {
    use fhe_nn::train::Trainer;
    let pooled = fhe_net![
        QuantIdentity(3),
        QuantConv2d(1, 4, 3, w = 3, input = (8, 8)),
        ReLU,
        QuantIdentity(3),
        AvgPool2d(2),
        QuantIdentity(3),
        Flatten,
        QuantLinear(36, 10, w = 3)
    ];
    let data = digits().unwrap();
    let labels = data.train.labels.to_vec();
    let config = TrainConfig {
        epochs: 15,
        ..DIGITS_TRAINING
    };
    let mut trainer = Trainer::new(&pooled, data.train.images.view(), config.clone()).unwrap();
    for epoch in 0..config.epochs {
        trainer.epoch(data.train.images.view(), &labels, epoch);
    }
    let weights = trainer.export();
    // The pooling has no weights of its own; its output quantizer has a scale.
    assert!(!weights.tensors.contains_key("layers.4.weight"));
    assert!(weights.tensors.contains_key("layers.5.scale"));
    let model = QuantModel::from_tensors(&pooled, &weights).unwrap();
    let runtime = accuracy(&model, &data.test);
    let test_labels = data.test.labels.to_vec();
    let trained = trainer.accuracy(data.test.images.view(), &test_labels);
    eprintln!("pooled CNN: runtime Clear {runtime:.4}, trainer {trained:.4}");
    assert!(runtime >= 0.75, "pooled CNN test accuracy {runtime}");
    // The trainer's fake-quantized forward pass is the runtime's integer Clear.
    assert!(
        (runtime - trained).abs() <= 0.02,
        "runtime Clear {runtime} vs trainer {trained}"
    );
}

#[test]
fn post_training_quantization_of_float_weights() {
    use fhe_nn::tensors::{Tensor, Values};
    use fhe_nn::train::Trainer;
    let data = digits().unwrap();
    let labels = data.train.labels.to_vec();
    // Float weights to start from: an 8-bit network trained here, de-quantized.
    // (Too wide for FHE without rounding, which the macro insists on: `round = 8`.)
    let wide = fhe_net![
        QuantIdentity(8),
        QuantLinear(64, 30, w = 8, round = 8),
        ReLU,
        QuantIdentity(8),
        QuantLinear(30, 30, w = 8, round = 8),
        ReLU,
        QuantIdentity(8),
        QuantLinear(30, 10, w = 8)
    ];
    let wide_weights = train(
        &wide,
        data.train.images.view(),
        &labels,
        DIGITS_TRAINING,
        |_| {},
    )
    .unwrap();
    let mut floats = TensorFile::default();
    for layer in [1, 4, 7] {
        let w = &wide_weights.tensors[&format!("layers.{layer}.weight")];
        let Values::Float(scale) =
            &wide_weights.tensors[&format!("layers.{layer}.weight_scale")].values
        else {
            panic!()
        };
        let Values::Int(ints) = &w.values else {
            panic!()
        };
        floats.tensors.insert(
            format!("layers.{layer}.weight"),
            Tensor::float(
                w.shape.clone(),
                ints.iter().map(|&i| i as f64 * scale[0]).collect(),
            ),
        );
        let bias = wide_weights.tensors[&format!("layers.{layer}.bias")].clone();
        floats.tensors.insert(format!("layers.{layer}.bias"), bias);
    }
    let float_model = QuantModel::from_tensors(&wide, &wide_weights).unwrap();

    // Quantize them to the 3-bit seed network, calibrated on the training images.
    let quantized = Trainer::from_float(Seed::architecture(), &floats, data.train.images.view())
        .unwrap()
        .export();
    let model = QuantModel::from_tensors(Seed::architecture(), &quantized).unwrap();
    let (ptq, wide_acc) = (
        accuracy(&model, &data.test),
        accuracy(&float_model, &data.test),
    );
    eprintln!("post-training quantization: 8-bit model {wide_acc:.4}, 3-bit PTQ {ptq:.4}");
    assert!(ptq >= 0.80, "3-bit PTQ accuracy {ptq}");

    let mut missing = floats.clone();
    missing.tensors.remove("layers.4.bias");
    assert!(
        matches!(Trainer::from_float(Seed::architecture(), &missing, data.train.images.view()), Err(TrainError::Tensor { name, .. }) if name == "layers.4.bias")
    );
    let mut extra = floats.clone();
    extra
        .tensors
        .insert("layers.2.weight".into(), Tensor::float(vec![1], vec![0.0]));
    assert!(matches!(
        Trainer::from_float(Seed::architecture(), &extra, data.train.images.view()),
        Err(TrainError::Tensor { .. })
    ));
}

#[test]
fn the_trainer_trains_a_convolutional_network_that_loads_and_runs() {
    use fhe_nn::datasets::{Cnn, DIGITS_CNN_TRAINING};
    let data = digits().unwrap();
    let labels = data.train.labels.to_vec();
    let config = TrainConfig {
        epochs: 20,
        ..DIGITS_CNN_TRAINING
    };
    let weights = train(
        Cnn::architecture(),
        data.train.images.view(),
        &labels,
        config.clone(),
        |_| {},
    )
    .unwrap();
    let model = QuantModel::from_tensors(Cnn::architecture(), &weights).unwrap();
    let a = accuracy(&model, &data.test);
    assert!(a >= 0.85, "CNN test accuracy {a} after 20 epochs");
    // Deterministic: the same seed gives the same weights.
    let again = train(
        Cnn::architecture(),
        data.train.images.view(),
        &labels,
        config,
        |_| {},
    )
    .unwrap();
    assert_eq!(
        again.to_safetensors().unwrap(),
        weights.to_safetensors().unwrap()
    );
}

#[test]
fn batch_norm_folds_into_the_exported_tables() {
    use fhe_nn::datasets::{Cnn, DIGITS_CNN_TRAINING};
    use fhe_nn::train::Trainer;
    let data = digits().unwrap();
    let labels = data.train.labels.to_vec();
    let config = TrainConfig {
        epochs: 15,
        batch_norm: true,
        ..DIGITS_CNN_TRAINING
    };
    let mut trainer = Trainer::new(
        Cnn::architecture(),
        data.train.images.view(),
        config.clone(),
    )
    .unwrap();
    for epoch in 0..config.epochs {
        trainer.epoch(data.train.images.view(), &labels, epoch);
    }
    let weights = trainer.export();
    // Folded per channel: the three convolutions get one scale per output channel.
    for (layer, channels) in [(1, 8), (4, 16), (7, 32)] {
        let scale = &weights.tensors[&format!("layers.{layer}.weight_scale")];
        assert_eq!(scale.shape, vec![channels], "layer {layer}");
    }
    let model = QuantModel::from_tensors(Cnn::architecture(), &weights).unwrap();
    let runtime = accuracy(&model, &data.test);
    let trained = trainer.accuracy(
        data.test.images.view(),
        data.test.labels.as_slice().unwrap(),
    );
    eprintln!("CNN with batch norm: runtime Clear {runtime:.4}, trainer {trained:.4}");
    assert!(runtime >= 0.85, "test accuracy {runtime}");
    // Folding changes nothing the trainer computes at evaluation (running statistics).
    assert!(
        (runtime - trained).abs() <= 0.02,
        "runtime Clear {runtime} vs trainer {trained}"
    );
    // A layer without a bias cannot absorb the normalization's shift.
    let no_bias = fhe_net![
        QuantIdentity(3),
        QuantLinear(64, 20, w = 3, bias = false),
        ReLU,
        QuantIdentity(3),
        QuantLinear(20, 10, w = 3)
    ];
    assert_eq!(
        Trainer::new(&no_bias, data.train.images.view(), config)
            .err()
            .unwrap(),
        TrainError::BatchNormWithoutBias { layer: 2 }
    );
}

#[test]
fn the_trainer_trains_a_residual_network_with_max_pooling_as_the_runtime_runs_it() {
    use fhe_nn::datasets::{Resnet, DIGITS_RESNET_TRAINING};
    use fhe_nn::train::Trainer;
    let data = digits().unwrap();
    let labels = data.train.labels.to_vec();
    let config = TrainConfig {
        epochs: 15,
        ..DIGITS_RESNET_TRAINING
    };
    let arch = Resnet::architecture();
    let mut trainer = Trainer::new(arch, data.train.images.view(), config.clone()).unwrap();
    for epoch in 0..config.epochs {
        trainer.epoch(data.train.images.view(), &labels, epoch);
    }
    let weights = trainer.export();
    // The join's shared quantizer has the scale of the block's input (the fork's quantizer,
    // `DIGITS_RESNET_TRAINING.joins_at_fork_scale`): the fork's side costs no lookup; the
    // fork and the max pool have no tensors.
    assert!(config.joins_at_fork_scale);
    let scalar = |name: &str| match &weights.tensors[name].values {
        fhe_nn::tensors::Values::Float(v) => v[0],
        fhe_nn::tensors::Values::Int(v) => v[0] as f64,
    };
    assert_eq!(scalar("layers.9.scale"), scalar("layers.3.scale"));
    assert!(!weights.tensors.keys().any(|k| k.starts_with("layers.4.")));
    assert!(!weights.tensors.keys().any(|k| k.starts_with("layers.12.")));
    let model = QuantModel::from_tensors(arch, &weights).unwrap();
    // And the max pool compares the add's accumulators, its ReLU and quantizer run once per
    // window (36 lookups instead of 144).
    assert_eq!(model.lookups(), arch.lookups() - 144 - 108);
    let runtime = accuracy(&model, &data.test);
    let test_labels = data.test.labels.to_vec();
    let trained = trainer.accuracy(data.test.images.view(), &test_labels);
    eprintln!("residual network: runtime Clear {runtime:.4}, trainer {trained:.4}");
    assert!(runtime >= 0.75, "residual network test accuracy {runtime}");
    // The trainer's fake-quantized forward pass (fork, shared quantizer, add, max pool) is
    // the runtime's integer Clear.
    assert!(
        (runtime - trained).abs() <= 0.02,
        "runtime Clear {runtime} vs trainer {trained}"
    );
}
