//! Integer ranges and bit-widths through a network, and the checks that reject networks FHE
//! cannot run. Used by the `fhe_net!` macro at compile time and by the runtime at load time.

pub use super::error::{ArchError, ArchErrorKind};
use super::layer::{Conv2d, Layer, WeightOptions};
use super::limits::{
    MAX_ACCUMULATOR_BITS, MAX_DECLARED_BITS, MAX_EXACT_LOOKUP_BITS, MAX_LOOKUP_BITS,
};
pub use super::range::{
    declared_accumulator, exact_accumulator, quantizer_range, unsigned_bits, weight_max,
    worst_case_accumulator, IntRange, Shape,
};

mod graph;
mod layers;

/// What a layer's output tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Real values on the client, before encryption or after decryption.
    Real,
    /// Quantized integers (encrypted once the first weighted layer has run).
    Quantized,
    /// A weighted sum (or pooled sum) awaiting its lookup, possibly with activations pending.
    Accumulator,
    /// Unknown after an earlier error.
    Unknown,
}

/// How a lookup reads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// The whole accumulator: an exact lookup.
    Exact,
    /// The top bits, as the layer's `round = r` asks.
    Declared,
    /// The top [`MAX_EXACT_LOOKUP_BITS`] bits, chosen by the runtime (approximate rounding).
    Runtime,
}

/// A table lookup (one per output value) formed at a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Lookups per inference.
    pub count: usize,
    /// Width of the accumulator the lookup reads.
    pub input_bits: u32,
    /// Bits the table is indexed by after rounding (the FHE precision).
    pub precision: u32,
    /// How the accumulator is reduced to `precision` bits.
    pub rounding: Rounding,
    /// The layer whose accumulator the lookup reads.
    pub source: usize,
    /// The worst-case width of that accumulator where the layer's declared `acc` bound
    /// narrows it to `input_bits` (the lookup fits thanks to the bound); `None` otherwise.
    pub unbounded_bits: Option<u32>,
}

/// The analysis of one layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerAnalysis {
    /// Output shape.
    pub shape: Shape,
    /// What the output holds.
    pub kind: TensorKind,
    /// Integer range of the output (quantized values or accumulator).
    pub range: Option<IntRange>,
    /// Width of the accumulator this layer produces (weighted and pooling layers).
    pub accumulator_bits: Option<u32>,
    /// The lookup this layer's quantizer forms, if any (for `MaxPool2d`, every level of its
    /// comparison trees but the last; for a join, the current tensor's re-quantization).
    pub lookup: Option<Lookup>,
    /// For a join: the re-quantization of the forked tensor.
    pub fork_lookup: Option<Lookup>,
    /// For `Mul`: the squares of the two sides' sum and difference (two per value).
    pub product_lookup: Option<Lookup>,
}

/// Network-wide figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Table lookups per inference.
    pub lookups: usize,
    /// Widest lookup precision (bits a table is indexed by).
    pub max_lookup_bits: u32,
    /// Widest integer anywhere in the encrypted part (Concrete's `maximum_integer_bit_width`).
    pub max_integer_bits: u32,
    /// Lookups that read a rounded accumulator.
    pub rounded_lookups: usize,
    /// Values the client decrypts per inference.
    pub outputs: usize,
}

/// The result of [`analyze`].
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub layers: Vec<LayerAnalysis>,
    pub summary: Summary,
}

/// The tensor flowing between layers during the analysis.
#[derive(Clone, Copy, Debug)]
enum Value {
    /// Real values on the client (`nonneg`: known to be >= 0).
    Real { nonneg: bool },
    /// Quantized integers.
    Quant { range: IntRange },
    /// A sum awaiting its lookup; `pending` is `Some(nonneg)` once an activation applies.
    Acc {
        range: IntRange,
        source: usize,
        pending: Option<bool>,
    },
    /// Unknown after an error (no further range errors, to avoid cascades).
    Unknown,
}

impl Value {
    fn nonnegative(&self) -> bool {
        match *self {
            Value::Real { nonneg } => nonneg,
            Value::Quant { range } => range.min >= 0,
            Value::Acc { range, pending, .. } => pending.unwrap_or(range.min >= 0),
            Value::Unknown => false,
        }
    }

