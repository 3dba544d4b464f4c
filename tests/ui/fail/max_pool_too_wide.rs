fn main() {
    // After ReLU the 6-bit quantizer holds 0..31: two such values packed in one need 10 bits.
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantConv2d(1, 4, 3, w = 3, input = (8, 8)), ReLU,
                             QuantIdentity(6), MaxPool2d(2), QuantIdentity(3),
                             Flatten, QuantLinear(36, 10, w = 3)];
}
