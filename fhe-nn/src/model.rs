//! Architecture + weights → an integer model: quantized input, integer weighted sums, and
//! one lookup table per neuron that folds bias, scales, activations and the next quantizer.

use crate::arch::activation::Activation;
use crate::arch::analysis::{exact_accumulator, quantizer_range, IntRange, Rounding, Shape};
use crate::arch::layer::Layer;
use crate::error::LoadError;
use crate::tensors::{Tensor, TensorFile, Values};
use crate::Architecture;

/// Metadata key holding the architecture a weight file was exported for.
pub const ARCHITECTURE_KEY: &str = "fhe_nn.architecture";

/// A quantizer `q = clamp(round_half_even(x / scale), min, max)` (zero point 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Quantizer {
    pub scale: f64,
    pub bits: u32,
    pub signed: bool,
}

impl Quantizer {
    /// The integer range the quantizer can produce.
    pub fn range(&self) -> IntRange {
        quantizer_range(self.bits, self.signed, false)
    }

    /// Quantizes one real value.
    pub fn quantize(&self, x: f64) -> i64 {
        let r = self.range();
        let q = (x / self.scale).round_ties_even();
        q.clamp(r.min as f64, r.max as f64) as i64
    }
}

/// The client-side input stage: real activations, then the first quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct InputStage {
    pub activations: Vec<Activation>,
    pub quantizer: Quantizer,
    pub features: usize,
}

/// How a lookup reads an accumulator. The accumulator, shifted by `offset` to be
/// non-negative, is encoded on `bits` bits (Δ = 2^(63 - bits)); the table has
/// `2^precision()` positions and position `index(acc) = (acc + offset) · 2^-shift`
/// (rounded to nearest when `shift > 0`: the low bits are dropped; when `shift < 0` each
/// accumulator value spans `2^-shift` positions, so noise must move further to change it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccumulatorEncoding {
    /// Width of the encoded accumulator.
    pub bits: u32,
    /// Added so that every accumulator is non-negative, with the margins.
    pub offset: i64,
    /// Low bits dropped (> 0) or spread factor (< 0) between accumulator and position.
    pub shift: i32,
    /// Each value has a whole box of the parameter set: reading it fails only with
    /// probability `p_error`.
    pub exact: bool,
}

impl AccumulatorEncoding {
    /// For accumulators in `range`, read by a lookup with `precision`-bit parameters whose
    /// table has `2^resolution` positions (`log2 N`).
    ///
    /// An accumulator that fits `precision` bits is read exactly: one box of the parameter
    /// set per value. A wider one is spread over (or rounded to) the table's full resolution,
    /// with a margin of half a box of the parameter set at both ends so that noise never
    /// wraps around the negacyclic table; noise then moves the reading by a few positions
    /// near a table step (approximate rounding, predicted by Simulate).
    /// `precision == u32::MAX` reads every accumulator exactly at its own width (Clear only).
    pub fn new(range: IntRange, precision: u32, resolution: u32) -> AccumulatorEncoding {
        let offset = if range.min < 0 { -range.min } else { 0 };
        let span = range.max + offset;
        let needed = crate::arch::analysis::unsigned_bits(span as u64);
        if needed <= precision {
            let bits = if precision == u32::MAX {
                needed
            } else {
                precision
            };
            return AccumulatorEncoding {
                bits,
                offset,
                shift: 0,
                exact: true,
            };
        }
        let resolution = resolution.clamp(precision, 62) as i32;
        let margin = 1i64 << (resolution - precision as i32 - 1).max(0);
        let top = (1i64 << resolution) - 1 - margin;
        // Spread each value over as many positions as fit (shift <= 0), else round.
        let fits = |shift: i32| {
            let e = AccumulatorEncoding {
                bits: (resolution + shift) as u32,
                offset: offset + margin_units(margin, shift),
                shift,
                exact: false,
            };
            (e.index(range.max) <= top).then_some(e)
        };
        let mut shift = 0;
        if fits(0).is_some() {
            while fits(shift - 1).is_some() && resolution + shift > 1 {
                shift -= 1;
            }
        } else {
            while fits(shift).is_none() {
                shift += 1;
            }
        }
        fits(shift).expect("a fitting shift was found")
    }

    /// Bits of the lookup index (log2 of the table positions).
    pub fn precision(&self) -> u32 {
        (self.bits as i32 - self.shift) as u32
    }

