fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(8), QuantLinear(784, 16, w = 5, round = 12), ReLU,
                             QuantIdentity(3), QuantLinear(16, 10, w = 3)];
}
