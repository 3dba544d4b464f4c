//! The analysis of the layers that make a network more than a chain: `Fork` and its join
//! (`Add`, `Sub`), and `MaxPool2d`.

use super::{quantizer_range, Analyzer, Flow, Lookup, Rounding, SavedFork, Step, Value};
use crate::error::ArchErrorKind;
use crate::layer::{max_tree_levels, JoinOp, Layer};
use crate::limits::{MAX_DECLARED_BITS, MAX_EXACT_LOOKUP_BITS, MAX_PACKED_JOIN_BITS};
use crate::range::{unsigned_bits, IntRange, Shape};

/// The shape of the join of a `fork`-shaped tensor with a `current`-shaped one, if they
/// can be joined: equal shapes, or for a concatenation equal images but for their channels,
/// or any two feature vectors.
fn joined_shape(op: JoinOp, fork: Shape, current: Shape) -> Option<Shape> {
    match (op, fork, current) {
        (JoinOp::Concat, Shape::Features(a), Shape::Features(b)) => {
            Some(Shape::Features(a.saturating_add(b)))
        }
        (
            JoinOp::Concat,
            Shape::Image {
                channels: a,
                height,
                width,
            },
            Shape::Image {
                channels: b,
                height: h,
                width: w,
            },
        ) if (height, width) == (h, w) => Some(Shape::Image {
            channels: a.saturating_add(b),
            height,
            width,
        }),
        (JoinOp::Concat, _, _) => None,
        (_, a, b) if a == b => Some(a),
        _ => None,
    }
}

/// The width of the lookup reading a forked value in `fork` and a re-quantized value in
/// `right` packed in one, if an `op` join reads them so: when that lookup is no wider than
/// the widest the join makes otherwise (its sum's, or a product's squares' and product's,
/// `left` being the fork's values re-quantized), so that packing saves lookups (the
/// fork's side, a product's squares) without widening any (see [`MAX_PACKED_JOIN_BITS`]).
pub fn packed_join_bits(
    op: JoinOp,
    fork: IntRange,
    left: IntRange,
    right: IntRange,
) -> Option<u32> {
    let span = |r: IntRange| (r.max as i128 - r.min as i128 + 1).max(1) as u128;
    let values = span(fork).saturating_mul(span(right));
    let bits = unsigned_bits(values.saturating_sub(1).min(u64::MAX as u128) as u64);
    let unpacked = match op {
        JoinOp::Concat => return None,
        JoinOp::Add | JoinOp::Sub => op.range(left, right).bits(),
        JoinOp::Mul => JoinOp::Add
            .range(left, right)
            .bits()
            .max(JoinOp::Sub.range(left, right).bits())
            .max(op.range(left, right).bits()),
    };
    (bits <= MAX_PACKED_JOIN_BITS && bits <= unpacked).then_some(bits)
}

/// The lookup that re-quantizes an encrypted quantized tensor of `range` (one per value).
fn requantize(count: usize, range: IntRange, source: usize) -> Lookup {
    Lookup {
        count,
        input_bits: range.bits(),
        precision: range.bits(),
        rounding: Rounding::Exact,
        source,
        unbounded_bits: None,
    }
}

/// Bits of the lookups comparing two values of `range` packed in one (`radix · a + b`).
pub(super) fn packed_bits(range: IntRange) -> u32 {
    let radix = (range.max as i128 - range.min as i128 + 1).max(1) as u128;
    unsigned_bits(
        radix
            .saturating_mul(radix)
            .saturating_sub(1)
            .min(u64::MAX as u128) as u64,
    )
}