    /// The table position of an accumulator value.
    pub fn index(&self, acc: i64) -> i64 {
        let v = acc + self.offset;
        if self.shift >= 0 {
            (v + half(self.shift)) >> self.shift
        } else {
            v << -self.shift
        }
    }

    /// The accumulator value a table position stands for (the nearest one).
    pub fn value(&self, index: i64) -> i64 {
        if self.shift >= 0 {
            (index << self.shift) - self.offset
        } else {
            ((index + half(-self.shift)) >> -self.shift) - self.offset
        }
    }
}

/// The margin of `margin` positions in accumulator units (rounded up).
fn margin_units(margin: i64, shift: i32) -> i64 {
    if shift >= 0 {
        margin << shift
    } else {
        (margin + (1i64 << -shift) - 1) >> -shift
    }
}

/// Half of `2^shift` (0 for no shift): rounding to nearest.
fn half(shift: i32) -> i64 {
    if shift <= 0 {
        0
    } else {
        1i64 << (shift - 1)
    }
}

/// A neuron's table: `values[k - first]` for lookup index `k`.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub first: i64,
    pub values: Vec<i64>,
}

impl Table {
    /// The table entry of lookup index `k` (clamped to the table's span).
    pub fn get(&self, k: i64) -> i64 {
        let i = (k - self.first).clamp(0, self.values.len() as i64 - 1);
        self.values[i as usize]
    }
}

/// The lookup after a weighted layer: one table per neuron, into the next quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct LookupStage {
    /// Declared layer where the lookup forms (its quantizer).
    pub layer: usize,
    pub encoding: AccumulatorEncoding,
    /// How the table reads the accumulator with the current precision.
    pub rounding: Rounding,
    /// What the declaration asked for (compile-time analysis).
    pub declared: Rounding,
    /// The declared `round = r`, or the compile-time precision.
    pub declared_precision: u32,
    pub tables: Vec<Table>,
    /// Range of the produced integers.
    pub output_range: IntRange,
    /// Real functions folded into the table (activations, then the quantizer).
    pub activations: Vec<Activation>,
    pub quantizer: Quantizer,
}

/// How the outputs of a weighted layer connect to its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connectivity {
    /// Every output reads every input; each output is its own group.
    Dense,
    /// A 2-d convolution over `(channels, height, width)` inputs; each output channel is a
    /// group (one kernel, one scale, one bias, one table).
    Conv {
        in_channels: usize,
        in_size: (usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
        out_size: (usize, usize),
    },
    /// Sum pooling (the average's division folds into the next table); each channel is a group.
    Pool {
        in_size: (usize, usize),
        kernel: usize,
        out_size: (usize, usize),
    },
}

/// A weighted layer (fully connected, convolution, or pooling): integer weighted sums.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedStage {
    /// Declared layer index.
    pub layer: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub connectivity: Connectivity,
    /// Outputs sharing weights, scales, ranges and tables (see [`Connectivity`]).
    pub groups: usize,
    /// Weights of each group, `[group][fan_in]`.
    pub weights: Vec<i64>,
    /// Non-zero `(input index, weight)` of each output.
    pub links: Vec<Vec<(usize, i64)>>,
    /// Range of the quantized input.
    pub input_range: IntRange,
    /// Exact accumulator range of each group.
    pub exact_ranges: Vec<IntRange>,
    /// The compile-time worst case.
    pub worst_case: IntRange,
    /// Real value of one accumulator unit per group: input scale × weight scale.
    pub unit: Vec<f64>,
    pub bias: Vec<f64>,
    /// The lookup into the next layer (tables per group); `None` for the output layer.
    pub lookup: Option<LookupStage>,
}

impl WeightedStage {
    fn new(
        layer: usize,
        in_features: usize,
        connectivity: Connectivity,
        groups: usize,
        weights: Vec<i64>,
        input_range: IntRange,
    ) -> WeightedStage {
        let fan_in = weights.len() / groups.max(1);
        let (links, out_features) = links(connectivity, in_features, groups, fan_in, &weights);
        let padded = match connectivity {
            Connectivity::Conv { padding, .. } if padding > 0 => input_range.with_zero(),
            _ => input_range,
        };
        let exact_ranges = weights
            .chunks(fan_in.max(1))
            .map(|row| exact_accumulator(row.iter().copied(), padded))
            .collect();
        WeightedStage {
            layer,
            in_features,
            out_features,
            connectivity,
            groups,
            weights,
            links,
            input_range,
            exact_ranges,
            worst_case: IntRange::new(0, 0),
            unit: Vec::new(),
            bias: Vec::new(),
            lookup: None,
        }
    }

