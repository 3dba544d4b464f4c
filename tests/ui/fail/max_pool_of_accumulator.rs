fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantConv2d(1, 4, 3, w = 3, input = (8, 8)),
                             MaxPool2d(2), QuantIdentity(3), Flatten, QuantLinear(36, 10, w = 3)];
}
