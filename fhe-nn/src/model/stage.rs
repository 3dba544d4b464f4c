//! Weighted stages: fully connected, convolution and pooling layers as integer weighted sums
//! with their connectivity, exact ranges, scales and lookup.

use super::encoding::{AccumulatorEncoding, GroupEncoding, Reading, Table};
use super::Quantizer;
use crate::arch::activation::Activation;
use crate::arch::analysis::{exact_accumulator, IntRange, Rounding};
use crate::arch::geometry::Window;
use crate::arch::layer::JoinOp;

/// The lookup after a weighted layer: one table per neuron, into the next quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct LookupStage {
    /// Declared layer where the lookup forms (its quantizer).
    pub(crate) layer: usize,
    pub(crate) encoding: AccumulatorEncoding,
    /// How the table reads the accumulator with the current precision.
    pub(crate) rounding: Rounding,
    /// What the declaration asked for (compile-time analysis).
    pub(crate) declared: Rounding,
    pub(crate) tables: Vec<Table>,
    /// Each group's placement on its table (offset, multiplier).
    pub(crate) groups: Vec<GroupEncoding>,
    /// The part of every group's multiplier that the scaling factor of this layer's inputs
    /// carries (positions per accumulator unit, the same for the whole layer): the client's
    /// Δ on the first layer, the previous lookups' outputs on the others.
    pub(crate) spread: i64,
    /// Real functions folded into the table (activations, then the quantizer).
    pub(crate) activations: Vec<Activation>,
    pub(crate) quantizer: Quantizer,
}

impl LookupStage {
    /// How the lookup reads its accumulators.
    pub fn encoding(&self) -> &AccumulatorEncoding {
        &self.encoding
    }

    /// One table per group.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// How the lookup reads its accumulators, for reports: exactly, with low bits rounded
    /// off, or each value spread over some table positions (and how many of them the
    /// inputs' scaling factor carries).
    pub(crate) fn describe_spread(&self) -> String {
        let shift = self.encoding.shift;
        if self.encoding.exact {
            return ", exact".to_string();
        }
        if shift > 0 {
            return format!(", {shift} low bits rounded off");
        }
        let (low, high) = self.positions_per_value();
        let range = if low == high {
            format!("{low}")
        } else {
            format!("{low} to {high}")
        };
        let carried = if self.spread > 1 {
            format!(
                " ({} carried by the inputs' scaling factor)",
                self.spread << -shift
            )
        } else {
            String::new()
        };
        format!(", approximate, {range} positions per value{carried}")
    }

    /// The fewest and the most table positions one accumulator value gets, over the groups
    /// (a fraction where low bits are rounded off).
    pub(crate) fn positions_per_value(&self) -> (f64, f64) {
        let per_value = self
            .groups
            .iter()
            .map(|g| g.multiplier as f64 * 2f64.powi(-self.encoding.shift));
        let low = per_value.clone().fold(f64::INFINITY, f64::min);
        let high = per_value.fold(0.0, f64::max);
        if self.groups.is_empty() {
            (1.0, 1.0)
        } else {
            (low, high)
        }
    }

    /// What group `group`'s weights are multiplied by: its multiplier divided by the layer's
    /// spread (1 after a bootstrap, whose noise is not worth scaling).
    pub fn weight_multiplier(&self, group: usize) -> i64 {
        self.groups[group].multiplier / self.spread
    }

    /// The table position of accumulator `acc` of group `group`.
    pub fn index(&self, group: usize, acc: i64) -> i64 {
        self.groups[group].index(&self.encoding, acc)
    }

    /// Clear's output for accumulator `acc` of group `group`.
    pub fn read(&self, group: usize, acc: i64) -> i64 {
        self.tables[group].get(self.index(group, acc))
    }

    /// Positions of the bootstrap's table (`N`, or `2^precision` boxes when exact).
    fn positions(&self) -> i64 {
        1i64 << self.encoding.precision()
    }

    /// Twice the constant added back after the bootstrap (the centre of a wrapping group's
    /// tails, see [`Wrap`](super::encoding::Wrap); 0 otherwise).
    pub(crate) fn center_doubled(&self, group: usize) -> i64 {
        self.groups[group].wrap.map_or(0, |w| w.low + w.high)
    }

    /// Twice the value the bootstrap's table holds at position `x` in `0..positions`.
    pub(crate) fn physical_doubled(&self, group: usize, x: i64) -> i64 {
        let table = &self.tables[group];
        let Some(w) = self.groups[group].wrap else {
            return 2 * table.get(x);
        };
        let c2 = w.low + w.high;
        let last = table.first + table.values.len() as i64 - 1;
        if (table.first..=last).contains(&x) {
            2 * table.get(x) - c2
        } else if x + self.positions() <= last {
            // Read negated at `x + N`.
            c2 - 2 * table.get(x + self.positions())
        } else if x > last {
            // Beyond the high end (and, negated at `x + N`, below the low end).
            2 * w.high - c2
        } else {
            2 * w.low - c2
        }
    }

