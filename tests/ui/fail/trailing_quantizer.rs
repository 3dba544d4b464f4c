// A quantizer after the last weighted layer would feed nothing: refused with a fix.
fn main() {
    let _ = fhe_nn::fhe_net!(<QuantIdentity(3), QuantLinear(64, 10, w = 3), QuantIdentity(3)>);
}
