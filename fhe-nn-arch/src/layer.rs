//! The layers a network is declared with (Brevitas/PyTorch names and argument orders).

use super::activation::Activation;
use super::error::ArchErrorKind;
use super::limits::MAX_IMAGE_SIDE;
use super::range::{IntRange, Shape};

/// Options shared by the two weighted layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightOptions {
    /// Signed narrow-range weight width: weights lie in `[-(2^(w-1)-1), 2^(w-1)-1]`.
    pub weight_bits: u32,
    /// Whether the layer has a bias (PyTorch's default: yes). It folds into the lookup table
    /// after the layer, so it never widens the accumulator.
    pub bias: bool,
    /// At most this many non-zero weights per output (pruning bound); `None`: the fan-in.
    pub active: Option<usize>,
    /// The lookup after this layer reads only the top `round` bits of the accumulator.
    pub round: Option<u32>,
    /// The lookup after this layer must be exact: no approximate rounding.
    pub exact: bool,
    /// Declared accumulator width: every output's weights satisfy `‖w‖₁ · max|x| ≤
    /// 2^(acc−1) − 1` (checked when weights load), so its accumulator fits `acc` signed bits
    /// however wide the worst case of `fan-in × max|w| × max|x|` is. `None`: the worst case.
    pub acc: Option<u32>,
}

/// One declared layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    /// Quantizer to `bits`-bit integers (signed by default, as in Brevitas).
    QuantIdentity { bits: u32, signed: bool },
    /// Fully connected layer with integer weights.
    QuantLinear {
        in_features: usize,
        out_features: usize,
        options: WeightOptions,
    },
    /// 2-d convolution with integer weights on a `(channels, height, width)` image.
    QuantConv2d(Conv2d),
    /// Average pooling with a `kernel × kernel` window and stride `kernel` (a sum under FHE;
    /// the division folds into the next lookup).
    AvgPool2d { kernel: usize },
    /// Image to feature vector, row-major `(channel, row, column)`.
    Flatten,
    /// Element-wise activation.
    Activation(Activation),
    /// Saves the current tensor (encrypted and quantized) for a later [`Join`](Layer::Join):
    /// where a skip connection starts.
    Fork,
    /// Joins the tensor saved by the innermost open [`Fork`](Layer::Fork) with the current
    /// one: both pass through one shared quantizer (`QuantIdentity(bits)`, as Brevitas
    /// writes a residual add), then are added, subtracted or multiplied element-wise, or
    /// concatenated (channels of images, features of vectors).
    Join { op: JoinOp, bits: u32, signed: bool },
    /// Max pooling with a `kernel × kernel` window and stride `kernel` (PyTorch's default):
    /// a tree of lookups per window, each comparing two values packed in one.
    MaxPool2d { kernel: usize },
}

/// How a [`Layer::Join`] combines its two tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinOp {
    /// `fork + current`: a leveled sum.
    Add,
    /// `fork − current`: a leveled difference.
    Sub,
    /// `fork · current`, as `⌊(a+b)²/4⌋ − ⌊(a−b)²/4⌋`: two lookups per value.
    Mul,
    /// `fork` then `current`: channels of images (same height and width), or features.
    Concat,
}

impl JoinOp {
    /// Every join, in the order of their encodings.
    pub const ALL: [JoinOp; 4] = [JoinOp::Add, JoinOp::Sub, JoinOp::Mul, JoinOp::Concat];

    /// The DSL name of the join.
    pub fn name(self) -> &'static str {
        match self {
            JoinOp::Add => "Add",
            JoinOp::Sub => "Sub",
            JoinOp::Mul => "Mul",
            JoinOp::Concat => "Concat",
        }
    }

    /// The weight of the current tensor in a sum or difference (the fork's is 1).
    pub fn sign(self) -> i64 {
        match self {
            JoinOp::Sub => -1,
            _ => 1,
        }
    }

    /// The integer range of the join of values in `fork` and `current` (for a
    /// concatenation, the values either side holds).
    pub fn range(self, fork: IntRange, current: IntRange) -> IntRange {
        let (l, r) = (fork, current);
        match self {
            JoinOp::Add => IntRange::new(l.min + r.min, l.max + r.max),
            JoinOp::Sub => IntRange::new(l.min - r.max, l.max - r.min),
            JoinOp::Mul => {
                let products = [l.min * r.min, l.min * r.max, l.max * r.min, l.max * r.max];
                IntRange::new(
                    products.iter().copied().min().unwrap_or(0),
                    products.iter().copied().max().unwrap_or(0),
                )
            }
            JoinOp::Concat => IntRange::new(l.min.min(r.min), l.max.max(r.max)),
        }
    }
}

/// Values per window left after each level of a max-pooling tree over `window` values:
/// each level compares neighbours in pairs (an odd one out is compared with itself), so
/// `[2, 1]` for a 2×2 window; empty for a window of one value.
pub fn max_tree_levels(window: usize) -> Vec<usize> {
    let mut levels = Vec::new();
    let mut n = window;
    while n > 1 {
        n = n.div_ceil(2);
        levels.push(n);
    }
    levels
}

/// A 2-d convolution: `out_channels` filters of `in_channels × kernel × kernel` integer
/// weights, moved by `stride` over the zero-padded image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Input image `(height, width)`, needed when no earlier layer fixes it.
    pub input: Option<(usize, usize)>,
    pub options: WeightOptions,
}

impl Conv2d {
    /// Terms of each output's sum: `in_channels · kernel²` (before `active` applies).
    pub fn fan_in(&self) -> usize {
        self.in_channels
            .saturating_mul(self.kernel)
            .saturating_mul(self.kernel)
    }

