// 784 signed 8-bit inputs and 5-bit weights: a 22-bit accumulator feeds the ReLU lookup.
fn main() {
    let _ = fhe_nn::fhe_net!(<QuantIdentity(8), QuantLinear(784, 16, w = 5), ReLU,
                              QuantIdentity(3), QuantLinear(16, 10, w = 3)>);
}
