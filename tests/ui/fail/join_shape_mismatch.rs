fn main() {
    // The branch changes the channel count, so it cannot be added back to its input.
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantConv2d(1, 4, 3, w = 3, input = (8, 8)), ReLU,
                             QuantIdentity(3), Fork,
                             QuantConv2d(4, 8, 3, padding = 1, w = 3), Add(3),
                             ReLU, QuantIdentity(3), Flatten, QuantLinear(288, 10, w = 3)];
}