    /// The output of a bootstrap whose noisy reading lands on table position `k` (any
    /// integer: the blind rotation reads it modulo `2N`, negated on the second half).
    pub fn bootstrap_output(&self, group: usize, k: i64) -> i64 {
        let n = self.positions();
        let r = k.rem_euclid(2 * n);
        let doubled = if r < n {
            self.physical_doubled(group, r)
        } else {
            -self.physical_doubled(group, r - n)
        };
        (doubled + self.center_doubled(group)) / 2
    }

    /// The positions a reading may land on and still give the table's value at the nearest
    /// end: the half torus, or for a wrapping group up to the negated copies of its tails.
    /// Beyond them a lookup fails outright.
    pub fn reach(&self, group: usize) -> (i64, i64) {
        let n = self.positions();
        match self.groups[group].wrap {
            None => (0, n - 1),
            Some(w) => (w.high_start - n, w.low_end + n),
        }
    }
}

/// How the outputs of a weighted layer connect to its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connectivity {
    /// Every output reads every input; each output is its own group.
    Dense,
    /// A 2-d convolution over `(channels, height, width)` inputs; each output channel is a
    /// group (one kernel, one scale, one bias, one table).
    Conv(Window),
    /// Sum pooling (the average's division folds into the next table); each channel is a group.
    Pool(Window),
    /// Links built by the graph (a join's element-wise sums, an identity before a
    /// re-quantization, a max-pooling level's packed pairs): one group for the whole layer.
    Graph,
}

/// Where a stage's inputs come from: the client's encrypted inputs, or an earlier stage's
/// lookup outputs. A stage reads its sources one after another as one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The client's encrypted inputs.
    Input,
    /// The lookup outputs of stage `k`.
    Stage(usize),
}

/// What one accumulator unit means before the lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum Combine {
    /// A real value: `unit · acc + bias`.
    Affine,
    /// Two values `a, b` in `[low, low + radix − 1]` packed as `radix · a + b`: the real value
    /// is `unit · max(a, b)` (a max-pooling level).
    MaxPair { radix: i64, low: i64 },
    /// `unit · ⌊acc² / 4⌋` (a product's square of a sum or difference).
    QuarterSquare,
    /// A forked value `x` and a re-quantized value `v` packed as `acc = radix · x + v`
    /// (`x ≥ low.0`, `v` in `[low.1, low.1 + radix − 1]`): the real value is
    /// `unit · (fork[x − low.0] ∘ v)`, `fork` holding `x` re-quantized by the join's
    /// quantizer and `∘` the join's operation.
    PackedJoin {
        op: JoinOp,
        radix: i64,
        low: (i64, i64),
        fork: Vec<i64>,
    },
    /// The max of a pooling window's accumulators of an affine stage, through the lookup
    /// that stage had (max-pooling moved before it): the real value is
    /// `s · quantizer(activations(unit · acc + bias))`, `s` the quantizer's scale.
    Pooled {
        activations: Vec<Activation>,
        quantizer: Quantizer,
    },
}

/// A weighted layer (fully connected, convolution, or pooling): integer weighted sums.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedStage {
    /// Declared layer index.
    pub(crate) layer: usize,
    pub(crate) in_features: usize,
    pub(crate) out_features: usize,
    pub(crate) connectivity: Connectivity,
    /// Outputs sharing weights, scales, ranges and tables (see [`Connectivity`]).
    pub(crate) groups: usize,
    /// Weights of each group, `[group][fan_in]`.
    pub(crate) weights: Vec<i64>,
    /// Non-zero `(input index, weight)` of each output.
    pub(crate) links: Vec<Vec<(usize, i64)>>,
    /// Range of the quantized input.
    pub(crate) input_range: IntRange,
    /// Exact accumulator range of each group.
    pub(crate) exact_ranges: Vec<IntRange>,
    /// The compile-time worst case.
    pub(crate) worst_case: IntRange,
    /// Real value of one accumulator unit per group: input scale × weight scale.
    pub(crate) unit: Vec<f64>,
    pub(crate) bias: Vec<f64>,
    /// The lookup into the next layer (tables per group); `None` for the output layer.
    pub(crate) lookup: Option<LookupStage>,
    /// Where the inputs come from, in the order they are read.
    pub(crate) sources: Vec<Source>,
    /// Values each source holds.
    pub(crate) source_widths: Vec<usize>,
    /// Per source, the integer its ciphertexts are multiplied by on their way in: the ratio
    /// of this stage's scaling factor Δ to the one the source was encoded at (the smallest
    /// of its readers'); 1 in a chain.
    pub(crate) source_factors: Vec<i64>,
    /// Whether a source is read by other stages too: its outputs then come at the smallest
    /// of its readers' scaling factors, and each reader's spread is a power of two so that
    /// the others' are multiples of it.
    pub(crate) shared_inputs: bool,
    pub(crate) combine: Combine,
}