    /// The output image for an input of `(height, width)`, or the error that forbids it
    /// (a zero `stride` or `kernel` is the caller's to refuse first).
    pub fn output_shape(&self, (h, w): (usize, usize)) -> Result<Shape, ArchErrorKind> {
        let (k, p) = (self.kernel, self.padding);
        let (ph, pw) = (
            h.saturating_add(p.saturating_mul(2)),
            w.saturating_add(p.saturating_mul(2)),
        );
        if ph.max(pw) > MAX_IMAGE_SIDE {
            return Err(ArchErrorKind::PaddingTooLarge { padding: p });
        }
        if ph < k || pw < k {
            return Err(ArchErrorKind::ImageTooSmall {
                size: (h, w),
                window: k,
                padding: p,
            });
        }
        Ok(Shape::Image {
            channels: self.out_channels,
            height: (ph - k) / self.stride.max(1) + 1,
            width: (pw - k) / self.stride.max(1) + 1,
        })
    }
}

impl Layer {
    /// The DSL name of the layer.
    pub fn name(&self) -> &'static str {
        match self {
            Layer::QuantIdentity { .. } => "QuantIdentity",
            Layer::QuantLinear { .. } => "QuantLinear",
            Layer::QuantConv2d(_) => "QuantConv2d",
            Layer::AvgPool2d { .. } => "AvgPool2d",
            Layer::Flatten => "Flatten",
            Layer::Activation(a) => a.name(),
            Layer::Fork => "Fork",
            Layer::Join { op, .. } => op.name(),
            Layer::MaxPool2d { .. } => "MaxPool2d",
        }
    }

    /// The layer without a declared accumulator bound (`acc`): its structure, which weight
    /// files record and imports compare; the bound is a promise about the weights, checked
    /// when they load.
    pub fn without_declared_bound(&self) -> Layer {
        let mut layer = *self;
        match &mut layer {
            Layer::QuantLinear { options, .. } | Layer::QuantConv2d(Conv2d { options, .. }) => {
                options.acc = None
            }
            _ => {}
        }
        layer
    }

    /// The weight options of a linear or convolution layer.
    pub fn weight_options(&self) -> Option<&WeightOptions> {
        match self {
            Layer::QuantLinear { options, .. } | Layer::QuantConv2d(Conv2d { options, .. }) => {
                Some(options)
            }
            _ => None,
        }
    }

    /// Whether the layer is a weighted sum of its inputs (linear, convolution, average
    /// pooling): where the runtime starts a stage, ending at the next lookup.
    pub fn is_weighted_sum(&self) -> bool {
        self.weight_options().is_some() || matches!(self, Layer::AvgPool2d { .. })
    }

    /// Number of inputs each output of a weighted layer sums (before `active` applies).
    pub fn fan_in(&self) -> Option<usize> {
        match *self {
            Layer::QuantLinear { in_features, .. } => Some(in_features),
            Layer::QuantConv2d(ref conv) => Some(conv.fan_in()),
            _ => None,
        }
    }
}

impl std::fmt::Display for Layer {
    /// The layer as the DSL spells it, e.g. `QuantLinear(784, 128, w = 3, active = 80)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::activation::Activation::*;
        match *self {
            Layer::QuantIdentity { bits, signed } => {
                write!(
                    f,
                    "QuantIdentity({bits}{})",
                    if signed { "" } else { ", unsigned" }
                )
            }
            Layer::QuantLinear {
                in_features,
                out_features,
                ref options,
            } => {
                write!(f, "QuantLinear({in_features}, {out_features}")?;
                write_weight_options(f, options)
            }
            Layer::QuantConv2d(Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                input,
                ref options,
            }) => {
                write!(f, "QuantConv2d({in_channels}, {out_channels}, {kernel}")?;
                if stride != 1 {
                    write!(f, ", stride = {stride}")?;
                }
                if padding != 0 {
                    write!(f, ", padding = {padding}")?;
                }
                if let Some((h, w)) = input {
                    write!(f, ", input = ({h}, {w})")?;
                }
                write_weight_options(f, options)
            }
            Layer::AvgPool2d { kernel } => write!(f, "AvgPool2d({kernel})"),
            Layer::MaxPool2d { kernel } => write!(f, "MaxPool2d({kernel})"),
            Layer::Fork => write!(f, "Fork"),
            Layer::Join { op, bits, signed } => write!(
                f,
                "{}({bits}{})",
                op.name(),
                if signed { "" } else { ", unsigned" }
            ),
            Layer::Flatten => write!(f, "Flatten"),
            Layer::Activation(a) => match a {
                HardTanh { min, max } => write!(f, "HardTanh({min}, {max})"),
                LeakyReLU { slope } => write!(f, "LeakyReLU({slope})"),
                Threshold { threshold, value } => write!(f, "Threshold({threshold}, {value})"),
                ELU { alpha } | CELU { alpha } => write!(f, "{}({alpha})", a.name()),
                Softplus { beta, threshold } => write!(f, "Softplus({beta}, {threshold})"),
                Hardshrink { lambda } | Softshrink { lambda } => {
                    write!(f, "{}({lambda})", a.name())
                }
                _ => write!(f, "{}", a.name()),
            },
        }
    }
}

fn write_weight_options(f: &mut std::fmt::Formatter<'_>, o: &WeightOptions) -> std::fmt::Result {
    write!(f, ", w = {}", o.weight_bits)?;
    if !o.bias {
        write!(f, ", bias = false")?;
    }
    if let Some(k) = o.active {
        write!(f, ", active = {k}")?;
    }
    if let Some(a) = o.acc {
        write!(f, ", acc = {a}")?;
    }
    if let Some(r) = o.round {
        write!(f, ", round = {r}")?;
    }
    if o.exact {
        write!(f, ", exact")?;
    }
    write!(f, ")")
}