    /// The group of an output.
    pub fn group(&self, neuron: usize) -> usize {
        match self.connectivity {
            Connectivity::Dense => neuron,
            _ => neuron / (self.out_features / self.groups),
        }
    }

    /// Sum of squared weights of an output (its weight 2-norm squared), what scales the noise.
    pub fn norm2_squared(&self, neuron: usize) -> f64 {
        self.links[neuron]
            .iter()
            .map(|&(_, w)| (w * w) as f64)
            .sum()
    }

    /// The accumulator of one output for the inputs `x`.
    pub fn accumulate_one(&self, neuron: usize, x: &[i64]) -> i64 {
        self.links[neuron].iter().map(|&(i, w)| w * x[i]).sum()
    }

    /// Union of the exact ranges of all groups.
    pub fn exact_range(&self) -> IntRange {
        self.exact_ranges.iter().fold(IntRange::new(0, 0), |a, r| {
            IntRange::new(a.min.min(r.min), a.max.max(r.max))
        })
    }

    /// Real output of neuron `j` for accumulator `acc` (before activations).
    pub fn dequantize(&self, neuron: usize, acc: i64) -> f64 {
        self.dequantize_group(self.group(neuron), acc)
    }

    /// Real output of any neuron of group `g` for accumulator `acc` (before activations).
    pub fn dequantize_group(&self, group: usize, acc: i64) -> f64 {
        self.unit[group] * acc as f64 + self.bias[group]
    }
}

/// The non-zero links of every output, and the number of outputs.
fn links(
    connectivity: Connectivity,
    in_features: usize,
    groups: usize,
    fan_in: usize,
    weights: &[i64],
) -> (Vec<Vec<(usize, i64)>>, usize) {
    let nonzero = |v: Vec<(usize, i64)>| v.into_iter().filter(|&(_, w)| w != 0).collect::<Vec<_>>();
    match connectivity {
        Connectivity::Dense => {
            let rows = (0..groups)
                .map(|j| {
                    nonzero(
                        weights[j * fan_in..(j + 1) * fan_in]
                            .iter()
                            .copied()
                            .enumerate()
                            .collect(),
                    )
                })
                .collect();
            (rows, groups)
        }
        Connectivity::Conv {
            in_channels,
            in_size: (h, w),
            kernel: k,
            stride,
            padding,
            out_size: (oh, ow),
        } => {
            let mut rows = Vec::with_capacity(groups * oh * ow);
            for oc in 0..groups {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut row = Vec::with_capacity(fan_in);
                        for ic in 0..in_channels {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (
                                        (oy * stride + ky) as isize - padding as isize,
                                        (ox * stride + kx) as isize - padding as isize,
                                    );
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        row.push((
                                            (ic * h + iy as usize) * w + ix as usize,
                                            weights[oc * fan_in + (ic * k + ky) * k + kx],
                                        ));
                                    }
                                }
                            }
                        }
                        rows.push(nonzero(row));
                    }
                }
            }
            debug_assert_eq!(in_features, in_channels * h * w);
            (rows, groups * oh * ow)
        }
        Connectivity::Pool {
            in_size: (h, w),
            kernel: k,
            out_size: (oh, ow),
        } => {
            let mut rows = Vec::with_capacity(groups * oh * ow);
            for c in 0..groups {
                for oy in 0..oh {
                    for ox in 0..ow {
                        rows.push(
                            (0..k * k)
                                .map(|t| ((c * h + oy * k + t / k) * w + ox * k + t % k, 1))
                                .collect(),
                        );
                    }
                }
            }
            (rows, groups * oh * ow)
        }
    }
}

/// A quantized network ready for Clear, Simulate and FHE inference.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantModel {
    pub(crate) arch: Architecture,
    pub(crate) input: InputStage,
    pub(crate) layers: Vec<WeightedStage>,
    /// Real activations applied to the de-quantized output, on the client.
    pub(crate) output_activations: Vec<Activation>,
}

/// Segment of declared layers between two weighted layers, as the runtime executes it.
struct Segment {
    activations: Vec<Activation>,
    quantizer: Option<(usize, Quantizer)>,
}

impl QuantModel {
    /// Loads integer (QAT) weights from a `.safetensors` or `.npz` file.
    pub fn load(
        arch: &Architecture,
        path: impl AsRef<std::path::Path>,
    ) -> Result<QuantModel, LoadError> {
        Self::from_tensors(arch, &TensorFile::read(path.as_ref())?)
    }

