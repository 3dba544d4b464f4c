// Sizes at the limit of what the macro accepts are rejected with errors, not overflows.
fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantConv2d(2, 1, 4294967295, w = 3, input = (1, 1)), ReLU,
                             QuantIdentity(3), Flatten, QuantLinear(1, 10, w = 3)];
    let _ = fhe_nn::fhe_net![QuantIdentity(1, unsigned), QuantLinear(2000000000, 10, w = 2), ReLU,
                             QuantIdentity(3), QuantLinear(10, 10, w = 2000)];
}
