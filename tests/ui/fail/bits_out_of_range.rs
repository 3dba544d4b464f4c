fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(0), QuantLinear(64, 30, w = 17), ReLU,
                             QuantIdentity(3), QuantLinear(30, 10, w = 1)];
}