    /// Builds the model from named tensors, checking every tensor against the architecture.
    ///
    /// Tensor names, for declared layer `i` (0-based): `layers.i.scale` (quantizer scale),
    /// `layers.i.weight` (integers, `[out, in]`), `layers.i.weight_scale` (`[]`, `[1]` or
    /// `[out]`), `layers.i.bias` (`[out]`).
    pub fn from_tensors(arch: &Architecture, file: &TensorFile) -> Result<QuantModel, LoadError> {
        if let Some(found) = file.metadata.get(ARCHITECTURE_KEY) {
            let expected = architecture_signature(arch);
            if *found != expected {
                return Err(LoadError::ArchitectureMismatch {
                    expected,
                    found: found.clone(),
                });
            }
        }
        let mut reader = Reader {
            arch,
            file,
            used: Vec::new(),
        };
        let layers = arch.layers();

        // Client-side prefix up to the first weighted layer.
        let first_weighted = layers
            .iter()
            .position(is_stage)
            .expect("the analysis requires a weighted layer");
        let prefix = reader.segment(0, first_weighted)?;
        let Some((_, input_quantizer)) = prefix.quantizer else {
            unreachable!("the analysis requires a quantizer before the first weighted layer")
        };
        let features = stage_input_features(arch, first_weighted);
        let input = InputStage {
            activations: prefix.activations,
            quantizer: input_quantizer.clone(),
            features,
        };

        let mut stages = Vec::new();
        let mut quantizer = input_quantizer;
        let mut input_range = arch.analysis()[first_weighted - 1]
            .range
            .expect("quantized input");
        let mut i = first_weighted;
        let output_activations;
        loop {
            let mut stage = reader.weighted_stage(i, input_range, quantizer.scale)?;
            let exact = stage.exact_range();
            if exact.min < stage.worst_case.min || exact.max > stage.worst_case.max {
                return Err(LoadError::RangeEscapesBound {
                    layer: i + 1,
                    exact: exact.to_string(),
                    bound: stage.worst_case.to_string(),
                });
            }
            // The layers up to the next weighted layer (or the end).
            let next = layers[i + 1..].iter().position(is_stage).map(|p| p + i + 1);
            let end = next.unwrap_or(layers.len());
            let segment = reader.segment(i + 1, end)?;
            match (next, segment.quantizer) {
                (Some(n), Some((qlayer, q))) => {
                    let lookup = arch.analysis()[qlayer]
                        .lookup
                        .expect("the analysis forms a lookup at this quantizer");
                    // Exact until `plan` (or `set_lookup_precision`) fixes the parameters.
                    let declared = (lookup.rounding, lookup.precision);
                    stage.lookup = Some(build_lookup(
                        &stage,
                        qlayer,
                        declared,
                        (u32::MAX, u32::MAX),
                        segment.activations,
                        q.clone(),
                    ));
                    input_range = arch.analysis()[n - 1].range.expect("quantized input");
                    quantizer = q;
                    stages.push(stage);
                    i = n;
                }
                (None, None) => {
                    output_activations = segment.activations;
                    stages.push(stage);
                    break;
                }
                (None, Some((qlayer, _))) => {
                    return Err(reader
                        .unsupported(qlayer, "a quantizer after the last weighted layer".into()));
                }
                (Some(n), None) => {
                    // Only pooling may directly follow a weighted layer (the analysis
                    // requires a quantizer before any other).
                    return Err(reader.unsupported(
                        n,
                        "pooling an accumulator (quantize before pooling)".into(),
                    ));
                }
            }
        }
        reader.check_unused()?;
        Ok(QuantModel {
            arch: arch.clone(),
            input,
            layers: stages,
            output_activations,
        })
    }

    /// The architecture.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The client-side input stage.
    pub fn input_stage(&self) -> &InputStage {
        &self.input
    }

    /// The weighted layers in order.
    pub fn layers(&self) -> &[WeightedStage] {
        &self.layers
    }

    /// Activations applied to the de-quantized output on the client.
    pub fn output_activations(&self) -> &[Activation] {
        &self.output_activations
    }

