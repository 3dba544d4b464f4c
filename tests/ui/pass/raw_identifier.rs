// A raw identifier as the network's name, and two networks whose names differ only by case.
fhe_nn::fhe_net! {
    pub struct r#Net<QuantIdentity(3), QuantLinear(4, 2, w = 3)>
}

fhe_nn::fhe_net! {
    pub struct NET<QuantIdentity(3), QuantLinear(4, 3, w = 3)>
}

fn main() {
    assert_eq!(Net::OUTPUTS, 2);
    assert_eq!(NET::OUTPUTS, 3);
}
