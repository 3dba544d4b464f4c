// 64 inputs in [-4, 3] × 3-bit weights: the worst case is ±768, 11 bits; `acc = 12` promises
// nothing more.
fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantLinear(64, 30, w = 3, acc = 12), ReLU,
                             QuantIdentity(3), QuantLinear(30, 10, w = 3)];
}