    fn kind(&self) -> (TensorKind, Option<IntRange>) {
        match *self {
            Value::Real { .. } => (TensorKind::Real, None),
            Value::Quant { range } => (TensorKind::Quantized, Some(range)),
            Value::Acc { range, .. } => (TensorKind::Accumulator, Some(range)),
            Value::Unknown => (TensorKind::Unknown, None),
        }
    }
}

struct Analyzer<'a> {
    layers: &'a [Layer],
    errors: Vec<ArchError>,
    /// Input range of each weighted layer, for derivations and fixes.
    inputs: Vec<Option<IntRange>>,
    /// Per join that reads its two sides packed in one lookup: that lookup's width.
    packed: Vec<Option<u32>>,
}

impl Analyzer<'_> {
    fn error(&mut self, layer: usize, option: Option<&'static str>, kind: ArchErrorKind) {
        self.errors.push(ArchError {
            layer: Some(layer),
            option,
            kind,
        });
    }

    fn check_bits(
        &mut self,
        layer: usize,
        option: Option<&'static str>,
        what: &'static str,
        bits: u32,
        min: u32,
        max: u32,
    ) -> bool {
        if bits < min || bits > max {
            self.error(
                layer,
                option,
                ArchErrorKind::BitsOutOfRange {
                    what,
                    bits,
                    min,
                    max,
                },
            );
            false
        } else {
            true
        }
    }

    fn check_nonzero(&mut self, layer: usize, what: &'static str, value: usize) -> bool {
        if value == 0 {
            self.error(layer, None, ArchErrorKind::ZeroSize { what });
        }
        value > 0
    }

    /// Checks the options of a weighted layer; false when the weights are unusable.
    fn check_weight_options(
        &mut self,
        layer: usize,
        options: &WeightOptions,
        fan_in: usize,
    ) -> bool {
        let ok = self.check_bits(
            layer,
            Some("w"),
            "weight width",
            options.weight_bits,
            2,
            MAX_DECLARED_BITS,
        );
        if let Some(active) = options.active {
            if active == 0 || (fan_in > 0 && active > fan_in) {
                self.error(
                    layer,
                    Some("active"),
                    ArchErrorKind::ActiveOutOfRange { active, fan_in },
                );
            }
        }
        if let Some(round) = options.round {
            self.check_bits(
                layer,
                Some("round"),
                "round",
                round,
                1,
                MAX_EXACT_LOOKUP_BITS,
            );
        }
        let acc_ok = options.acc.is_none_or(|acc| {
            self.check_bits(
                layer,
                Some("acc"),
                "accumulator bound",
                acc,
                2,
                MAX_ACCUMULATOR_BITS,
            )
        });
        ok && acc_ok
    }

    /// Terms each output of weighted layer `layer` sums in the worst case.
    fn terms(&self, layer: usize) -> usize {
        let l = &self.layers[layer];
        let fan_in = l.fan_in().unwrap_or(0);
        match l.weight_options().and_then(|o| o.active) {
            Some(a) if a >= 1 && a <= fan_in => a,
            _ => fan_in,
        }
    }

    /// How the accumulator of `source` was computed, in words.
    fn derivation(&self, source: usize, range: IntRange) -> String {
        let bits = range.bits();
        let signed = if range.is_signed() {
            "signed"
        } else {
            "unsigned"
        };
        match (
            &self.layers[source],
            self.inputs.get(source).copied().flatten(),
        ) {
            (
                l @ (Layer::QuantLinear { options, .. }
                | Layer::QuantConv2d(Conv2d { options, .. })),
                Some(input),
            ) => {
                let terms = self.terms(source);
                let fan = if options.active.is_some() {
                    format!("at most {terms} non-zero weights")
                } else {
                    format!("{terms} inputs")
                };
                let w = weight_max(options.weight_bits);
                let (worst, bounded) = match options.acc {
                    Some(acc) => (
                        worst_case_accumulator(input, options.weight_bits, terms).to_string(),
                        format!(
                            " in the worst case, bounded to {range} by the declared `acc = {acc}`"
                        ),
                    ),
                    None => (range.to_string(), String::new()),
                };
                format!(
                    "{}: {fan} in {input} × {}-bit weights in [-{w}, {w}] give {worst}{bounded}: {bits} bits {signed}",
                    l.name(),
                    options.weight_bits
                )
            }
            (l, _) => format!("{}: range {range}: {bits} bits {signed}", l.name()),
        }
    }

    /// Ways to bring weighted layer `source` under `target` bits.
    fn fixes(&self, source: usize, target: u32) -> Vec<String> {
        let mut fixes = Vec::new();
        let (Some(options), Some(input)) = (
            self.layers[source].weight_options(),
            self.inputs.get(source).copied().flatten(),
        ) else {
            return fixes;
        };
        if options.acc.is_some_and(|acc| acc > target) {
            fixes.push(format!("lower `acc` to {target} (and train under it)"));
        }
        let terms = self.terms(source);
        if let Some(w) = (2..options.weight_bits)
            .rev()
            .find(|&w| worst_case_accumulator(input, w, terms).bits() <= target)
        {
            fixes.push(format!("lower w to {w}"));
        }
        // The worst case is ±k·t with t = max|w|·max|x|: k·t <= 2^(target-1) - 1.
        let t = weight_max(options.weight_bits) as i128
            * (input.min as i128).abs().max((input.max as i128).abs());
        if t > 0 {
            let k = ((1i128 << (target - 1)) - 1) / t;
            if k >= 1 && k < terms as i128 {
                fixes.push(format!("set active = {k}"));
            }
        }
        fixes
    }

    /// The worst-case width of weighted layer `source`'s accumulator where a declared
    /// `acc` bound narrows it.
    fn unbounded_bits(&self, source: usize) -> Option<u32> {
        let options = self.layers[source].weight_options()?;
        options.acc?;
        let input = self.inputs.get(source).copied().flatten()?;
        Some(worst_case_accumulator(input, options.weight_bits, self.terms(source)).bits())
    }

    /// Forms the lookup reading accumulator `range` of layer `source`, at layer `at`.
    fn lookup(&mut self, source: usize, range: IntRange, count: usize) -> Option<Lookup> {
        // A max-pooling level reads two values packed in one: its span's bits.
        let bits = match self.layers[source] {
            Layer::MaxPool2d { .. } => unsigned_bits(range.max.abs_diff(range.min)),
            _ => self.packed[source].unwrap_or(range.bits()),
        };
        let options = self.layers[source].weight_options().copied();
        if bits > MAX_ACCUMULATOR_BITS {
            let derivation = self.derivation(source, range);
            self.error(
                source,
                None,
                ArchErrorKind::AccumulatorTooWide { derivation, bits },
            );
            return None;
        }
        let (precision, rounding) = match options.and_then(|o| o.round) {
            Some(round) if round > MAX_EXACT_LOOKUP_BITS || round == 0 => return None, // reported already
            Some(round) if round > bits => {
                let derivation = self.derivation(source, range);
                self.error(
                    source,
                    Some("round"),
                    ArchErrorKind::RoundWiderThanAccumulator {
                        round,
                        derivation,
                        bits,
                    },
                );
                return None;
            }
            Some(round) if round == bits => (bits, Rounding::Exact),
            Some(round) => (round, Rounding::Declared),
            None if bits > MAX_LOOKUP_BITS => {
                let mut fix = self.fixes(source, MAX_LOOKUP_BITS);
                fix.push(format!(
                    "add `round = 6` (any r up to {MAX_EXACT_LOOKUP_BITS})"
                ));
                let derivation = self.derivation(source, range);
                self.error(
                    source,
                    None,
                    ArchErrorKind::LookupTooWide {
                        derivation,
                        bits,
                        fix: join_or(&fix),
                    },
                );
                return None;
            }
            None if bits > MAX_EXACT_LOOKUP_BITS => {
                if options.is_some_and(|o| o.exact) {
                    let mut fix = vec!["remove `exact` to let the runtime round".to_string()];
                    fix.extend(self.fixes(source, MAX_EXACT_LOOKUP_BITS));
                    let derivation = self.derivation(source, range);
                    self.error(
                        source,
                        Some("exact"),
                        ArchErrorKind::ExactOverLimit {
                            derivation,
                            bits,
                            fix: join_or(&fix),
                        },
                    );
                    return None;
                }
                (MAX_EXACT_LOOKUP_BITS, Rounding::Runtime)
            }
            None => (bits, Rounding::Exact),
        };
        Some(Lookup {
            count,
            input_bits: bits,
            precision,
            rounding,
            source,
            unbounded_bits: self.unbounded_bits(source),
        })
    }
}

