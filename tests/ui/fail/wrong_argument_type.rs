fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3.5), QuantLinear(64, -30, w = true), LeakyReLU(fast),
                             QuantIdentity(3), QuantLinear(30, 10, w = 3, bias = 1)];
}
