//! Reads and checks the tensors of each layer, naming the layer and tensor at fault.

use super::stage::{Connectivity, WeightedStage};
use super::{stage_input_features, Quantizer, Segment};
use crate::arch::analysis::IntRange;
use crate::arch::layer::{Conv2d, Layer};
use crate::architecture::Architecture;
use crate::error::LoadError;
use crate::tensors::{Tensor, TensorFile, Values};

/// The scales a model may declare: any quantizer's in practice, and far enough from the
/// float limits that a scale times an accumulator (at most 2^62) times another scale stays
/// finite.
const SCALE_RANGE: (f64, f64) = (1e-30, 1e30);

/// Reads the tensors of a file for an architecture, remembering which were used.
/// Entries of exact lookup tables a model may hold (8 bytes each: 1 GiB), checked before
/// any table is built.
pub const MAX_TABLE_ENTRIES: u64 = 1 << 27;

pub(super) struct Reader<'a> {
    arch: &'a Architecture,
    file: &'a TensorFile,
    used: Vec<String>,
    /// Table entries the weighted stages read so far will need.
    table_entries: u64,
}

impl<'a> Reader<'a> {
    pub(super) fn new(arch: &'a Architecture, file: &'a TensorFile) -> Reader<'a> {
        Reader {
            arch,
            file,
            table_entries: 0,
            used: Vec::new(),
        }
    }

    pub(super) fn describe(&self, layer: usize) -> String {
        self.arch.layers()[layer].to_string()
    }

    pub(super) fn unsupported(&self, layer: usize, what: String) -> LoadError {
        LoadError::Unsupported {
            layer: layer + 1,
            description: self.describe(layer),
            what,
        }
    }

    pub(super) fn tensor(
        &mut self,
        layer: usize,
        suffix: &str,
    ) -> Result<(String, &Tensor), LoadError> {
        let name = format!("layers.{layer}.{suffix}");
        match self.file.tensors.get(&name) {
            Some(t) if t.len() != t.shape.iter().product::<usize>() => {
                Err(LoadError::ShapeMismatch {
                    expected: format!("{} values for its shape", t.shape.iter().product::<usize>()),
                    found: t.shape.clone(),
                    tensor: name,
                })
            }
            Some(t) => {
                self.used.push(name.clone());
                Ok((name, t))
            }
            None => Err(LoadError::MissingTensor {
                layer: layer + 1,
                description: self.describe(layer),
                tensor: name,
            }),
        }
    }

    /// A float tensor of `len` values (a scalar is broadcast when `broadcast`).
    pub(super) fn per_channel(
        &mut self,
        layer: usize,
        suffix: &str,
        len: usize,
        broadcast: bool,
    ) -> Result<Vec<f64>, LoadError> {
        let positive = suffix.ends_with("scale");
        let (name, t) = self.tensor(layer, suffix)?;
        let values = float_values(&name, t)?;
        let ok_shape = t.shape == [len]
            || (broadcast && (t.shape.is_empty() || t.shape == [1]) && values.len() == 1);
        if !ok_shape || values.is_empty() {
            let expected = if broadcast {
                format!("[] , [1] or [{len}]")
            } else {
                format!("[{len}]")
            };
            return Err(LoadError::ShapeMismatch {
                tensor: name,
                expected,
                found: t.shape.clone(),
            });
        }
        if positive {
            if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| **v <= 0.0) {
                return Err(LoadError::NonPositiveScale {
                    tensor: name,
                    value,
                    index,
                });
            }
            if let Some((index, &value)) = values
                .iter()
                .enumerate()
                .find(|(_, v)| !(SCALE_RANGE.0..=SCALE_RANGE.1).contains(*v))
            {
                return Err(LoadError::ScaleOutOfRange {
                    tensor: name,
                    value,
                    index,
                });
            }
        }
        Ok(if values.len() == 1 {
            vec![values[0]; len]
        } else {
            values
        })
    }

    /// An integer tensor of the given shape, within `bits` signed narrow range.
    pub(super) fn int_tensor(
        &mut self,
        layer: usize,
        suffix: &str,
        shapes: &[&[usize]],
        bits: Option<u32>,
    ) -> Result<Vec<i64>, LoadError> {
        let (name, t) = self.tensor(layer, suffix)?;
        if !shapes.contains(&t.shape.as_slice()) {
            let expected = shapes
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(LoadError::ShapeMismatch {
                tensor: name,
                expected,
                found: t.shape.clone(),
            });
        }
        let values: Vec<i64> = match &t.values {
            Values::Int(v) => v.clone(),
            Values::Float(v) => {
                let v2 = float_values(&name, t)?;
                if let Some((index, &value)) = v2
                    .iter()
                    .enumerate()
                    .find(|(_, x)| x.fract() != 0.0 || x.abs() > 2f64.powi(52))
                {
                    return Err(LoadError::NotInteger {
                        tensor: name,
                        value,
                        index,
                    });
                }
                v.iter().map(|&x| x as i64).collect()
            }
        };
        if let Some(bits) = bits {
            let max = crate::arch::analysis::weight_max(bits);
            if let Some((index, &value)) = values
                .iter()
                .enumerate()
                .find(|(_, v)| v.unsigned_abs() > max as u64)
            {
                return Err(LoadError::WeightOutOfRange {
                    tensor: name,
                    bits,
                    value,
                    index,
                    min: -max,
                    max,
                });
            }
        }
        Ok(values)
    }

    /// The weighted stage of declared layer `i`, reading inputs in `input_range` quantized
    /// with scale `input_scale`.
    pub(super) fn weighted_stage(
        &mut self,
        i: usize,
        input_range: IntRange,
        input_scale: f64,
    ) -> Result<WeightedStage, LoadError> {
        let arch = self.arch;
        let in_features = stage_input_features(arch, i);
        let window = arch.window(i);
        let (connectivity, groups, weights, options) = match arch.layers()[i] {
            Layer::QuantLinear {
                in_features,
                out_features,
                options,
            } => {
                let weights = self.int_tensor(
                    i,
                    "weight",
                    &[&[out_features, in_features]],
                    Some(options.weight_bits),
                )?;
                (Connectivity::Dense, out_features, weights, Some(options))
            }
            Layer::QuantConv2d(Conv2d {
                in_channels,
                out_channels,
                kernel,
                options,
                ..
            }) => {
                let shapes: [&[usize]; 2] = [
                    &[
                        out_channels,
                        in_channels.saturating_mul(kernel).saturating_mul(kernel),
                    ],
                    &[out_channels, in_channels, kernel, kernel],
                ];
                let weights = self.int_tensor(i, "weight", &shapes, Some(options.weight_bits))?;
                let window = window.expect("the analysis sizes every convolution");
                (
                    Connectivity::Conv(window),
                    out_channels,
                    weights,
                    Some(options),
                )
            }
            Layer::AvgPool2d { .. } => {
                let window = window.expect("the analysis sizes every pooling");
                let taps = window.channels.saturating_mul(window.taps());
                (
                    Connectivity::Pool(window),
                    window.channels,
                    vec![1; taps],
                    None,
                )
            }
            ref other => unreachable!("{} is not a weighted layer", other.name()),
        };
        if let Some(acc) = options.and_then(|o| o.acc) {
            check_declared_accumulator(i, acc, &weights, groups, input_range)?;
        }
        let mut stage =
            WeightedStage::new(i, in_features, connectivity, groups, weights, input_range);
        // Each group's exact table spans its accumulator range: bounded before it is built.
        let entries = stage
            .exact_ranges
            .iter()
            .map(|r| r.max.abs_diff(r.min).saturating_add(1))
            .fold(0u64, u64::saturating_add);
        self.table_entries = self.table_entries.saturating_add(entries);
        if self.table_entries > MAX_TABLE_ENTRIES {
            return Err(LoadError::TablesTooLarge {
                layer: i + 1,
                entries: self.table_entries,
                limit: MAX_TABLE_ENTRIES,
            });
        }
        match options {
            Some(options) => {
                let scales = self.per_channel(i, "weight_scale", groups, true)?;
                stage.unit = scales.iter().map(|s| s * input_scale).collect();
                stage.bias = if options.bias {
                    self.per_channel(i, "bias", groups, false)?
                } else {
                    vec![0.0; groups]
                };
            }
            None => {
                let window = (stage.weights.len() / groups.max(1)) as f64;
                stage.unit = vec![input_scale / window; groups];
                stage.bias = vec![0.0; groups];
            }
        }
        stage.worst_case = arch.analysis()[i]
            .range
            .expect("weighted layers have an accumulator range");
        Ok(stage)
    }

    /// A quantizer's scale, and its zero point if present (it must be 0).
    pub(super) fn quantizer(
        &mut self,
        layer: usize,
        bits: u32,
        signed: bool,
    ) -> Result<Quantizer, LoadError> {
        let scale = self.per_channel(layer, "scale", 1, true)?[0];
        let zp_name = format!("layers.{layer}.zero_point");
        if let Some(t) = self.file.tensors.get(&zp_name) {
            self.used.push(zp_name.clone());
            let values = float_values(&zp_name, t)?;
            if let Some(&value) = values.iter().find(|v| **v != 0.0) {
                return Err(LoadError::ZeroPoint {
                    tensor: zp_name,
                    value,
                });
            }
        }
        Ok(Quantizer {
            scale,
            bits,
            signed,
        })
    }

    /// Activations and the last quantizer of declared layers `start..end` (no weighted layer).
    pub(super) fn segment(&mut self, start: usize, end: usize) -> Result<Segment, LoadError> {
        let mut segment = Segment {
            activations: Vec::new(),
            quantizer: None,
        };
        for i in start..end {
            match self.arch.layers()[i] {
                Layer::Activation(a) => {
                    if let Some((q_layer, _)) = &segment.quantizer {
                        return Err(self.unsupported(
                            *q_layer,
                            "an activation after a quantizer, before the next weighted layer"
                                .into(),
                        ));
                    }
                    segment.activations.push(a);
                }
                Layer::QuantIdentity { bits, signed } => {
                    if segment.quantizer.is_some() {
                        return Err(self.unsupported(i, "two quantizers in a row".into()));
                    }
                    segment.quantizer = Some((i, self.quantizer(i, bits, signed)?));
                }
                Layer::Flatten => {}
                ref other => return Err(self.unsupported(i, other.name().to_string())),
            }
        }
        Ok(segment)
    }

    pub(super) fn check_unused(&self) -> Result<(), LoadError> {
        match self.file.tensors.keys().find(|k| !self.used.contains(k)) {
            Some(extra) => Err(LoadError::UnexpectedTensor {
                tensor: extra.clone(),
            }),
            None => Ok(()),
        }
    }
}