fn join_or(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

pub use super::limits::MAX_IMAGE_SIDE;

/// Analyzes a network: shapes, integer ranges, accumulator widths and lookups, with every
/// independent error collected.
pub fn analyze(layers: &[Layer]) -> Result<Analysis, Vec<ArchError>> {
    if layers.is_empty() {
        return Err(vec![ArchError {
            layer: None,
            option: None,
            kind: ArchErrorKind::EmptyNetwork,
        }]);
    }
    let mut a = Analyzer {
        layers,
        errors: Vec::new(),
        inputs: vec![None; layers.len()],
        packed: vec![None; layers.len()],
    };
    let mut flow = Flow {
        value: Value::Real { nonneg: false },
        shape: Shape::Unknown,
        encrypted: false,
        forks: Vec::new(),
    };
    let mut out = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let step = match *layer {
            Layer::QuantIdentity { bits, signed } => a.quant_identity(i, &mut flow, bits, signed),
            Layer::Activation(act) => layers::activation(&mut flow, i, act),
            Layer::QuantLinear {
                in_features,
                out_features,
                ref options,
            } => a.linear(i, &mut flow, in_features, out_features, options),
            Layer::QuantConv2d(ref conv) => a.conv2d(i, &mut flow, conv),
            Layer::AvgPool2d { kernel } => a.avg_pool(i, &mut flow, kernel),
            Layer::Flatten => layers::flatten(&mut flow),
            Layer::Fork => a.fork(i, &mut flow),
            Layer::Join { op, bits, signed } => a.join(i, &mut flow, op, bits, signed),
            Layer::MaxPool2d { kernel } => a.max_pool(i, &mut flow, kernel),
        };
        let (kind, range) = flow.value.kind();
        out.push(LayerAnalysis {
            shape: flow.shape,
            kind,
            range,
            accumulator_bits: step.accumulator_bits,
            lookup: step.lookup,
            fork_lookup: step.fork_lookup,
            product_lookup: step.product_lookup,
        });
    }
    a.check_network(&flow);
    a.check_graph(&flow);
    if !a.errors.is_empty() {
        a.errors.sort_by_key(|e| e.layer);
        return Err(a.errors);
    }
    let summary = summarize(&out, flow.shape);
    Ok(Analysis {
        layers: out,
        summary,
    })
}

