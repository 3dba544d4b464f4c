//! The analysis of each layer kind: how it changes the tensor's value and shape, which
//! lookups it needs, and what it rejects.

use super::{
    quantizer_range, weighted_input, Analyzer, Flow, Lookup, Rounding, Step, Value,
    MAX_DECLARED_BITS,
};
use crate::activation::Activation;
use crate::error::ArchErrorKind;
use crate::layer::{Conv2d, WeightOptions};
use crate::range::Shape;

/// The accumulator width a weighted layer leaves in `flow`.
fn accumulator_bits(flow: &Flow) -> Option<u32> {
    match flow.value {
        Value::Acc { range, .. } => Some(range.bits()),
        _ => None,
    }
}

/// An activation: applied on the client to real values, folded into the next lookup on
/// encrypted ones.
pub(super) fn activation(flow: &mut Flow, i: usize, act: Activation) -> Step {
    flow.value = match flow.value {
        Value::Real { nonneg } => Value::Real {
            nonneg: act.output_nonnegative(nonneg),
        },
        Value::Quant { range } if !flow.encrypted => Value::Real {
            nonneg: act.output_nonnegative(range.min >= 0),
        },
        Value::Quant { range } => Value::Acc {
            range,
            source: i,
            pending: Some(act.output_nonnegative(range.min >= 0)),
        },
        Value::Acc {
            range,
            source,
            pending,
        } => Value::Acc {
            range,
            source,
            pending: Some(act.output_nonnegative(pending.unwrap_or(range.min >= 0))),
        },
        Value::Unknown => Value::Unknown,
    };
    Step::default()
}

/// `Flatten`: an image becomes features.
pub(super) fn flatten(flow: &mut Flow) -> Step {
    if let Shape::Image {
        channels,
        height,
        width,
    } = flow.shape
    {
        flow.shape = Shape::Features(channels.saturating_mul(height).saturating_mul(width));
    }
    Step::default()
}