fn float_values(name: &str, t: &Tensor) -> Result<Vec<f64>, LoadError> {
    let values: Vec<f64> = match &t.values {
        Values::Float(v) => v.clone(),
        Values::Int(v) => v.iter().map(|&x| x as f64).collect(),
    };
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(LoadError::NonFinite {
            tensor: name.to_string(),
            value,
            index,
        });
    }
    Ok(values)
}

/// Holds declared layer `i`'s weights (`groups` rows, one per output channel) to its
/// declared accumulator width: every accumulator a channel can compute from inputs in
/// `input` (its exact range, `Σ_{w>0} w·x_max + Σ_{w<0} w·x_min` and the mirror) lies
/// within `±(2^(acc−1) − 1)`, the range the analysis assumed. The trainer's ℓ1 projection
/// (`‖w‖₁ · max|x| ≤ 2^(acc−1) − 1`) implies it; weights whose exact range fits load even
/// where their ℓ1 norm would not. The bias folds into the table after the layer, never into
/// the accumulator.
fn check_declared_accumulator(
    i: usize,
    acc: u32,
    weights: &[i64],
    groups: usize,
    input: IntRange,
) -> Result<(), LoadError> {
    let bound = crate::arch::analysis::declared_accumulator(acc);
    let fan_in = weights.len() / groups.max(1);
    for (channel, row) in weights.chunks(fan_in.max(1)).enumerate() {
        let range = crate::arch::analysis::exact_accumulator(row.iter().copied(), input);
        if range.min < bound.min || range.max > bound.max {
            return Err(LoadError::AccumulatorBoundBroken {
                layer: i + 1,
                channel,
                min: range.min,
                max: range.max,
                acc,
                bound: bound.max as u64,
            });
        }
    }
    Ok(())
}