/// The tensor between two layers: its value, shape, and whether it is encrypted yet; and
/// the tensors saved by open forks, innermost last.
struct Flow {
    value: Value,
    shape: Shape,
    encrypted: bool,
    forks: Vec<SavedFork>,
}

/// A tensor saved by `Fork` for its join.
struct SavedFork {
    layer: usize,
    value: Value,
    shape: Shape,
}

/// What one layer adds to the analysis.
#[derive(Default)]
struct Step {
    accumulator_bits: Option<u32>,
    lookup: Option<Lookup>,
    fork_lookup: Option<Lookup>,
    product_lookup: Option<Lookup>,
}

impl Analyzer<'_> {
    /// The checks on the whole network, after its last layer.
    fn check_network(&mut self, flow: &Flow) {
        let layers = self.layers;
        if !flow.encrypted {
            self.errors.push(ArchError {
                layer: None,
                option: None,
                kind: ArchErrorKind::NoWeightedLayer,
            });
        }
        if let Some(last) = layers.iter().rposition(|l| l.weight_options().is_some()) {
            for (i, layer) in layers.iter().enumerate().skip(last + 1) {
                if matches!(layer, Layer::QuantIdentity { .. }) {
                    self.error(i, None, ArchErrorKind::TrailingQuantizer);
                }
            }
        }
        if let Value::Acc { range, source, .. } = flow.value {
            let bits = range.bits();
            if bits > MAX_ACCUMULATOR_BITS {
                let derivation = self.derivation(source, range);
                self.error(
                    source,
                    None,
                    ArchErrorKind::AccumulatorTooWide { derivation, bits },
                );
            }
            if layers[source]
                .weight_options()
                .is_some_and(|o| o.round.is_some())
            {
                self.error(source, Some("round"), ArchErrorKind::RoundWithoutLookup);
            }
        }
    }
}

