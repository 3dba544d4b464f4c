// Three independent mistakes in one network are reported in one compile.
fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                             QuantLinear(100, 10, w = 3), QuantIdentity(20)];
}
