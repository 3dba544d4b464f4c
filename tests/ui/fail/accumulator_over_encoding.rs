// Even with `round`, the accumulator must fit the 32-bit encoding.
fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(16), QuantLinear(100000, 16, w = 16, round = 8), ReLU,
                             QuantIdentity(3), QuantLinear(16, 10, w = 3)];
}
