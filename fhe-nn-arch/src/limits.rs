//! The named limits every check refers to, defined once.

/// Widest table lookup that can run without rounding: 16 bits, Concrete's own limit.
pub const MAX_LOOKUP_BITS: u32 = 16;

/// Widest lookup the runtime evaluates exactly: the largest precision for which it has
/// vetted 128-bit-secure TFHE parameters. Between this and [`MAX_LOOKUP_BITS`] the runtime
/// rounds the accumulator approximately to this precision, unless the layer says `exact`.
pub const MAX_EXACT_LOOKUP_BITS: u32 = 8;

/// Widest pair a join reads in one lookup: where the forked tensor's values times the shared
/// quantizer's span fit this many bits (and no more than the join's own lookups would read),
/// an `Add`, `Sub` or `Mul` reads the forked value and the re-quantized current one packed
/// together (`radix · x + v`), so the fork's side needs no lookup of its own (nor a product
/// its squares).
pub const MAX_PACKED_JOIN_BITS: u32 = 6;

/// Widest accumulator the encoding holds (one LWE ciphertext on the 64-bit torus, with a
/// padding bit and room for noise), even when `round = r` reads only its top bits.
pub const MAX_ACCUMULATOR_BITS: u32 = 32;

/// Largest image side (after padding) the analysis accepts.
pub const MAX_IMAGE_SIDE: usize = 1 << 16;

/// Widest quantizer or weight a layer may declare.
pub const MAX_DECLARED_BITS: u32 = 16;
