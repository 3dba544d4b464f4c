fn main() {
    let _ = fhe_nn::fhe_net!(<>);
}
