fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantConv2d(1, 2, 3, w = 3, input = (6, 6)), ReLU,
                             AvgPool2d(2), QuantIdentity(3), Flatten, QuantLinear(8, 10, w = 3)];
}
