// 784 signed 8-bit inputs and 5-bit weights give a 22-bit worst case, over the 16-bit lookup
// limit; weights trained under `acc = 14` make the lookup fit.
fhe_nn::fhe_net! {
    struct Bounded<QuantIdentity(8), QuantLinear(784, 16, w = 5, acc = 14), ReLU,
                   QuantIdentity(3), QuantLinear(16, 10, w = 3)>
}

fn main() {
    assert_eq!(Bounded::ACCUMULATOR_BITS[1], Some(14));
    assert_eq!(Bounded::RANGES[1], Some((-8191, 8191)));
}