    /// Prepares every lookup for the parameter set of `precision` bits, rebuilding the
    /// tables: accumulators that fit are read exactly, wider ones at the full resolution of
    /// that set's table (see [`AccumulatorEncoding::new`]). Clear, Simulate and FHE all
    /// evaluate these tables. [`plan`](Self::plan) calls this with the chosen set.
    pub fn set_lookup_precision(&mut self, precision: u32) {
        let resolution = crate::fhe::vetted(precision)
            .map(|s| s.params.polynomial_size.0.trailing_zeros())
            .unwrap_or(precision);
        for i in 0..self.layers.len() {
            let Some(old) = self.layers[i].lookup.take() else {
                continue;
            };
            let declared = (old.declared, old.declared_precision);
            let rebuilt = build_lookup(
                &self.layers[i],
                old.layer,
                declared,
                (precision, resolution),
                old.activations,
                old.quantizer,
            );
            self.layers[i].lookup = Some(rebuilt);
        }
    }

    /// Removes all rounding: every lookup reads its whole accumulator (the reference for
    /// rounding's accuracy cost; FHE cannot run lookups over 8 bits).
    pub fn set_exact_lookups(&mut self) {
        self.set_lookup_precision(u32::MAX);
    }

    /// Bits of the widest lookup index in use (the table resolution of rounded lookups).
    pub fn lookup_precision(&self) -> u32 {
        self.layers
            .iter()
            .filter_map(|s| s.lookup.as_ref())
            .map(|l| l.encoding.precision())
            .max()
            .unwrap_or(0)
    }

    /// Signed width of the output accumulators, as the client decodes them.
    pub fn output_encoding_bits(&self) -> u32 {
        let r = self
            .layers
            .last()
            .expect("a model has a weighted layer")
            .exact_range();
        IntRange::new(r.min.min(-1), r.max.max(0)).bits()
    }

    /// log2 of the scaling factor Δ of the ciphertexts entering weighted layer `k`: the
    /// accumulator they sum into is encoded on the top bits below the padding bit.
    pub fn input_delta_log2(&self, k: usize) -> u32 {
        let bits = match &self.layers[k].lookup {
            Some(l) => l.encoding.bits,
            None => self.output_encoding_bits(),
        };
        63 - bits
    }

    /// Per-layer exact ranges next to the compile-time bounds, and the lookup encodings.
    pub fn range_report(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:>3}  {:<34} {:>22} {:>5}  {:>22} {:>5}  {}\n",
            "#",
            "weighted layer",
            "compile-time bound",
            "bits",
            "exact (real weights)",
            "bits",
            "lookup after it"
        ));
        for s in &self.layers {
            let exact = s.exact_range();
            let lookup = match &s.lookup {
                None => "output (decrypted)".to_string(),
                Some(l) => format!(
                    "{} × {}-bit encoding, {} bits read{}",
                    s.out_features,
                    l.encoding.bits,
                    l.encoding.precision(),
                    match (l.encoding.exact, l.encoding.shift) {
                        (true, _) => ", exact".to_string(),
                        (false, s) if s > 0 => format!(", {s} low bits rounded off"),
                        (false, s) => format!(", approximate, {} positions per value", 1i64 << -s),
                    }
                ),
            };
            out.push_str(&format!(
                "{:>3}  {:<34} {:>22} {:>5}  {:>22} {:>5}  {}\n",
                s.layer + 1,
                self.arch.layers()[s.layer].to_string(),
                s.worst_case.to_string(),
                s.worst_case.bits(),
                exact.to_string(),
                exact.bits(),
                lookup
            ));
        }
        out
    }
}

/// Whether a declared layer starts a weighted stage of the runtime.
fn is_stage(layer: &Layer) -> bool {
    layer.weight_options().is_some() || matches!(layer, Layer::AvgPool2d { .. })
}

/// Image `(channels, height, width)` entering declared layer `i`.
fn input_image(arch: &Architecture, i: usize) -> Option<(usize, usize, usize)> {
    match (
        i.checked_sub(1).map(|p| arch.analysis()[p].shape),
        arch.layers()[i],
    ) {
        (
            Some(Shape::Image {
                channels,
                height,
                width,
            }),
            _,
        ) => Some((channels, height, width)),
        (
            _,
            Layer::QuantConv2d {
                in_channels,
                input: Some((h, w)),
                ..
            },
        ) => Some((in_channels, h, w)),
        _ => None,
    }
}

/// Number of values entering the weighted layer `i`.
fn stage_input_features(arch: &Architecture, i: usize) -> usize {
    match arch.layers()[i] {
        Layer::QuantLinear { in_features, .. } => in_features,
        _ => input_image(arch, i).map(|(c, h, w)| c * h * w).unwrap_or(0),
    }
}

