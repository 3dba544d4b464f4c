fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantLinear(64, 10, w = 3), ReLU,
                             QuantIdentity(3), Fork, QuantLinear(10, 10, w = 3), Add(3)];
}
