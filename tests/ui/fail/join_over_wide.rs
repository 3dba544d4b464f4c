fn main() {
    // The branch's accumulator is too wide for the lookup into the shared quantizer.
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantLinear(64, 64, w = 3), ReLU,
                             QuantIdentity(8), Fork, QuantLinear(64, 64, w = 8), Add(3),
                             ReLU, QuantIdentity(3), QuantLinear(64, 10, w = 3)];
}
