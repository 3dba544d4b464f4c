fn main() {
    // The input is not encrypted yet when it is forked.
    let _ = fhe_nn::fhe_net![QuantIdentity(3), Fork, QuantLinear(64, 64, w = 3), Add(3),
                             ReLU, QuantIdentity(3), QuantLinear(64, 10, w = 3)];
}
