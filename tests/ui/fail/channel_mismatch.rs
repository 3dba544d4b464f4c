fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantConv2d(1, 4, 3, w = 3, input = (8, 8)), ReLU,
                             QuantIdentity(3), QuantConv2d(3, 8, 3, w = 3), ReLU,
                             QuantIdentity(3), Flatten, QuantLinear(128, 10, w = 3)];
}
