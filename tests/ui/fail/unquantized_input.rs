// The first layer reads the real-valued input.
fn main() {
    let _ = fhe_nn::fhe_net![QuantLinear(64, 10, w = 3)];
}