/// The network's totals.
fn summarize(out: &[LayerAnalysis], shape: Shape) -> Summary {
    let lookups: Vec<&Lookup> = out
        .iter()
        .flat_map(|l| {
            l.lookup
                .iter()
                .chain(&l.fork_lookup)
                .chain(&l.product_lookup)
        })
        .collect();
    let max_integer_bits = out
        .iter()
        .filter(|l| l.kind != TensorKind::Real)
        .filter_map(|l| l.range.map(|r| r.bits()))
        .max()
        .unwrap_or(0);
    Summary {
        lookups: lookups
            .iter()
            .fold(0usize, |n, l| n.saturating_add(l.count)),
        max_lookup_bits: lookups.iter().map(|l| l.precision).max().unwrap_or(0),
        max_integer_bits,
        rounded_lookups: lookups
            .iter()
            .filter(|l| l.rounding != Rounding::Exact)
            .fold(0usize, |n, l| n.saturating_add(l.count)),
        outputs: shape.elements().unwrap_or(0),
    }
}

/// The accumulator a weighted layer produces from `value`, or an error when the input is
/// not quantized.
fn weighted_input(
    a: &mut Analyzer<'_>,
    i: usize,
    value: Value,
    usable: bool,
    encrypted: bool,
) -> Value {
    let name = a.layers[i].name();
    let found = match value {
        Value::Quant { range } => {
            a.inputs[i] = Some(range);
            if !usable {
                return Value::Unknown;
            }
            let options = a.layers[i]
                .weight_options()
                .copied()
                .expect("weighted layer");
            let worst = worst_case_accumulator(range, options.weight_bits, a.terms(i));
            let range = match options.acc {
                Some(acc) if worst.bits() <= acc => {
                    a.error(
                        i,
                        Some("acc"),
                        ArchErrorKind::AccNotTighter {
                            acc,
                            worst: worst.to_string(),
                            bits: worst.bits(),
                        },
                    );
                    return Value::Unknown;
                }
                Some(acc) => declared_accumulator(acc),
                None => worst,
            };
            return Value::Acc {
                range,
                source: i,
                pending: None,
            };
        }
        Value::Unknown => return Value::Unknown,
        Value::Real { .. } if !encrypted => "the real-valued network input".to_string(),
        Value::Real { .. } => "a real-valued tensor".to_string(),
        Value::Acc {
            source, pending, ..
        } => {
            let what = if pending.is_some() {
                "activation output"
            } else {
                "accumulator"
            };
            format!(
                "the {what} of layer {} ({})",
                source + 1,
                a.layers[source].name()
            )
        }
    };
    a.error(
        i,
        None,
        ArchErrorKind::MissingQuantIdentity { layer: name, found },
    );
    Value::Unknown
}

#[cfg(test)]
mod tests {
    use super::super::activation::Activation;
    use super::super::layer::JoinOp;
    use super::*;

    fn linear(i: usize, o: usize, w: u32) -> Layer {
        Layer::QuantLinear {
            in_features: i,
            out_features: o,
            options: WeightOptions {
                weight_bits: w,
                bias: true,
                active: None,
                round: None,
                exact: false,
                acc: None,
            },
        }
    }

    fn quant(bits: u32) -> Layer {
        Layer::QuantIdentity { bits, signed: true }
    }

    const RELU: Layer = Layer::Activation(Activation::ReLU);

