//! Why a network is rejected: each error with its numbers, how they were computed, and a fix.

use std::fmt;

use super::limits::{MAX_ACCUMULATOR_BITS, MAX_EXACT_LOOKUP_BITS, MAX_LOOKUP_BITS};
use super::range::Shape;

/// Why a network is rejected.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchError {
    /// The offending layer (`None`: the network as a whole).
    pub layer: Option<usize>,
    /// The offending option of that layer, if one is to blame.
    pub option: Option<&'static str>,
    /// What is wrong, with the numbers.
    pub kind: ArchErrorKind,
}

/// The kinds of [`ArchError`].
#[derive(Clone, Debug, PartialEq)]
pub enum ArchErrorKind {
    EmptyNetwork,
    NoWeightedLayer,
    TrailingQuantizer,
    PaddingTooLarge {
        padding: usize,
    },
    BitsOutOfRange {
        what: &'static str,
        bits: u32,
        min: u32,
        max: u32,
    },
    ZeroSize {
        what: &'static str,
    },
    ActiveOutOfRange {
        active: usize,
        fan_in: usize,
    },
    AccNotTighter {
        acc: u32,
        worst: String,
        bits: u32,
    },
    FeatureMismatch {
        expected: usize,
        found: usize,
    },
    ChannelMismatch {
        expected: usize,
        found: usize,
    },
    InputSizeMismatch {
        declared: (usize, usize),
        found: (usize, usize),
    },
    ImageTooSmall {
        size: (usize, usize),
        window: usize,
        padding: usize,
    },
    NeedsFlatten {
        shape: Shape,
    },
    NeedsImage {
        layer: &'static str,
        features: usize,
    },
    MissingInputShape,
    MissingQuantIdentity {
        layer: &'static str,
        found: String,
    },
    PoolAfterActivation,
    LookupTooWide {
        derivation: String,
        bits: u32,
        fix: String,
    },
    ExactOverLimit {
        derivation: String,
        bits: u32,
        fix: String,
    },
    RoundWiderThanAccumulator {
        round: u32,
        derivation: String,
        bits: u32,
    },
    RoundWithoutLookup,
    AccumulatorTooWide {
        derivation: String,
        bits: u32,
    },
    NeedsEncrypted {
        layer: &'static str,
        found: String,
    },
    JoinWithoutFork {
        layer: &'static str,
    },
    UnjoinedFork,
    JoinShapeMismatch {
        layer: &'static str,
        fork: Shape,
        found: Shape,
    },
    MaxPoolTooWide {
        bits: u32,
        packed: u32,
    },
    OutputNotWeighted {
        layer: &'static str,
    },
    ProductTooWide {
        bits: u32,
    },
}