impl WeightedStage {
    /// The lookup into the next layer; `None` for the output layer.
    pub fn lookup(&self) -> Option<&LookupStage> {
        self.lookup.as_ref()
    }

    pub(super) fn new(
        layer: usize,
        in_features: usize,
        connectivity: Connectivity,
        groups: usize,
        weights: Vec<i64>,
        input_range: IntRange,
    ) -> WeightedStage {
        let fan_in = weights.len() / groups.max(1);
        let (links, out_features) = links(connectivity, in_features, groups, fan_in, &weights);
        let exact_ranges = exact_ranges(connectivity, &weights, fan_in, input_range);
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
            sources: vec![Source::Input],
            source_widths: vec![in_features],
            source_factors: vec![1],
            shared_inputs: false,
            combine: Combine::Affine,
        }
    }

    /// A stage whose links the graph builds (see [`Connectivity::Graph`]): one group, the
    /// given exact range, and inputs of scale `unit`.
    pub(super) fn from_links(
        layer: usize,
        in_features: usize,
        links: Vec<Vec<(usize, i64)>>,
        exact: IntRange,
        unit: f64,
        combine: Combine,
    ) -> WeightedStage {
        WeightedStage {
            layer,
            in_features,
            out_features: links.len(),
            connectivity: Connectivity::Graph,
            groups: 1,
            weights: Vec::new(),
            links,
            input_range: exact,
            exact_ranges: vec![exact],
            worst_case: exact,
            unit: vec![unit],
            bias: vec![0.0],
            lookup: None,
            sources: vec![Source::Input],
            source_widths: vec![in_features],
            source_factors: vec![1],
            shared_inputs: false,
            combine,
        }
    }

    /// Where the inputs come from.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The factor input `i` is multiplied by (see `source_factors`), given each source's
    /// width.
    pub(crate) fn input_factor(&self, i: usize, widths: &[usize]) -> i64 {
        let mut start = 0;
        for (k, &w) in widths.iter().enumerate() {
            if i < start + w {
                return self.source_factors[k];
            }
            start += w;
        }
        1
    }

    /// The same layer fed by inputs in `input_range` (a sub-range of its declared one):
    /// tighter exact ranges. The lookup, if any, must be rebuilt.
    pub(super) fn with_input_range(&self, input_range: IntRange) -> WeightedStage {
        if self.connectivity == Connectivity::Graph {
            return self.clone();
        }
        let fan_in = self.weights.len() / self.groups.max(1);
        WeightedStage {
            input_range,
            exact_ranges: exact_ranges(self.connectivity, &self.weights, fan_in, input_range),
            ..self.clone()
        }
    }

    /// The group of an output.
    pub fn group(&self, neuron: usize) -> usize {
        match self.connectivity {
            Connectivity::Dense => neuron,
            Connectivity::Graph => 0,
            _ => neuron / (self.out_features / self.groups),
        }
    }

    /// Sum of squared weights of an output (its weight 2-norm squared), what scales the
    /// noise; each weight times its source's factor (see `source_factors`).
    pub fn norm2_squared(&self, neuron: usize) -> f64 {
        if self.source_factors.iter().all(|&f| f == 1) {
            return self.links[neuron]
                .iter()
                .map(|&(_, w)| (w * w) as f64)
                .sum();
        }
        let widths = self.source_widths();
        self.links[neuron]
            .iter()
            .map(|&(i, w)| {
                let f = (w * self.input_factor(i, &widths)) as f64;
                f * f
            })
            .sum()
    }

    /// The width of each source, in reading order.
    pub(crate) fn source_widths(&self) -> Vec<usize> {
        self.source_widths.clone()
    }

    /// The squared 2-norm of the weights an output's ciphertext is actually computed with:
    /// its weights times its group's multiplier.
    pub fn effective_norm2_squared(&self, neuron: usize) -> f64 {
        let m = self.multiplier(neuron) as f64;
        self.norm2_squared(neuron) * m * m
    }

    /// The integer an output's weights are multiplied by on its way into its lookup (see
    /// [`GroupEncoding`]; the layer's spread is carried by its inputs' scaling factor
    /// instead); 1 for the output layer.
    pub fn multiplier(&self, neuron: usize) -> i64 {
        self.lookup
            .as_ref()
            .map_or(1, |l| l.weight_multiplier(self.group(neuron)))
    }

    /// The output of neuron `j`'s lookup where it is known without a bootstrap: the neuron
    /// has no non-zero weight, so its accumulator is always 0 (which its group's exact range
    /// holds), and its lookup always gives the table's value at 0. `None` for a neuron that
    /// bootstraps, and on the output layer.
    pub fn fixed_output(&self, j: usize) -> Option<i64> {
        let lookup = self.lookup.as_ref()?;
        let g = self.group(j);
        let range = self.exact_ranges[g];
        (self.links[j].is_empty() && range.min <= 0 && range.max >= 0).then(|| lookup.read(g, 0))
    }

    /// Bootstraps per inference: the neurons of a lookup layer whose output is not fixed
    /// (see [`fixed_output`](Self::fixed_output)); 0 on the output layer.
    pub fn bootstraps(&self) -> usize {
        if self.lookup.is_none() {
            return 0;
        }
        (0..self.out_features)
            .filter(|&j| self.fixed_output(j).is_none())
            .count()
    }

    /// Drops the weights of neuron `j`, whose output nothing reads: it then needs no
    /// bootstrap (its output is fixed). Only where 0 lies in its group's exact range (a
    /// dense neuron is its own group, whose range becomes `[0, 0]`); returns whether it did.
    pub(super) fn drop_unread(&mut self, j: usize) -> bool {
        let g = self.group(j);
        if self.connectivity == Connectivity::Dense {
            let fan_in = self.weights.len() / self.groups.max(1);
            self.weights[g * fan_in..(g + 1) * fan_in].fill(0);
            self.exact_ranges[g] = IntRange::new(0, 0);
        } else if self.exact_ranges[g].min > 0 || self.exact_ranges[g].max < 0 {
            return false;
        }
        self.links[j].clear();
        true
    }

    /// The accumulator of one output for the inputs `x`.
    pub fn accumulate_one(&self, neuron: usize, x: &[i64]) -> i64 {
        self.links[neuron].iter().map(|&(i, w)| w * x[i]).sum()
    }

    /// Bits the accumulators need to be read exactly (their span above the minimum).
    pub fn exact_bits(&self) -> u32 {
        AccumulatorEncoding::new(self.exact_range(), Reading::Exact).bits
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
        match self.combine {
            Combine::Affine => self.unit[group] * acc as f64 + self.bias[group],
            Combine::MaxPair { radix, low } => {
                let packed = acc - (radix + 1) * low;
                let (a, b) = (packed.div_euclid(radix), packed.rem_euclid(radix));
                self.unit[group] * (low + a.max(b)) as f64
            }
            Combine::QuarterSquare => self.unit[group] * (acc * acc).div_euclid(4) as f64,
            Combine::PackedJoin {
                op,
                radix,
                low: (x_low, v_low),
                ref fork,
            } => {
                let packed = acc - radix * x_low - v_low;
                let (x, v) = (packed.div_euclid(radix), packed.rem_euclid(radix) + v_low);
                let left = fork.get(x as usize).copied().unwrap_or(0);
                let value = match op {
                    JoinOp::Mul => left * v,
                    _ => left + op.sign() * v,
                };
                self.unit[group] * value as f64
            }
            Combine::Pooled {
                ref activations,
                ref quantizer,
            } => {
                let y = activations
                    .iter()
                    .fold(self.unit[group] * acc as f64 + self.bias[group], |y, a| {
                        a.apply(y)
                    });
                quantizer.scale * quantizer.quantize(y) as f64
            }
        }
    }
}