impl Analyzer<'_> {
    /// `QuantIdentity`: quantizes the input, or closes a pending accumulator with a lookup.
    pub(super) fn quant_identity(
        &mut self,
        i: usize,
        flow: &mut Flow,
        bits: u32,
        signed: bool,
    ) -> Step {
        let valid = self.check_bits(
            i,
            None,
            "activation width",
            bits,
            if signed { 2 } else { 1 },
            MAX_DECLARED_BITS,
        );
        let count = flow.shape.elements().unwrap_or(0);
        let lookup = match flow.value {
            Value::Acc { range, source, .. } => self.lookup(source, range, count),
            // Re-quantization of an encrypted tensor: one lookup of its width.
            Value::Quant { range } if flow.encrypted => Some(Lookup {
                count,
                input_bits: range.bits(),
                precision: range.bits(),
                rounding: Rounding::Exact,
                source: i,
                unbounded_bits: None,
            }),
            _ => None,
        };
        let nonneg = flow.value.nonnegative();
        flow.value = if valid {
            Value::Quant {
                range: quantizer_range(bits, signed, nonneg),
            }
        } else {
            Value::Unknown
        };
        Step {
            accumulator_bits: None,
            lookup,
            fork_lookup: None,
            product_lookup: None,
        }
    }

    /// `QuantLinear`: features in, an accumulator per output feature.
    pub(super) fn linear(
        &mut self,
        i: usize,
        flow: &mut Flow,
        in_features: usize,
        out_features: usize,
        options: &WeightOptions,
    ) -> Step {
        let sizes_ok = self.check_nonzero(i, "in_features", in_features)
            & self.check_nonzero(i, "out_features", out_features);
        let weights_ok = self.check_weight_options(i, options, in_features);
        match flow.shape {
            Shape::Features(n) if n != in_features => self.error(
                i,
                None,
                ArchErrorKind::FeatureMismatch {
                    expected: in_features,
                    found: n,
                },
            ),
            shape @ Shape::Image { .. } => {
                self.error(i, None, ArchErrorKind::NeedsFlatten { shape })
            }
            _ => {}
        }
        flow.value = weighted_input(self, i, flow.value, weights_ok && sizes_ok, flow.encrypted);
        flow.shape = Shape::Features(out_features);
        flow.encrypted = true;
        Step {
            accumulator_bits: accumulator_bits(flow),
            lookup: None,
            fork_lookup: None,
            product_lookup: None,
        }
    }

    /// `QuantConv2d`: an image in, an accumulator per output pixel and channel.
    pub(super) fn conv2d(&mut self, i: usize, flow: &mut Flow, conv: &Conv2d) -> Step {
        let options = &conv.options;
        let sizes_ok = self.check_nonzero(i, "in_channels", conv.in_channels)
            & self.check_nonzero(i, "out_channels", conv.out_channels)
            & self.check_nonzero(i, "kernel", conv.kernel)
            & self.check_nonzero(i, "stride", conv.stride);
        let weights_ok = self.check_weight_options(i, options, conv.fan_in());
        let size = self.conv_input_size(i, flow.shape, conv);
        flow.shape = match size {
            Some(size) if sizes_ok => match conv.output_shape(size) {
                Ok(shape) => shape,
                Err(kind) => {
                    let option =
                        matches!(kind, ArchErrorKind::PaddingTooLarge { .. }).then_some("padding");
                    self.error(i, option, kind);
                    Shape::Unknown
                }
            },
            _ => Shape::Unknown,
        };
        // Zero padding adds zeros to the input's range.
        let padded = match flow.value {
            Value::Quant { range } if conv.padding > 0 => Value::Quant {
                range: range.with_zero(),
            },
            other => other,
        };
        flow.value = weighted_input(self, i, padded, weights_ok && sizes_ok, flow.encrypted);
        flow.encrypted = true;
        Step {
            accumulator_bits: accumulator_bits(flow),
            lookup: None,
            fork_lookup: None,
            product_lookup: None,
        }
    }

    /// The input size of a convolution: the incoming image's (checked against the declared
    /// channels and size), or the declared one for the network's input.
    fn conv_input_size(&mut self, i: usize, shape: Shape, conv: &Conv2d) -> Option<(usize, usize)> {
        match (shape, conv.input) {
            (
                Shape::Image {
                    channels,
                    height,
                    width,
                },
                declared,
            ) => {
                if channels != conv.in_channels {
                    self.error(
                        i,
                        None,
                        ArchErrorKind::ChannelMismatch {
                            expected: conv.in_channels,
                            found: channels,
                        },
                    );
                }
                if let Some(d) = declared.filter(|&d| d != (height, width)) {
                    self.error(
                        i,
                        Some("input"),
                        ArchErrorKind::InputSizeMismatch {
                            declared: d,
                            found: (height, width),
                        },
                    );
                }
                Some((height, width))
            }
            (Shape::Features(n), _) => {
                self.error(
                    i,
                    None,
                    ArchErrorKind::NeedsImage {
                        layer: "QuantConv2d",
                        features: n,
                    },
                );
                None
            }
            (Shape::Unknown, Some(d)) => Some(d),
            (Shape::Unknown, None) => {
                self.error(i, None, ArchErrorKind::MissingInputShape);
                None
            }
        }
    }

    /// The image a `kernel × kernel` pooling (stride `kernel`, as PyTorch floors) makes of
    /// `shape`, or `Unknown` after the error that forbids it.
    pub(super) fn pooled_shape(
        &mut self,
        i: usize,
        shape: Shape,
        kernel: usize,
        layer: &'static str,
    ) -> Shape {
        let ok = self.check_nonzero(i, "kernel", kernel);
        match shape {
            Shape::Image {
                channels,
                height,
                width,
            } if ok => {
                if height < kernel || width < kernel {
                    self.error(
                        i,
                        None,
                        ArchErrorKind::ImageTooSmall {
                            size: (height, width),
                            window: kernel,
                            padding: 0,
                        },
                    );
                    Shape::Unknown
                } else {
                    Shape::Image {
                        channels,
                        height: height / kernel,
                        width: width / kernel,
                    }
                }
            }
            Shape::Features(n) => {
                self.error(i, None, ArchErrorKind::NeedsImage { layer, features: n });
                Shape::Unknown
            }
            _ => Shape::Unknown,
        }
    }

    /// `AvgPool2d`: sums windows of a quantized image (the division is folded into the
    /// next lookup's table).
    pub(super) fn avg_pool(&mut self, i: usize, flow: &mut Flow, kernel: usize) -> Step {
        flow.shape = self.pooled_shape(i, flow.shape, kernel, "AvgPool2d");
        // Saturating: a kernel beyond the image was refused above, and a saturated range is
        // refused as too wide.
        let window = kernel.saturating_mul(kernel);
        flow.value = match flow.value {
            Value::Real { nonneg } => Value::Real { nonneg },
            Value::Quant { range } => Value::Acc {
                range: range.sum_of(window),
                source: i,
                pending: None,
            },
            Value::Acc {
                range,
                source,
                pending: None,
            } => Value::Acc {
                range: range.sum_of(window),
                source,
                pending: None,
            },
            Value::Acc { .. } => {
                self.error(i, None, ArchErrorKind::PoolAfterActivation);
                Value::Unknown
            }
            Value::Unknown => Value::Unknown,
        };
        Step {
            accumulator_bits: accumulator_bits(flow),
            lookup: None,
            fork_lookup: None,
            product_lookup: None,
        }
    }
}
