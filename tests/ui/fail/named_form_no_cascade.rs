// An error in the named form is reported once; uses of the generated type do not cascade.
fhe_nn::fhe_net! {
    pub struct Broken<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                      QuantIdentity(3), QuantLinear(31, 10, w = 3)>
}

fn main() {
    let _ = Broken::LOOKUPS + Broken::architecture().lookups();
    println!("{}", Broken::report());
}
