// The second linear layer reads the ReLU's real-valued output directly.
fn main() {
    let _ = fhe_nn::fhe_net![QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                             QuantLinear(30, 10, w = 3)];
}
