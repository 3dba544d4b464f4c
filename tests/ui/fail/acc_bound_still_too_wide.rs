// 784 signed 8-bit inputs and 5-bit weights give a 22-bit worst case; a declared bound of
// 20 bits still leaves the lookup over the 16-bit limit, and the error says where the 20
// bits come from.
fn main() {
    let _ = fhe_nn::fhe_net!(<QuantIdentity(8), QuantLinear(784, 16, w = 5, acc = 20), ReLU,
                              QuantIdentity(3), QuantLinear(16, 10, w = 3)>);
}