/// Builds the per-group tables of the lookup after `stage`.
fn build_lookup(
    stage: &WeightedStage,
    layer: usize,
    declared: (Rounding, u32),
    (precision, resolution): (u32, u32),
    activations: Vec<Activation>,
    quantizer: Quantizer,
) -> LookupStage {
    let encoding = AccumulatorEncoding::new(stage.exact_range(), precision, resolution);
    let rounding = match (encoding.exact, declared.0) {
        (true, _) => Rounding::Exact,
        (_, Rounding::Declared) => Rounding::Declared,
        _ => Rounding::Runtime,
    };
    let tables = (0..stage.groups)
        .map(|j| {
            let r = stage.exact_ranges[j];
            let (first, last) = (encoding.index(r.min), encoding.index(r.max));
            let values = (first..=last)
                .map(|k| {
                    let y = activations
                        .iter()
                        .fold(stage.dequantize_group(j, encoding.value(k)), |y, a| {
                            a.apply(y)
                        });
                    quantizer.quantize(y)
                })
                .collect();
            Table { first, values }
        })
        .collect::<Vec<_>>();
    let output_range = tables
        .iter()
        .flat_map(|t| t.values.iter())
        .fold(IntRange::new(i64::MAX, i64::MIN), |a, &v| {
            IntRange::new(a.min.min(v), a.max.max(v))
        });
    LookupStage {
        layer,
        encoding,
        rounding,
        declared: declared.0,
        declared_precision: declared.1,
        tables,
        output_range,
        activations,
        quantizer,
    }
}

/// The architecture as recorded in weight files: its layers in DSL spelling.
pub fn architecture_signature(arch: &Architecture) -> String {
    arch.layers()
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

struct Reader<'a> {
    arch: &'a Architecture,
    file: &'a TensorFile,
    used: Vec<String>,
}

impl Reader<'_> {
    fn describe(&self, layer: usize) -> String {
        self.arch.layers()[layer].to_string()
    }

    fn unsupported(&self, layer: usize, what: String) -> LoadError {
        LoadError::Unsupported {
            layer: layer + 1,
            description: self.describe(layer),
            what,
        }
    }

    fn tensor(&mut self, layer: usize, suffix: &str) -> Result<(String, &Tensor), LoadError> {
        let name = format!("layers.{layer}.{suffix}");
        match self.file.tensors.get(&name) {
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
    fn per_channel(
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
        }
        Ok(if values.len() == 1 {
            vec![values[0]; len]
        } else {
            values
        })
    }

    /// An integer tensor of the given shape, within `bits` signed narrow range.
    fn int_tensor(
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
            if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| v.abs() > max) {
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
    fn weighted_stage(
        &mut self,
        i: usize,
        input_range: IntRange,
        input_scale: f64,
    ) -> Result<WeightedStage, LoadError> {
        let arch = self.arch;
        let in_features = stage_input_features(arch, i);
        let out_size = match arch.analysis()[i].shape {
            Shape::Image { height, width, .. } => (height, width),
            _ => (1, 1),
        };
        let in_size = input_image(arch, i)
            .map(|(_, h, w)| (h, w))
            .unwrap_or((1, 1));
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
            Layer::QuantConv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                options,
                ..
            } => {
                let shapes: [&[usize]; 2] = [
                    &[out_channels, in_channels * kernel * kernel],
                    &[out_channels, in_channels, kernel, kernel],
                ];
                let weights = self.int_tensor(i, "weight", &shapes, Some(options.weight_bits))?;
                let c = Connectivity::Conv {
                    in_channels,
                    in_size,
                    kernel,
                    stride,
                    padding,
                    out_size,
                };
                (c, out_channels, weights, Some(options))
            }
            Layer::AvgPool2d { kernel } => {
                let channels = input_image(arch, i).map(|(c, _, _)| c).unwrap_or(0);
                (
                    Connectivity::Pool {
                        in_size,
                        kernel,
                        out_size,
                    },
                    channels,
                    vec![1; channels * kernel * kernel],
                    None,
                )
            }
            ref other => unreachable!("{} is not a weighted layer", other.name()),
        };
        let mut stage =
            WeightedStage::new(i, in_features, connectivity, groups, weights, input_range);
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
    fn quantizer(&mut self, layer: usize, bits: u32, signed: bool) -> Result<Quantizer, LoadError> {
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
    fn segment(&mut self, start: usize, end: usize) -> Result<Segment, LoadError> {
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

    fn check_unused(&self) -> Result<(), LoadError> {
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
