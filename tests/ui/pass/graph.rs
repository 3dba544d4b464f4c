// Residual blocks (nested too), a subtraction and max pooling compile, with the lookups
// they need counted.
fhe_nn::fhe_net! {
    struct TinyResnet<QuantIdentity(3), QuantConv2d(1, 4, 3, w = 3, input = (8, 8)), ReLU,
                      QuantIdentity(3), Fork,
                      QuantConv2d(4, 4, 3, padding = 1, w = 3), ReLU, QuantIdentity(3),
                      QuantConv2d(4, 4, 3, padding = 1, w = 3), Add(3),
                      ReLU, QuantIdentity(3), MaxPool2d(2), QuantIdentity(3),
                      Flatten, QuantLinear(36, 10, w = 3)>
}

fhe_nn::fhe_net! {
    struct Nested<QuantIdentity(3), QuantLinear(64, 32, w = 3), ReLU, QuantIdentity(3, unsigned),
                  Fork, QuantLinear(32, 32, w = 3), ReLU, QuantIdentity(3), Fork,
                  QuantLinear(32, 32, w = 3), Sub(3), Add(3, unsigned), ReLU,
                  QuantIdentity(3), QuantLinear(32, 10, w = 3)>
}

fn main() {
    // 144 per convolution's lookup, 144 for the forked tensor, 144 after the add, and the
    // max pool's 72 + 36.
    assert_eq!(TinyResnet::architecture().lookups(), 144 * 5 + 72 + 36);
    assert!(Nested::architecture().lookups() > 0);
}