    /// A convolution of 3-bit weights: `(in, out)` channels, kernel, stride, padding, input.
    fn conv(
        ic: usize,
        oc: usize,
        k: usize,
        s: usize,
        p: usize,
        input: Option<(usize, usize)>,
    ) -> Layer {
        Layer::QuantConv2d(Conv2d {
            in_channels: ic,
            out_channels: oc,
            kernel: k,
            stride: s,
            padding: p,
            input,
            options: WeightOptions {
                weight_bits: 3,
                bias: true,
                active: None,
                round: None,
                exact: false,
                acc: None,
            },
        })
    }

    /// A join's width out of range is an error of the analysis, never an overflow in it
    /// (`Add(0)`, `Add(64)` and wider used to panic inside the quantizer's range).
    #[test]
    fn join_widths_out_of_range_are_errors() {
        for op in [JoinOp::Add, JoinOp::Sub, JoinOp::Mul, JoinOp::Concat] {
            for (bits, signed) in [
                (0, true),
                (0, false),
                (1, true),
                (64, true),
                (64, false),
                (65, true),
                (u32::MAX, false),
            ] {
                let layers = [
                    quant(3),
                    linear(4, 4, 3),
                    RELU,
                    quant(3),
                    Layer::Fork,
                    linear(4, 4, 3),
                    Layer::Join { op, bits, signed },
                    linear(4, 2, 3),
                ];
                let errors = analyze(&layers).expect_err("an out-of-range join width");
                assert!(
                    errors.iter().any(|e| matches!(
                        e.kind,
                        ArchErrorKind::BitsOutOfRange { bits: b, .. } if b == bits
                    )),
                    "{op:?}({bits}, signed {signed}): {errors:?}"
                );
            }
        }
    }

    #[test]
    fn bit_widths_of_ranges() {
        assert_eq!(IntRange::new(0, 0).bits(), 1);
        assert_eq!(IntRange::new(0, 7).bits(), 3);
        assert_eq!(IntRange::new(0, 8).bits(), 4);
        assert_eq!(IntRange::new(-4, 3).bits(), 3);
        assert_eq!(IntRange::new(-5, 3).bits(), 4);
        assert_eq!(IntRange::new(-4, 4).bits(), 4);
        assert_eq!(IntRange::new(-1, 0).bits(), 1);
        assert_eq!(IntRange::new(-9408, 9408).bits(), 15);
        assert_eq!(IntRange::new(-16384, 16383).bits(), 15);
        assert_eq!(IntRange::new(-16385, 0).bits(), 16);
        assert_eq!(IntRange::new(i64::MIN, i64::MAX).bits(), 64);
    }

    #[test]
    fn quantizer_ranges_follow_brevitas() {
        assert_eq!(quantizer_range(3, true, false), IntRange::new(-4, 3));
        assert_eq!(quantizer_range(3, true, true), IntRange::new(0, 3));
        assert_eq!(quantizer_range(3, false, false), IntRange::new(0, 7));
        assert_eq!(weight_max(3), 3);
        assert_eq!(weight_max(8), 127);
    }

    #[test]
    fn card_network_by_hand() {
        // First layer: 784 signed 3-bit inputs in [-4, 3], weights in [-3, 3]: each product
        // is at most 3·4 = 12 in magnitude, so the sum lies in ±9408: 15 bits signed.
        // Second layer: ReLU then a signed 3-bit quantizer gives [0, 3]; 128 inputs:
        // ±128·9 = ±1152: 12 bits.
        let net = [
            quant(3),
            linear(784, 128, 3),
            RELU,
            quant(3),
            linear(128, 10, 3),
        ];
        let a = analyze(&net).unwrap();
        assert_eq!(a.layers[1].range, Some(IntRange::new(-9408, 9408)));
        assert_eq!(a.layers[1].accumulator_bits, Some(15));
        assert_eq!(a.layers[3].range, Some(IntRange::new(0, 3)));
        let lookup = a.layers[3].lookup.unwrap();
        assert_eq!(
            (lookup.count, lookup.input_bits, lookup.precision),
            (128, 15, 8)
        );
        assert_eq!(lookup.rounding, Rounding::Runtime);
        assert_eq!(a.layers[4].accumulator_bits, Some(12));
        assert_eq!(a.layers[4].range, Some(IntRange::new(-1152, 1152)));
        assert_eq!(
            a.summary,
            Summary {
                lookups: 128,
                max_lookup_bits: 8,
                max_integer_bits: 15,
                rounded_lookups: 128,
                outputs: 10
            }
        );
    }

