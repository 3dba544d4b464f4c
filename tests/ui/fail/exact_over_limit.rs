// An `exact` lookup of an 11-bit accumulator exceeds the exact-lookup limit.
fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantLinear(64, 30, w = 3, exact), ReLU,
                             QuantIdentity(3), QuantLinear(30, 10, w = 3)];
}
