// An accumulator bound of 1 bit (or beyond 32) is no accumulator fhe-nn can run.
fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantLinear(784, 128, w = 3, acc = 1), ReLU,
                             QuantIdentity(3), QuantLinear(128, 10, w = 3, acc = 40)];
}