impl fmt::Display for ArchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ArchErrorKind::*;
        match &self.kind {
            EmptyNetwork => write!(
                f,
                "empty network\n= help: declare layers, e.g. `QuantIdentity(3), QuantLinear(64, 10, w = 3)`"
            ),
            TrailingQuantizer => write!(
                f,
                "a quantizer after the last weighted layer has nothing to feed: the outputs are decrypted and de-quantized on the client\n= help: remove this QuantIdentity (activations after the last weighted layer run on the client)"
            ),
            PaddingTooLarge { padding } => write!(
                f,
                "padding = {padding} makes the image wider than {} pixels\n= help: lower padding",
                super::limits::MAX_IMAGE_SIDE
            ),
            NoWeightedLayer => write!(
                f,
                "the network has no QuantLinear or QuantConv2d layer: nothing would run under encryption\n= help: add a weighted layer"
            ),
            BitsOutOfRange { what, bits, min, max } => write!(
                f,
                "{what} of {} is out of range: it must be between {min} and {max}", count(*bits as u64, "bit")
            ),
            ZeroSize { what } => write!(f, "{what} must be at least 1"),
            AccNotTighter { acc, worst, bits } => write!(
                f,
                "`acc = {acc}` is no tighter than the worst case {worst} ({bits} bits): the bound promises nothing\n= help: drop `acc`, or declare fewer than {bits} bits"
            ),
            ActiveOutOfRange { active, fan_in } => write!(
                f,
                "active = {active} is out of range: each output sums {fan_in} inputs, so it must be between 1 and {fan_in}"
            ),
            FeatureMismatch { expected, found } => write!(
                f,
                "shape mismatch: this layer takes {} but the previous layer gives {found}\n= help: change the input size to {found}", count(*expected as u64, "input feature")
            ),
            ChannelMismatch { expected, found } => write!(
                f,
                "shape mismatch: this convolution takes {} but the previous layer gives {found}\n= help: change in_channels to {found}", count(*expected as u64, "input channel")
            ),
            InputSizeMismatch { declared, found } => write!(
                f,
                "shape mismatch: input = ({}, {}) is declared but the previous layer gives {}×{} images\n= help: remove `input` or set it to ({}, {})",
                declared.0, declared.1, found.0, found.1, found.0, found.1
            ),
            ImageTooSmall { size, window, padding } => write!(
                f,
                "shape mismatch: a {}×{} image (padding {padding}) is smaller than the {window}×{window} window",
                size.0, size.1
            ),
            NeedsFlatten { shape } => write!(
                f,
                "shape mismatch: QuantLinear takes a feature vector but the previous layer gives a {shape} image\n= help: add `Flatten` before this layer"
            ),
            NeedsImage { layer, features } => write!(
                f,
                "shape mismatch: {layer} takes an image but the previous layer gives {}", count(*features as u64, "feature")
            ),
            MissingInputShape => write!(
                f,
                "the input image size of this convolution is unknown\n= help: declare it, e.g. `input = (28, 28)`"
            ),
            MissingQuantIdentity { layer, found } => write!(
                f,
                "{layer} is fed by an unquantized tensor ({found})\n= help: add `QuantIdentity(bits)` before this layer"
            ),
            PoolAfterActivation => write!(
                f,
                "AvgPool2d after an activation needs its input quantized\n= help: add `QuantIdentity(bits)` before this layer, or pool before the activation"
            ),
            LookupTooWide { derivation, bits, fix } => write!(
                f,
                "the lookup after this layer reads a {bits}-bit accumulator, over the {MAX_LOOKUP_BITS}-bit limit for a lookup without rounding\n= note: {derivation}\n= help: {fix}"
            ),
            ExactOverLimit { derivation, bits, fix } => write!(
                f,
                "`exact` lookup of a {bits}-bit accumulator, over the {MAX_EXACT_LOOKUP_BITS}-bit limit of exact lookups\n= note: {derivation}\n= help: {fix}"
            ),
            RoundWiderThanAccumulator { round, derivation, bits } => write!(
                f,
                "round = {round} is wider than the {bits}-bit accumulator it rounds\n= note: {derivation}\n= help: use round = {} or less, or remove `round`",
                bits.saturating_sub(1).max(1)
            ),
            RoundWithoutLookup => write!(
                f,
                "`round` has no lookup to act on: this layer's output is the network's output\n= help: remove `round`"
            ),
            AccumulatorTooWide { derivation, bits } => write!(
                f,
                "{bits}-bit accumulator, over the {MAX_ACCUMULATOR_BITS}-bit limit of the encoding\n= note: {derivation}\n= help: lower w, set `active`, or lower the input bits"
            ),
            NeedsEncrypted { layer, found } => write!(
                f,
                "{layer} works on an encrypted quantized tensor, but it is fed {found}\n= help: place it after a `QuantIdentity` that follows a weighted layer"
            ),
            JoinWithoutFork { layer } => write!(
                f,
                "{layer} has no open `Fork` to join\n= help: add `Fork` where the skip connection starts"
            ),
            UnjoinedFork => write!(
                f,
                "this `Fork` is never joined\n= help: add `Add(bits)` where the branches meet, or remove `Fork`"
            ),
            JoinShapeMismatch { layer, fork, found } => write!(
                f,
                "shape mismatch: {layer} joins the `Fork`'s {fork} tensor with a {found} one\n= help: {}",
                if *layer == "Concat" {
                    "concatenate images of one height and width, or two feature vectors"
                } else {
                    "make the branch end with the shape it started with"
                }
            ),
            MaxPoolTooWide { bits, packed } => write!(
                f,
                "MaxPool2d compares {bits}-bit values with {packed}-bit lookups (two values packed in one), over the {MAX_EXACT_LOOKUP_BITS}-bit limit of exact lookups\n= help: quantize to at most {} bits before MaxPool2d",
                MAX_EXACT_LOOKUP_BITS / 2
            ),
            ProductTooWide { bits } => write!(
                f,
                "Mul squares the sum and the difference of its two sides, {bits}-bit values, over the {MAX_EXACT_LOOKUP_BITS}-bit limit of exact lookups\n= help: use a narrower shared quantizer, e.g. `Mul({})`",
                MAX_EXACT_LOOKUP_BITS / 2
            ),
            OutputNotWeighted { layer } => write!(
                f,
                "the network's output comes from {layer}, not from a weighted layer\n= help: add `QuantIdentity(bits)` and a weighted layer after it"
            ),
        }
    }
}

impl std::error::Error for ArchError {}

/// `n` and the noun, plural unless `n` is 1.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
