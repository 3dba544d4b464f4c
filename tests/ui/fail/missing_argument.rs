fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity, QuantLinear(64, 30), Threshold(0.5),
                             QuantIdentity(3), QuantLinear(30, 10, w = 3)];
}
