// The named form generates a type; doc comments and attributes pass through, and the
// analysis is usable in constant expressions.
use fhe_nn::{fhe_net, Network};

fhe_net! {
    /// The seed network of Concrete ML's documentation.
    #[allow(dead_code)]
    pub struct Seed<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 10, w = 3)>
}

fhe_net! {
    struct Pruned<QuantIdentity(3, unsigned), QuantLinear(784, 64, w = 4, active = 40, round = 6), Sigmoid,
                  QuantIdentity(4), QuantLinear(64, 10, w = 4, bias = false)>
}

const _: () = assert!(Seed::LOOKUPS == 60);
const _: () = assert!(Pruned::MAX_LOOKUP_BITS == 6);

fn main() {
    assert_eq!(Seed::architecture().name(), "Seed");
    assert_eq!(<Pruned as Network>::architecture().lookups(), 64);
    println!("{}", Seed::report());
}