    #[test]
    fn unsigned_inputs_and_active_bound() {
        // 784 unsigned 3-bit inputs in [0, 7], weights in [-3, 3]: ±784·21 = ±16464: 16 bits.
        let mut net = vec![
            Layer::QuantIdentity {
                bits: 3,
                signed: false,
            },
            linear(784, 128, 3),
            RELU,
            quant(3),
            linear(128, 10, 3),
        ];
        let a = analyze(&net).unwrap();
        assert_eq!(a.layers[1].range, Some(IntRange::new(-16464, 16464)));
        assert_eq!(a.layers[1].accumulator_bits, Some(16));
        // active = 80: ±80·21 = ±1680: 12 bits.
        if let Layer::QuantLinear { options, .. } = &mut net[1] {
            options.active = Some(80);
        }
        assert_eq!(analyze(&net).unwrap().layers[1].accumulator_bits, Some(12));
    }

    #[test]
    fn seed_network_is_exact_below_the_limit() {
        let net = [
            quant(3),
            linear(64, 30, 3),
            RELU,
            quant(3),
            linear(30, 30, 3),
            RELU,
            quant(3),
            linear(30, 10, 3),
        ];
        let a = analyze(&net).unwrap();
        // 64·12 = 768 → 11 bits; 30·9 = 270 → 10 bits.
        assert_eq!(a.layers[1].accumulator_bits, Some(11));
        assert_eq!(a.layers[4].accumulator_bits, Some(10));
        assert_eq!(a.summary.lookups, 60);
        assert_eq!(a.summary.rounded_lookups, 60);
    }

