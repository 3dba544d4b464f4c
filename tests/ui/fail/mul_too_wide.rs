fn main() {
    // Two 8-bit sides: their sum and difference need 9 bits, over the exact limit.
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantLinear(64, 32, w = 3), ReLU,
                             QuantIdentity(8), Fork, QuantLinear(32, 32, w = 3), Mul(8),
                             QuantIdentity(3), QuantLinear(32, 10, w = 3)];
}
