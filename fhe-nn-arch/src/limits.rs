//! The named limits every check refers to, defined once.

/// Widest table lookup that can run without rounding: 16 bits, Concrete's own limit.
pub const MAX_LOOKUP_BITS: u32 = 16;

/// Widest lookup the runtime evaluates exactly: the largest precision for which it has
/// vetted 128-bit-secure TFHE parameters. Between this and [`MAX_LOOKUP_BITS`] the runtime
/// rounds the accumulator approximately to this precision, unless the layer says `exact`.
pub const MAX_EXACT_LOOKUP_BITS: u32 = 8;

/// Widest accumulator the encoding holds (one LWE ciphertext on the 64-bit torus, with a
/// padding bit and room for noise), even when `round = r` reads only its top bits.
pub const MAX_ACCUMULATOR_BITS: u32 = 32;

/// Largest image side (after padding) the analysis accepts.
pub const MAX_IMAGE_SIDE: usize = 1 << 16;

/// Widest quantizer or weight a layer may declare.
pub const MAX_DECLARED_BITS: u32 = 16;
