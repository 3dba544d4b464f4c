//! The card network compiles and its generated constants and report carry the numbers
//! computed by hand.

use fhe_nn::arch::analysis::{IntRange, Rounding};
use fhe_nn::{fhe_net, Network};

fhe_net! {
    /// The card network: 784 pixels, 128 hidden, 10 classes, 3-bit everything.
    pub struct Card<QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(128, 10, w = 3)>
}

#[test]
fn card_network_numbers_by_hand() {
    // Layer 2: 784 inputs in [-4, 3] (signed 3-bit), weights in [-3, 3]: |w·x| <= 12, so the
    // accumulator lies in ±784·12 = ±9408, which needs 15 bits signed (2^14 = 16384).
    assert_eq!(Card::RANGES[1], Some((-9408, 9408)));
    assert_eq!(Card::ACCUMULATOR_BITS[1], Some(15));
    // ReLU then a signed 3-bit quantizer: [0, 3]. Layer 5: ±128·9 = ±1152, 12 bits.
    assert_eq!(Card::RANGES[3], Some((0, 3)));
    assert_eq!(Card::ACCUMULATOR_BITS[4], Some(12));
    assert_eq!(Card::RANGES[4], Some((-1152, 1152)));
    // One lookup per hidden neuron; 15 bits is under 16 but over the exact limit of 8, so
    // the runtime rounds it.
    assert_eq!(Card::LOOKUPS, 128);
    assert_eq!(Card::MAX_LOOKUP_BITS, 8);
    assert_eq!(Card::MAX_INTEGER_BITS, 15);
    assert_eq!(Card::OUTPUTS, 10);
    let lookup = Card::architecture().analysis()[3].lookup.unwrap();
    assert_eq!(
        (lookup.count, lookup.input_bits, lookup.rounding),
        (128, 15, Rounding::Runtime)
    );
    assert_eq!(
        Card::architecture().analysis()[1].range,
        Some(IntRange::new(-9408, 9408))
    );
}

#[test]
fn expression_form_equals_named_form() {
    let expr = fhe_net!(<QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                         QuantIdentity(3), QuantLinear(128, 10, w = 3)>);
    assert_eq!(expr.layers(), <Card as Network>::architecture().layers());
    assert_eq!(expr.analysis(), Card::architecture().analysis());
    assert_eq!(expr.summary(), Card::architecture().summary());
}

#[test]
fn report_shows_ranges_widths_and_lookups() {
    let report = Card::report().to_string();
    assert!(report.contains("network `Card`: 5 layers, 128 lookups per inference (128 rounded), widest lookup 8 bits, widest integer 15 bits, 10 outputs"), "{report}");
    let line = report
        .lines()
        .find(|l| l.contains("QuantLinear(784, 128, w = 3)"))
        .unwrap();
    assert!(
        line.contains("[-9408, 9408]") && line.contains(" 15 "),
        "{line}"
    );
    let lookup_line = report.lines().find(|l| l.contains("128 × 15-bit")).unwrap();
    assert!(
        lookup_line.contains("rounded to 8 bits (runtime)"),
        "{lookup_line}"
    );
}

#[test]
fn runtime_checks_agree_with_the_macro() {
    let rebuilt =
        fhe_nn::Architecture::new("Card", Card::architecture().layers().to_vec()).unwrap();
    assert_eq!(rebuilt.analysis(), Card::architecture().analysis());
    assert_eq!(rebuilt.summary(), Card::architecture().summary());
}

#[test]
fn messages_use_the_right_numbers_and_words() {
    use fhe_nn::arch::layer::{Conv2d, Layer, WeightOptions};
    use fhe_nn::Architecture;
    let options = WeightOptions {
        weight_bits: 3,
        bias: true,
        active: None,
        round: None,
        exact: false,
        acc: None,
    };
    let linear = |i, o| Layer::QuantLinear {
        in_features: i,
        out_features: o,
        options,
    };
    let q = |bits| Layer::QuantIdentity { bits, signed: true };
    // A huge padding is refused by name, never reported as a saturated size.
    let conv = Layer::QuantConv2d(Conv2d {
        in_channels: 1,
        out_channels: 2,
        kernel: 3,
        stride: 1,
        padding: usize::MAX / 4,
        input: Some((8, 8)),
        options,
    });
    let err = Architecture::new("padded", vec![q(3), conv, Layer::Flatten, linear(128, 10)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("padding = 4611686018427387903 makes the image"),
        "{err}"
    );
    assert!(!err.contains("18446744073709551615"), "{err}");
    // Singular nouns.
    let err = Architecture::new("one", vec![q(3), linear(64, 1), q(3), linear(2, 3)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("takes 2 input features but the previous layer gives 1"),
        "{err}"
    );
    let err = Architecture::new("one", vec![q(3), linear(1, 2), q(3), linear(3, 3)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("takes 3 input features"), "{err}");
    // A trailing quantizer is a compile-time (and run-time) error with a fix.
    let err = Architecture::new("trailing", vec![q(3), linear(64, 10), q(3)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a quantizer after the last weighted layer"),
        "{err}"
    );
}
