// Both spellings of the card network compile and yield the same checked architecture.
use fhe_nn::fhe_net;

fn main() {
    let angle = fhe_net!(<QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                          QuantIdentity(3), QuantLinear(128, 10, w = 3)>);
    let square = fhe_net![QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                          QuantIdentity(3), QuantLinear(128, 10, w = 3)];
    let braces = fhe_net! { QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU, QuantIdentity(3), QuantLinear(128, 10, w = 3), };
    assert_eq!(angle, square);
    assert_eq!(angle, braces);
    assert_eq!(angle.lookups(), 128);
}
