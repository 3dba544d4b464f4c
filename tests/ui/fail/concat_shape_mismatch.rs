fn main() {
    // A stride-2 branch halves the image: its channels cannot be stacked on the input's.
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantConv2d(1, 4, 3, w = 3, input = (8, 8)), ReLU,
                             QuantIdentity(3), Fork,
                             QuantConv2d(4, 4, 2, stride = 2, w = 3), Concat(3),
                             ReLU, QuantIdentity(3), Flatten, QuantLinear(180, 10, w = 3)];
}