impl Analyzer<'_> {
    /// How a value that is not an encrypted quantized tensor is named in errors.
    fn describe(&self, value: Value, encrypted: bool) -> String {
        match value {
            Value::Real { .. } if !encrypted => "the real-valued network input".to_string(),
            Value::Real { .. } => "a real-valued tensor".to_string(),
            Value::Quant { .. } => "the quantized network input (not encrypted yet)".to_string(),
            Value::Acc {
                source, pending, ..
            } => format!(
                "the {} of layer {} ({})",
                if pending.is_some() {
                    "activation output"
                } else {
                    "accumulator"
                },
                source + 1,
                self.layers[source].name()
            ),
            Value::Unknown => "an unknown tensor".to_string(),
        }
    }

    /// `Fork`: saves the current tensor, which must be encrypted and quantized.
    pub(super) fn fork(&mut self, i: usize, flow: &mut Flow) -> Step {
        match flow.value {
            Value::Quant { .. } if flow.encrypted => {}
            Value::Unknown => {}
            other => {
                let found = self.describe(other, flow.encrypted);
                self.error(
                    i,
                    None,
                    ArchErrorKind::NeedsEncrypted {
                        layer: "Fork",
                        found,
                    },
                );
            }
        }
        flow.forks.push(SavedFork {
            layer: i,
            value: flow.value,
            shape: flow.shape,
        });
        Step::default()
    }

    /// `Add(bits)` / `Sub(bits)`: both tensors through one shared quantizer (a lookup each),
    /// then a leveled sum whose lookup the next quantizer forms.
    pub(super) fn join(
        &mut self,
        i: usize,
        flow: &mut Flow,
        op: JoinOp,
        bits: u32,
        signed: bool,
    ) -> Step {
        let layer = op.name();
        let valid = self.check_bits(
            i,
            None,
            "activation width",
            bits,
            if signed { 2 } else { 1 },
            MAX_DECLARED_BITS,
        );
        let Some(saved) = flow.forks.pop() else {
            self.error(i, None, ArchErrorKind::JoinWithoutFork { layer });
            flow.value = Value::Unknown;
            return Step::default();
        };
        let shapes_known = saved.shape != Shape::Unknown && flow.shape != Shape::Unknown;
        let joined = joined_shape(op, saved.shape, flow.shape);
        if shapes_known && joined.is_none() {
            self.error(
                i,
                None,
                ArchErrorKind::JoinShapeMismatch {
                    layer,
                    fork: saved.shape,
                    found: flow.shape,
                },
            );
            // Unknown from here: later layers' sizes are not checked against a guess.
            flow.shape = Shape::Unknown;
            flow.value = Value::Unknown;
            return Step::default();
        }
        let count = flow.shape.elements().unwrap_or(0);
        let fork_count = saved.shape.elements().unwrap_or(0);
        flow.shape = joined.unwrap_or(Shape::Unknown);
        // The current tensor's lookup: its accumulator's, or a re-quantization.
        let current = match flow.value {
            Value::Acc { range, source, .. } => self.lookup(source, range, count),
            Value::Quant { range } if flow.encrypted => Some(requantize(count, range, i)),
            Value::Unknown => None,
            other => {
                let found = self.describe(other, flow.encrypted);
                self.error(i, None, ArchErrorKind::NeedsEncrypted { layer, found });
                None
            }
        };
        let sides = (saved.value, flow.value);
        // A small forked tensor joins packed with the current one, without a lookup of its own.
        // Only a valid width has a quantizer range (`Add(0)` or `Add(64)` would overflow it).
        let packed = match saved.value {
            Value::Quant { range } if valid => packed_join_bits(
                op,
                range,
                quantizer_range(bits, signed, sides.0.nonnegative()),
                quantizer_range(bits, signed, sides.1.nonnegative()),
            ),
            _ => None,
        };
        self.packed[i] = packed;
        let fork = match saved.value {
            Value::Quant { range } if packed.is_none() => Some(requantize(fork_count, range, i)),
            _ => None,
        };
        let mut product = None;
        flow.value = match sides {
            (Value::Quant { .. }, Value::Quant { .. } | Value::Acc { .. })
                if valid && current.is_some() =>
            {
                let left = quantizer_range(bits, signed, sides.0.nonnegative());
                let right = quantizer_range(bits, signed, sides.1.nonnegative());
                let range = op.range(left, right);
                match op {
                    JoinOp::Concat => Value::Quant { range },
                    JoinOp::Mul => {
                        // ⌊(a+b)²/4⌋ and ⌊(a−b)²/4⌋, read exactly.
                        let sum = JoinOp::Add.range(left, right);
                        let difference = JoinOp::Sub.range(left, right);
                        let bits = sum.bits().max(difference.bits());
                        if packed.is_some() {
                            Value::Acc {
                                range,
                                source: i,
                                pending: None,
                            }
                        } else if bits > MAX_EXACT_LOOKUP_BITS {
                            self.error(i, None, ArchErrorKind::ProductTooWide { bits });
                            Value::Unknown
                        } else {
                            product = Some(Lookup {
                                count: count.saturating_mul(2),
                                input_bits: bits,
                                precision: bits,
                                rounding: Rounding::Exact,
                                source: i,
                                unbounded_bits: None,
                            });
                            Value::Acc {
                                range,
                                source: i,
                                pending: None,
                            }
                        }
                    }
                    JoinOp::Add | JoinOp::Sub => Value::Acc {
                        range,
                        source: i,
                        pending: None,
                    },
                }
            }
            _ => Value::Unknown,
        };
        Step {
            accumulator_bits: match flow.value {
                Value::Acc { range, .. } => Some(range.bits()),
                _ => None,
            },
            lookup: current,
            fork_lookup: fork,
            product_lookup: product,
        }
    }

    /// `MaxPool2d(kernel)`: every level of the comparison tree but the last is a lookup here;
    /// the last is the next quantizer's (which folds into it).
    pub(super) fn max_pool(&mut self, i: usize, flow: &mut Flow, kernel: usize) -> Step {
        flow.shape = self.pooled_shape(i, flow.shape, kernel, "MaxPool2d");
        let windows = flow.shape.elements().unwrap_or(0);
        let range = match flow.value {
            Value::Quant { range } if flow.encrypted => range,
            Value::Unknown => return Step::default(),
            other => {
                let found = self.describe(other, flow.encrypted);
                self.error(
                    i,
                    None,
                    ArchErrorKind::NeedsEncrypted {
                        layer: "MaxPool2d",
                        found,
                    },
                );
                flow.value = Value::Unknown;
                return Step::default();
            }
        };
        let packed = packed_bits(range);
        if packed > MAX_EXACT_LOOKUP_BITS {
            self.error(
                i,
                None,
                ArchErrorKind::MaxPoolTooWide {
                    bits: range.bits(),
                    packed,
                },
            );
            flow.value = Value::Unknown;
            return Step::default();
        }
        let levels = max_tree_levels(kernel.saturating_mul(kernel));
        if levels.is_empty() || flow.shape == Shape::Unknown {
            return Step::default();
        }
        let inner: usize = levels[..levels.len() - 1].iter().sum();
        // The packed pair `radix · a + b`: its span is radix², its sign the values'.
        let radix = range.max - range.min + 1;
        flow.value = Value::Acc {
            range: IntRange::new(range.min * (radix + 1), range.max * (radix + 1)),
            source: i,
            pending: None,
        };
        Step {
            product_lookup: None,
            accumulator_bits: Some(packed),
            lookup: (inner > 0).then(|| Lookup {
                count: inner.saturating_mul(windows),
                input_bits: packed,
                precision: packed,
                rounding: Rounding::Exact,
                source: i,
                unbounded_bits: None,
            }),
            fork_lookup: None,
        }
    }

    /// The checks on forks and joins once the network is read: every fork joined, and the
    /// output computed by a weighted layer.
    pub(super) fn check_graph(&mut self, flow: &Flow) {
        for saved in &flow.forks {
            self.error(saved.layer, None, ArchErrorKind::UnjoinedFork);
        }
        if let Value::Acc { source, .. } = flow.value {
            if let layer @ (Layer::Join { .. } | Layer::MaxPool2d { .. }) = self.layers[source] {
                self.error(
                    source,
                    None,
                    ArchErrorKind::OutputNotWeighted {
                        layer: layer.name(),
                    },
                );
            }
        }
    }
}
