//! Architecture + weights → an integer model: quantized input, integer weighted sums, and
//! one lookup table per neuron (per channel for convolutions) that folds bias, scales,
//! activations and the next quantizer.

mod encoding;
pub(crate) mod fold;
mod graph;
mod reader;

use reader::Reader;
mod stage;

pub(crate) use encoding::{
    AccumulatorEncoding, GroupEncoding, Reading, Table, Tails, MAX_MULTIPLIER,
};
pub(crate) use stage::{LookupStage, Source, WeightedStage};

use crate::arch::activation::Activation;
use crate::arch::analysis::{quantizer_range, IntRange, Rounding};
use crate::arch::geometry;
use crate::arch::layer::Layer;
use crate::architecture::Architecture;
use crate::error::{InputError, LoadError};
use crate::tensors::{TensorFile, ARCHITECTURE_KEY};

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
    /// The quantized values the tables are built for (the analysis's range: `[0, max]` when
    /// the activations before the quantizer are non-negative).
    pub range: IntRange,
}

impl InputStage {
    /// Quantizes one real value of feature `feature` of sample `sample` (after the input
    /// activations), refusing non-finite values and values outside the range the tables
    /// were built for. What Clear does and what a client does before it encrypts.
    pub fn quantize(&self, sample: usize, feature: usize, x: f64) -> Result<i64, InputError> {
        if !x.is_finite() {
            return Err(InputError::NonFinite {
                sample,
                feature,
                value: x,
            });
        }
        let y = self.activations.iter().fold(x, |y, a| a.apply(y));
        let q = self.quantizer.quantize(y);
        self.check(sample, feature, q)?;
        Ok(q)
    }

    /// Checks one already quantized value.
    pub fn check(&self, sample: usize, feature: usize, value: i64) -> Result<(), InputError> {
        let r = self.range;
        if value < r.min || value > r.max {
            return Err(InputError::OutOfRange {
                sample,
                feature,
                value,
                min: r.min,
                max: r.max,
            });
        }
        Ok(())
    }

    /// Checks the width of a sample.
    pub fn check_width(&self, width: usize) -> Result<(), InputError> {
        if width != self.features {
            return Err(InputError::Width {
                expected: self.features,
                found: width,
            });
        }
        Ok(())
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
    /// How the tables read the accumulators.
    pub(crate) reading: Reading,
    /// The tensors the model was built from (without the file's metadata): with the
    /// architecture and the input range, what defines it (a compiled model's file holds them).
    pub(crate) source: std::sync::Arc<TensorFile>,
}

/// Segment of declared layers between two weighted layers, as the runtime executes it.
pub(super) struct Segment {
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
            let expected = arch.signature();
            if *found != expected {
                return Err(LoadError::ArchitectureMismatch {
                    expected,
                    found: found.clone(),
                });
            }
        }
        let mut reader = Reader::new(arch, file);
        let layers = arch.layers();

        // Client-side prefix up to the first weighted layer.
        let first_weighted = layers
            .iter()
            .position(Layer::is_weighted_sum)
            .expect("the analysis requires a weighted layer");
        let prefix = reader.segment(0, first_weighted)?;
        let Some((_, input_quantizer)) = prefix.quantizer else {
            unreachable!("the analysis requires a quantizer before the first weighted layer")
        };
        let features = stage_input_features(arch, first_weighted);
        let input_range = arch.analysis()[first_weighted - 1]
            .range
            .expect("quantized input");
        let input = InputStage {
            activations: prefix.activations,
            quantizer: input_quantizer.clone(),
            features,
            range: input_range,
        };

