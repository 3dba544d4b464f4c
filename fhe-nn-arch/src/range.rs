//! Integer ranges, bit-widths and tensor shapes: the arithmetic every check is made of.

use std::fmt;

/// An inclusive integer range `[min, max]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntRange {
    pub min: i64,
    pub max: i64,
}

impl IntRange {
    /// The range `[min, max]`.
    pub const fn new(min: i64, max: i64) -> IntRange {
        IntRange { min, max }
    }

    /// Whether the range holds negative values.
    pub fn is_signed(&self) -> bool {
        self.min < 0
    }

    /// Bits needed to hold every value of the range: unsigned bits when `min >= 0`, two's
    /// complement bits otherwise (as Concrete ML counts them). `[0, 0]` needs 1 bit.
    pub fn bits(&self) -> u32 {
        if self.min >= 0 {
            unsigned_bits(self.max as u64)
        } else {
            // Smallest b with -2^(b-1) <= min and max <= 2^(b-1) - 1.
            let magnitude = (-(self.min as i128) - 1).max(self.max.max(0) as i128) as u128;
            129 - magnitude.leading_zeros().min(128)
        }
    }

    /// The range widened to hold 0 (zero padding).
    pub fn with_zero(&self) -> IntRange {
        IntRange::new(self.min.min(0), self.max.max(0))
    }

    /// The range of a sum of `terms` values of this range.
    pub fn sum_of(&self, terms: usize) -> IntRange {
        IntRange::new(
            saturate(self.min as i128 * terms as i128),
            saturate(self.max as i128 * terms as i128),
        )
    }
}

impl fmt::Display for IntRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.min, self.max)
    }
}

fn saturate(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Bits of an unsigned value (at least 1).
pub fn unsigned_bits(max: u64) -> u32 {
    (64 - max.leading_zeros()).max(1)
}

/// Largest magnitude of a signed narrow-range weight of `bits` bits: `2^(bits-1) - 1`.
pub fn weight_max(bits: u32) -> i64 {
    (1i64 << (bits - 1)) - 1
}

/// Integer range of a quantizer's output. Brevitas quantizers have zero point 0, so a
/// non-negative input gives non-negative integers even from a signed quantizer.
pub fn quantizer_range(bits: u32, signed: bool, input_nonnegative: bool) -> IntRange {
    if signed {
        let half = 1i64 << (bits - 1);
        IntRange::new(if input_nonnegative { 0 } else { -half }, half - 1)
    } else {
        IntRange::new(0, (1i64 << bits) - 1)
    }
}

/// Worst-case accumulator range of a neuron summing `terms` products of an input in `input`
/// with any signed narrow-range weight of `weight_bits` bits.
pub fn worst_case_accumulator(input: IntRange, weight_bits: u32, terms: usize) -> IntRange {
    let largest_input = (input.min as i128).abs().max((input.max as i128).abs());
    let term = weight_max(weight_bits) as i128 * largest_input;
    IntRange::new(
        saturate(-term * terms as i128),
        saturate(term * terms as i128),
    )
}

/// The accumulator range a declared `acc` bound allows: `±(2^(acc−1) − 1)`, what
/// `‖w‖₁ · max|x| ≤ 2^(acc−1) − 1` guarantees.
pub fn declared_accumulator(acc: u32) -> IntRange {
    let max = (1i64 << (acc.clamp(1, 63) - 1)) - 1;
    IntRange::new(-max, max)
}

/// Exact accumulator range of one neuron with the given integer weights, inputs in `input`:
/// `max = Σ_{w>0} w·x_max + Σ_{w<0} w·x_min`, and the mirror for `min`.
pub fn exact_accumulator(weights: impl IntoIterator<Item = i64>, input: IntRange) -> IntRange {
    let (mut lo, mut hi) = (0i128, 0i128);
    for w in weights {
        let w = w as i128;
        let (a, b) = (w * input.min as i128, w * input.max as i128);
        lo += a.min(b);
        hi += a.max(b);
    }
    IntRange::new(saturate(lo), saturate(hi))
}

/// Shape of a tensor between layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Not fixed yet (before the first weighted layer).
    Unknown,
    /// A feature vector.
    Features(usize),
    /// An image `(channels, height, width)`.
    Image {
        channels: usize,
        height: usize,
        width: usize,
    },
}

impl Shape {
    /// Number of values, when known.
    pub fn elements(&self) -> Option<usize> {
        match *self {
            Shape::Unknown => None,
            Shape::Features(n) => Some(n),
            Shape::Image {
                channels,
                height,
                width,
            } => Some(channels.saturating_mul(height).saturating_mul(width)),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Unknown => write!(f, "?"),
            Shape::Features(n) => write!(f, "{n}"),
            Shape::Image {
                channels,
                height,
                width,
            } => write!(f, "{channels}×{height}×{width}"),
        }
    }
}
