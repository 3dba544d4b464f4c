// A typed model's per-sample calls take exactly the declared number of inputs.
fhe_nn::fhe_net! {
    struct Small<QuantIdentity(3), QuantLinear(64, 10, w = 3)>
}

fn main() {
    let model = Small::load("weights.safetensors").unwrap();
    let _ = model.predict(&[0.0; 63]);
}
