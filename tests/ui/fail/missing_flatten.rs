fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantConv2d(1, 2, 3, w = 3, input = (4, 4)), ReLU,
                             QuantIdentity(3), QuantLinear(8, 10, w = 3)];
}