/// The exact accumulator range of each group for inputs in `input_range` (zero padding of
/// a convolution reads zeros too).
fn exact_ranges(
    connectivity: Connectivity,
    weights: &[i64],
    fan_in: usize,
    input_range: IntRange,
) -> Vec<IntRange> {
    let padded = match connectivity {
        Connectivity::Conv(window) if window.padding > 0 => input_range.with_zero(),
        _ => input_range,
    };
    weights
        .chunks(fan_in.max(1))
        .map(|row| exact_accumulator(row.iter().copied(), padded))
        .collect()
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
        Connectivity::Conv(window) => {
            let positions = window.positions();
            let rows = (0..groups * positions)
                .map(|out| {
                    let (channel, pos) = (out / positions, out % positions);
                    let kernel = &weights[channel * fan_in..(channel + 1) * fan_in];
                    nonzero(
                        kernel
                            .iter()
                            .enumerate()
                            .filter_map(|(col, &w)| Some((window.source(pos, col)?, w)))
                            .collect(),
                    )
                })
                .collect();
            debug_assert_eq!(in_features, window.input_features());
            (rows, groups * positions)
        }
        Connectivity::Graph => unreachable!("graph stages are built from their links"),
        Connectivity::Pool(window) => {
            let positions = window.positions();
            let rows = (0..groups * positions)
                .map(|out| {
                    window
                        .pool_sources(out / positions, out % positions)
                        .map(|i| (i, 1))
                        .collect()
                })
                .collect();
            (rows, groups * positions)
        }
    }
}
