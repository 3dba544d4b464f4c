// A small convolutional network with every structural layer.
use fhe_nn::fhe_net;

fhe_net! {
    pub struct Conv<QuantIdentity(2, unsigned),
                    QuantConv2d(1, 4, 3, padding = 1, w = 3, input = (8, 8)), ReLU, QuantIdentity(3),
                    AvgPool2d(2), QuantIdentity(3),
                    QuantConv2d(4, 8, 3, stride = 2, w = 3), LeakyReLU(0.1), QuantIdentity(3),
                    Flatten, QuantLinear(8, 10, w = 3)>
}

fn main() {
    assert_eq!(Conv::LOOKUPS, 4 * 8 * 8 + 4 * 4 * 4 + 8);
    assert_eq!(Conv::ACCUMULATOR_BITS[1], Some(8));
}