    #[test]
    fn twenty_bit_lookup_is_rejected_with_fixes() {
        // 784 inputs in [-128, 127] (8 bits), 5-bit weights (15): 784·1920 = 1,505,280 → 22 bits.
        let net = [
            quant(8),
            linear(784, 16, 5),
            RELU,
            quant(3),
            linear(16, 10, 3),
        ];
        let errs = analyze(&net).unwrap_err();
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            matches!(errs[0].kind, ArchErrorKind::LookupTooWide { bits: 22, .. }),
            "{msg}"
        );
        assert_eq!(errs[0].layer, Some(1));
        assert!(msg.contains("784 inputs in [-128, 127]"), "{msg}");
        assert!(msg.contains("set active = 17"), "{msg}");
        assert!(msg.contains("round = 6"), "{msg}");
    }

    #[test]
    fn rounding_rules() {
        let mut net = vec![
            quant(8),
            linear(784, 16, 5),
            RELU,
            quant(3),
            linear(16, 10, 3),
        ];
        let set = |net: &mut Vec<Layer>, round: Option<u32>, exact: bool| {
            if let Layer::QuantLinear { options, .. } = &mut net[1] {
                options.round = round;
                options.exact = exact;
            }
        };
        set(&mut net, Some(6), false);
        let a = analyze(&net).unwrap();
        let l = a.layers[3].lookup.unwrap();
        assert_eq!(
            (l.input_bits, l.precision, l.rounding),
            (22, 6, Rounding::Declared)
        );
        set(&mut net, Some(9), false);
        assert!(matches!(
            analyze(&net).unwrap_err()[0].kind,
            ArchErrorKind::BitsOutOfRange { what: "round", .. }
        ));
        // Exact over the limit: the seed layer is 11 bits.
        let mut seed = vec![
            quant(3),
            linear(64, 30, 3),
            RELU,
            quant(3),
            linear(30, 10, 3),
        ];
        if let Layer::QuantLinear { options, .. } = &mut seed[1] {
            options.exact = true;
        }
        let errs = analyze(&seed).unwrap_err();
        assert!(matches!(
            errs[0].kind,
            ArchErrorKind::ExactOverLimit { bits: 11, .. }
        ));
        assert!(
            errs[0].to_string().contains("set active = 10"),
            "{}",
            errs[0]
        );
        // Round on the output layer has nothing to act on.
        if let Layer::QuantLinear { options, .. } = &mut seed[4] {
            options.round = Some(4);
        }
        let errs = analyze(&seed).unwrap_err();
        assert!(errs
            .iter()
            .any(|e| e.kind == ArchErrorKind::RoundWithoutLookup && e.layer == Some(4)));
    }

    #[test]
    fn independent_errors_are_reported_together() {
        let net = [
            quant(3),
            linear(784, 128, 3),
            RELU,
            linear(100, 10, 3),
            quant(20),
        ];
        let errs = analyze(&net).unwrap_err();
        let kinds: Vec<_> = errs
            .iter()
            .map(|e| (e.layer, std::mem::discriminant(&e.kind)))
            .collect();
        // Shape, missing quantizer, width, and the trailing quantizer.
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(kinds[0].0, Some(3));
        assert!(errs
            .iter()
            .any(|e| e.kind == ArchErrorKind::TrailingQuantizer && e.layer == Some(4)));
        assert!(errs.iter().any(|e| matches!(
            e.kind,
            ArchErrorKind::FeatureMismatch {
                expected: 100,
                found: 128
            }
        )));
        assert!(errs
            .iter()
            .any(|e| matches!(e.kind, ArchErrorKind::MissingQuantIdentity { .. })));
        assert!(errs
            .iter()
            .any(|e| matches!(e.kind, ArchErrorKind::BitsOutOfRange { bits: 20, .. })));
    }

    #[test]
    fn a_huge_pooling_kernel_is_an_error_not_an_overflow() {
        let conv = conv(1, 2, 3, 1, 1, Some((8, 8)));
        for kernel in [1 << 40, usize::MAX] {
            let net = [
                Layer::QuantIdentity {
                    bits: 2,
                    signed: false,
                },
                conv,
                RELU,
                quant(3),
                Layer::AvgPool2d { kernel },
                quant(3),
                Layer::Flatten,
                linear(2, 10, 3),
            ];
            let errs = analyze(&net).unwrap_err();
            assert!(
                errs.iter()
                    .any(|e| matches!(e.kind, ArchErrorKind::ImageTooSmall { .. })),
                "kernel {kernel}: {errs:?}"
            );
        }
    }

    #[test]
    fn convolution_shapes_and_ranges() {
        let net = [
            Layer::QuantIdentity {
                bits: 2,
                signed: false,
            },
            conv(1, 4, 3, 1, 1, Some((8, 8))),
            RELU,
            quant(3),
            Layer::AvgPool2d { kernel: 2 },
            quant(3),
            conv(4, 8, 3, 2, 0, None),
            RELU,
            quant(3),
            Layer::Flatten,
            linear(8, 10, 3),
        ];
        let a = analyze(&net).unwrap();
        assert_eq!(
            a.layers[1].shape,
            Shape::Image {
                channels: 4,
                height: 8,
                width: 8
            }
        );
        // 9 inputs in [0, 3] × [-3, 3]: ±81 → 8 bits.
        assert_eq!(a.layers[1].accumulator_bits, Some(8));
        assert_eq!(a.layers[4].range, Some(IntRange::new(0, 12)));
        assert_eq!(a.layers[5].lookup.unwrap().count, 4 * 4 * 4);
        assert_eq!(
            a.layers[6].shape,
            Shape::Image {
                channels: 8,
                height: 1,
                width: 1
            }
        );
        assert_eq!(a.summary.lookups, 256 + 64 + 8);
        let bad = [
            Layer::QuantIdentity {
                bits: 2,
                signed: false,
            },
            conv(1, 4, 3, 1, 0, None),
            RELU,
            quant(3),
            linear(4, 10, 3),
        ];
        let errs = analyze(&bad).unwrap_err();
        assert!(matches!(errs[0].kind, ArchErrorKind::MissingInputShape));
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn exact_accumulator_is_tighter() {
        let r = exact_accumulator([3, -2, 0, 1], IntRange::new(0, 3));
        assert_eq!(r, IntRange::new(-6, 12));
        let worst = worst_case_accumulator(IntRange::new(0, 3), 3, 4);
        assert_eq!(worst, IntRange::new(-36, 36));
    }
}
