// 4 unsigned 1-bit inputs and 2-bit weights: a 4-bit accumulator cannot be rounded to 6 bits.
fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(1, unsigned), QuantLinear(4, 4, w = 2, round = 6), ReLU,
                             QuantIdentity(3), QuantLinear(4, 2, w = 3)];
}