        let (stages, output_activations) = graph::GraphBuilder::new(&mut reader, arch).build(
            first_weighted,
            input_quantizer,
            input_range,
        )?;
        reader.check_unused()?;
        let mut model = QuantModel {
            arch: arch.clone(),
            input,
            layers: stages,
            output_activations,
            reading: Reading::Exact,
            // The tensors only: the metadata (an architecture signature, checked above) does
            // not change the model.
            source: std::sync::Arc::new(TensorFile {
                tensors: file.tensors.clone(),
                metadata: Default::default(),
            }),
        };
        model.drop_unread_neurons();
        model.refresh_factors();
        Ok(model)
    }

    /// The architecture.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The client-side input stage.
    pub(crate) fn input_stage(&self) -> &InputStage {
        &self.input
    }

    /// Table lookups (bootstraps) per inference, as the loader built them: the analysis's
    /// count (`tests/graph.rs` holds them equal for weights without zero rows) less the
    /// neurons whose output is known without one (no non-zero weight, or read by no later
    /// layer: `WeightedStage::fixed_output`).
    pub fn lookups(&self) -> usize {
        self.layers.iter().map(WeightedStage::bootstraps).sum()
    }

    /// Drops the weights of every lookup neuron whose output no later stage reads with a
    /// non-zero weight, last stage first (a dropped neuron may leave its own inputs unread):
    /// such a neuron needs no bootstrap, and the outputs do not change.
    fn drop_unread_neurons(&mut self) {
        for k in (0..self.layers.len()).rev() {
            if self.layers[k].lookup.is_none() {
                continue;
            }
            let mut read = vec![false; self.layers[k].out_features];
            let mut readers = 0;
            for reader in &self.layers {
                let mut start = 0;
                for (&source, &width) in reader.sources.iter().zip(&reader.source_widths) {
                    if source == Source::Stage(k) {
                        readers += 1;
                        for &(i, w) in reader.links.iter().flatten() {
                            if w != 0 && (start..start + width).contains(&i) {
                                read[i - start] = true;
                            }
                        }
                    }
                    start += width;
                }
            }
            if readers == 0 {
                continue;
            }
            let stage = &mut self.layers[k];
            let mut dropped = false;
            for (j, &read) in read.iter().enumerate() {
                if !read && !stage.links[j].is_empty() {
                    dropped |= stage.drop_unread(j);
                }
            }
            if dropped {
                self.rebuild_lookup(k);
            }
        }
    }

    /// The real value of one output accumulator unit, per output: the resolution of the
    /// network's outputs.
    pub fn output_step(&self) -> Vec<f64> {
        let last = self.layers.last().expect("a model has a weighted layer");
        (0..last.out_features)
            .map(|j| last.unit[last.group(j)])
            .collect()
    }

    /// The quantized input values the tables are built for (the input quantizer's range, or
    /// less after [`restrict_inputs`](Self::restrict_inputs)).
    pub fn input_range(&self) -> IntRange {
        self.input.range
    }

    /// The weighted layers in order.
    pub(crate) fn layers(&self) -> &[WeightedStage] {
        &self.layers
    }

    /// Activations applied to the de-quantized output on the client.
    pub fn output_activations(&self) -> &[Activation] {
        &self.output_activations
    }

    /// A copy whose tables read the accumulators as `reading` says: accumulators that fit
    /// are read exactly, wider ones at the full resolution of the set's table (see
    /// [`AccumulatorEncoding::new`]). Clear, Simulate and FHE all evaluate these tables.
    pub(crate) fn with_reading(&self, reading: Reading) -> QuantModel {
        // Below 2 bits no set exists and no table could keep its margins.
        let reading = match reading {
            Reading::Table {
                precision,
                resolution,
            } => Reading::Table {
                precision: precision.max(2),
                resolution,
            },
            exact => exact,
        };
        let mut model = self.clone();
        model.reading = reading;
        for i in 0..model.layers.len() {
            model.rebuild_lookup(i);
        }
        model.refresh_factors();
        model
    }

    /// The stages reading stage `k`'s lookup outputs.
    pub(crate) fn readers_of(&self, k: usize) -> impl Iterator<Item = usize> + '_ {
        self.layers
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.sources.contains(&Source::Stage(k)))
            .map(|(c, _)| c)
    }

    /// The scaling factor Δ stage `k`'s lookup outputs are encoded at: the smallest of its
    /// readers' (the others multiply them up, see `WeightedStage::source_factors`).
    pub(crate) fn output_delta(&self, k: usize) -> u64 {
        self.readers_of(k)
            .map(|c| self.input_delta(c))
            .min()
            .unwrap_or(1)
    }

    /// Recomputes every stage's source factors from the current encodings.
    fn refresh_factors(&mut self) {
        for c in 0..self.layers.len() {
            let delta = self.input_delta(c);
            let factors = self.layers[c]
                .sources
                .iter()
                .map(|&s| match s {
                    Source::Input => 1,
                    Source::Stage(p) => {
                        let out = self.output_delta(p);
                        debug_assert_eq!(delta % out, 0, "stage {c} reads stage {p}");
                        (delta / out) as i64
                    }
                })
                .collect();
            self.layers[c].source_factors = factors;
        }
    }

    /// Rebuilds the tables of layer `i`'s lookup (if any) for the model's reading and the
    /// layer's current exact ranges.
    fn rebuild_lookup(&mut self, i: usize) {
        let Some(old) = self.layers[i].lookup.take() else {
            return;
        };
        let rebuilt = build_lookup(
            &self.layers[i],
            old.layer,
            old.declared,
            self.reading,
            old.activations,
            old.quantizer,
            i == 0,
        );
        self.layers[i].lookup = Some(rebuilt);
    }

    /// The same model for quantized inputs restricted to `[min, max]` (within the input
    /// quantizer's range), e.g. `[0, max]` for pixels, which are never negative: the first
    /// layer's exact accumulator ranges shrink, so its lookups read them at a finer
    /// resolution. Clients refuse inputs outside the range with a named error
    /// ([`InputError::OutOfRange`]), never a silent wrong
    /// output.
    pub fn restrict_inputs(
        &self,
        min: i64,
        max: i64,
    ) -> Result<QuantModel, crate::error::InputError> {
        let declared = self.input.range;
        if min > max || min < declared.min || max > declared.max {
            return Err(crate::error::InputError::Range {
                min,
                max,
                declared_min: declared.min,
                declared_max: declared.max,
            });
        }
        let range = IntRange::new(min, max);
        let mut model = self.clone();
        model.input.range = range;
        model.layers[0] = model.layers[0].with_input_range(range);
        model.rebuild_lookup(0);
        model.refresh_factors();
        Ok(model)
    }

    /// Index of the last weighted layer followed by lookups: the one whose bootstraps the
    /// client decrypts (through the layers after it), if any.
    pub(crate) fn last_lookup_layer(&self) -> Option<usize> {
        self.layers.iter().rposition(|s| s.lookup.is_some())
    }

    /// Signed width of the output accumulators, as the client decodes them (at least 2).
    ///
    /// The outputs are never bootstrapped, so their encoding keeps no padding bit: they are
    /// encoded at Δ = 2^(64 − bits) ([`output_delta_log2`](Self::output_delta_log2)) and
    /// fill the whole torus, which leaves noise twice the room a padded encoding would.
    pub(crate) fn output_encoding_bits(&self) -> u32 {
        let r = self
            .layers
            .last()
            .expect("a model has a weighted layer")
            .exact_range();
        IntRange::new(r.min.min(-1), r.max.max(0)).bits().max(2)
    }

    /// log2 of the scaling factor Δ the client decodes the outputs at: the signed output
    /// width on the torus's whole 64 bits (at most 62, so that Δ fits an `i64`).
    pub(crate) fn output_delta_log2(&self) -> u32 {
        64 - self.output_encoding_bits()
    }

    /// log2 of the power of two in the scaling factor Δ of the ciphertexts entering weighted
    /// layer `k`: the accumulator they sum into is encoded on the top bits below the padding
    /// bit (the whole Δ: [`input_delta`](Self::input_delta)).
    pub(crate) fn input_delta_log2(&self, k: usize) -> u32 {
        match &self.layers[k].lookup {
            Some(l) => 63 - l.encoding.bits,
            None => self.output_delta_log2(),
        }
    }

    /// The scaling factor Δ of the ciphertexts entering weighted layer `k`: `2^`
    /// [`input_delta_log2`](Self::input_delta_log2) times the spread of the lookup after the
    /// layer (a power of two for the first layer's inputs and for the outputs).
    pub(crate) fn input_delta(&self, k: usize) -> u64 {
        let spread = self.layers[k].lookup.as_ref().map_or(1, |l| l.spread);
        (spread as u64) << self.input_delta_log2(k)
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
                    l.describe_spread()
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

/// Number of values entering the weighted layer `i`.
pub(super) fn stage_input_features(arch: &Architecture, i: usize) -> usize {
    match arch.layers()[i] {
        Layer::QuantLinear { in_features, .. } => in_features,
        _ => geometry::input_image(arch.layers(), arch.analysis(), i)
            .map_or(0, |(c, h, w)| c * h * w),
    }
}

/// Builds the per-group tables of the lookup after `stage`.
fn build_lookup(
    stage: &WeightedStage,
    layer: usize,
    declared: Rounding,
    reading: Reading,
    activations: Vec<Activation>,
    quantizer: Quantizer,
    fresh_inputs: bool,
) -> LookupStage {
    let output = |j: usize, acc: i64| {
        let y = activations
            .iter()
            .fold(stage.dequantize_group(j, acc), |y, a| a.apply(y));
        quantizer.quantize(y)
    };
    let encoding = AccumulatorEncoding::new(stage.exact_range(), reading);
    // Only spread readings wrap (see `Wrap`); their ranges span at most `N` values.
    let tails: Vec<Option<Tails>> = stage
        .exact_ranges
        .iter()
        .enumerate()
        .map(|(j, &r)| (!encoding.exact && encoding.shift <= 0).then(|| tails(r, |a| output(j, a))))
        .collect();
    // Spread readings place each value on as many positions as fit, at any integer factor
    // (one table position per accumulator unit, times the groups' multipliers).
    let encoding = if encoding.exact || encoding.shift > 0 {
        encoding
    } else {
        encoding.unspread()
    };
    let rounding = match (encoding.exact, declared) {
        (true, _) => Rounding::Exact,
        (_, Rounding::Declared) => Rounding::Declared,
        _ => Rounding::Runtime,
    };
    let (groups, spread) = place_groups(stage, &encoding, &tails, fresh_inputs);
    let tables = (0..stage.groups)
        .map(|j| {
            let r = stage.exact_ranges[j];
            let g = groups[j];
            let (first, last) = (g.index(&encoding, r.min), g.index(&encoding, r.max));
            let values = (first..=last)
                .map(|k| output(j, g.value(&encoding, k).clamp(r.min, r.max)))
                .collect();
            Table { first, values }
        })
        .collect::<Vec<_>>();
    LookupStage {
        layer,
        encoding,
        rounding,
        declared,
        tables,
        groups,
        spread,
        activations,
        quantizer,
    }
}

/// Each group's placement, and the spread the layer's inputs carry in their scaling factor.
///
/// The spread is the largest factor every group fits at (wrapping where it must): it costs
/// no noise, since the inputs' noise does not grow with their scaling factor. On fresh
/// inputs (the first layer) each group then multiplies its weights by the largest integer
/// that still fits: that scales the inputs' encryption noise with the spread but not the
/// modulus switch's. On bootstrap outputs the weights stay as they are (their noise is the
/// bootstrap's, too large to scale).
fn place_groups(
    stage: &WeightedStage,
    encoding: &AccumulatorEncoding,
    tails: &[Option<Tails>],
    fresh_inputs: bool,
) -> (Vec<GroupEncoding>, i64) {
    // Without a common spread: on fresh inputs each group's own multiplier, if any fits.
    let plain = || -> Vec<GroupEncoding> {
        let max = if fresh_inputs { MAX_MULTIPLIER } else { 1 };
        stage
            .exact_ranges
            .iter()
            .zip(tails)
            .map(|(&r, &t)| GroupEncoding::new(encoding, r, max, t))
            .collect()
    };
    if encoding.exact || encoding.shift > 0 {
        return (plain(), 1);
    }
    let placed_at = |m: i64| {
        stage
            .exact_ranges
            .iter()
            .zip(tails)
            .map(|(&r, &t)| GroupEncoding::place_at(encoding, r, m, t))
            .collect::<Option<Vec<_>>>()
    };
    // A stage reading a shared source spreads by a power of two: the source's readers
    // then take its outputs at scaling factors that divide one another (see
    // `QuantModel::output_delta`).
    let Some((groups, spread)) = (1..=MAX_MULTIPLIER)
        .rev()
        .filter(|m: &i64| !stage.shared_inputs || m.count_ones() == 1)
        .find_map(|m| placed_at(m).map(|g| (g, m)))
    else {
        return (plain(), 1);
    };
    if !fresh_inputs {
        return (groups, spread);
    }
    let groups = stage
        .exact_ranges
        .iter()
        .zip(tails)
        .zip(groups)
        .map(|((&r, &t), at_spread)| {
            (2..=MAX_MULTIPLIER / spread)
                .rev()
                .find_map(|w| GroupEncoding::place_at(encoding, r, spread * w, t))
                .unwrap_or(at_spread)
        })
        .collect();
    (groups, spread)
}

/// The saturated ends of `f` over `range`: how far its value at each end stays unchanged.
pub(crate) fn tails(range: IntRange, f: impl Fn(i64) -> i64) -> Tails {
    let (low, high) = (f(range.min), f(range.max));
    let low_end = (range.min..=range.max)
        .find(|&a| f(a) != low)
        .map_or(range.max, |a| a - 1);
    let high_start = (range.min..=range.max)
        .rev()
        .find(|&a| f(a) != high)
        .map_or(range.min, |a| a + 1);
    Tails {
        low,
        low_end,
        high,
        high_start,
    }
}

#[cfg(test)]
mod wrap_tests;
