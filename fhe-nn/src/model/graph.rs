//! The runtime graph: declared layers → weighted stages that read earlier stages' lookups.
//!
//! A chain makes one stage per weighted layer, each reading the one before. A `Fork` keeps a
//! stage's outputs for its join; `Add` and `Sub` make a stage summing two re-quantized
//! tensors, `Mul` three (the squares of their sum and difference, then their difference),
//! `Concat` none (the next stage reads both); `MaxPool2d` makes one stage per level of its
//! comparison trees. A re-quantization of a tensor that is already quantized (a join's
//! side, an activation on a lookup's output) is a stage of its own with one link per value.

use std::collections::HashSet;

use super::encoding::Reading;
use super::reader::Reader;
use super::stage::{Combine, Connectivity, Source, WeightedStage};
use super::{build_lookup, Quantizer};
use crate::arch::activation::Activation;
use crate::arch::analysis::{unsigned_bits, IntRange, Rounding};
use crate::arch::layer::{max_tree_levels, JoinOp, Layer};
use crate::architecture::Architecture;
use crate::error::LoadError;

/// The tensor after a declared layer, as the runtime holds it.
enum Tensor {
    /// Quantized values: the client's inputs or stages' lookup outputs, one after another.
    Quantized {
        sources: Vec<Source>,
        quantizer: Quantizer,
        range: IntRange,
    },
    /// Stage `stage`'s accumulators, with the activations its lookup will fold.
    Pending {
        stage: usize,
        activations: Vec<Activation>,
    },
}

/// Builds the stages of a network from its first weighted layer on.
pub(super) struct GraphBuilder<'r, 'a> {
    reader: &'r mut Reader<'a>,
    arch: &'a Architecture,
    stages: Vec<WeightedStage>,
    /// Sources read by more than one stage (every forked tensor).
    shared: HashSet<Source>,
}

impl<'r, 'a> GraphBuilder<'r, 'a> {
    pub(super) fn new(reader: &'r mut Reader<'a>, arch: &'a Architecture) -> Self {
        GraphBuilder {
            reader,
            arch,
            stages: Vec::new(),
            shared: HashSet::new(),
        }
    }

    /// The stages and the activations the client applies to the outputs.
    pub(super) fn build(
        mut self,
        first_weighted: usize,
        input_quantizer: Quantizer,
        input_range: IntRange,
    ) -> Result<(Vec<WeightedStage>, Vec<Activation>), LoadError> {
        let layers = self.arch.layers();
        let mut tensor = Tensor::Quantized {
            sources: vec![Source::Input],
            quantizer: input_quantizer,
            range: input_range,
        };
        let mut forks: Vec<Tensor> = Vec::new();
        for (i, &layer) in layers.iter().enumerate().skip(first_weighted) {
            tensor = match (layer, tensor) {
                (
                    Layer::QuantLinear { .. } | Layer::QuantConv2d(_) | Layer::AvgPool2d { .. },
                    Tensor::Quantized {
                        sources,
                        quantizer,
                        range,
                    },
                ) => {
                    let stage = self.reader.weighted_stage(i, range, quantizer.scale)?;
                    let exact = stage.exact_range();
                    if exact.min < stage.worst_case.min || exact.max > stage.worst_case.max {
                        return Err(LoadError::RangeEscapesBound {
                            layer: i + 1,
                            exact: exact.to_string(),
                            bound: stage.worst_case.to_string(),
                        });
                    }
                    self.pending(stage, sources)
                }
                (Layer::AvgPool2d { .. }, Tensor::Pending { .. }) => {
                    return Err(self.reader.unsupported(
                        i,
                        "pooling an accumulator (quantize before pooling)".into(),
                    ));
                }
                (
                    Layer::Activation(a),
                    Tensor::Pending {
                        stage,
                        mut activations,
                    },
                ) => {
                    activations.push(a);
                    Tensor::Pending { stage, activations }
                }
                (
                    Layer::Activation(a),
                    Tensor::Quantized {
                        sources,
                        quantizer,
                        range,
                    },
                ) => {
                    let stage = self.identity(i, sources, &quantizer, range);
                    Tensor::Pending {
                        stage,
                        activations: vec![a],
                    }
                }
                (Layer::QuantIdentity { bits, signed }, tensor) => {
                    let q = self.reader.quantizer(i, bits, signed)?;
                    let rounding = self.arch.analysis()[i].lookup.map(|l| l.rounding);
                    let stage = self.close(i, tensor, &q, rounding.unwrap_or(Rounding::Exact));
                    Tensor::Quantized {
                        sources: vec![Source::Stage(stage)],
                        range: self.output_range(stage),
                        quantizer: q,
                    }
                }
                (Layer::Flatten, tensor) => tensor,
                (
                    Layer::Fork,
                    Tensor::Quantized {
                        sources,
                        quantizer,
                        range,
                    },
                ) => {
                    self.shared.extend(sources.iter().copied());
                    forks.push(Tensor::Quantized {
                        sources: sources.clone(),
                        quantizer: quantizer.clone(),
                        range,
                    });
                    Tensor::Quantized {
                        sources,
                        quantizer,
                        range,
                    }
                }
                (Layer::Join { op, bits, signed }, tensor) => {
                    let Some(fork) = forks.pop() else {
                        unreachable!("the analysis joins only open forks")
                    };
                    let q = self.reader.quantizer(i, bits, signed)?;
                    let rounding = self.arch.analysis()[i].lookup.map(|l| l.rounding);
                    let right = self.close(i, tensor, &q, rounding.unwrap_or(Rounding::Exact));
                    // The analysis packs small forked tensors with the current one (no lookup
                    // of their own): see `MAX_PACKED_JOIN_BITS`.
                    let packed =
                        op != JoinOp::Concat && self.arch.analysis()[i].fork_lookup.is_none();
                    if packed {
                        self.packed_join(i, op, fork, right, q)
                    } else if let Some(affine) = affine_requantization(&fork, &q)
                        .filter(|_| matches!(op, JoinOp::Add | JoinOp::Sub))
                    {
                        self.affine_join(i, op, fork, right, q, affine)
                    } else if op == JoinOp::Concat
                        && affine_requantization(&fork, &q) == Some((1, 0))
                    {
                        // The shared quantizer gives the forked values back: the
                        // concatenation reads them as they are.
                        let Tensor::Quantized {
                            mut sources,
                            range: x,
                            ..
                        } = fork
                        else {
                            unreachable!("a fork saves a quantized tensor")
                        };
                        let range = JoinOp::Concat.range(x, self.output_range(right));
                        sources.push(Source::Stage(right));
                        Tensor::Quantized {
                            sources,
                            quantizer: q,
                            range,
                        }
                    } else {
                        let left = self.close(i, fork, &q, Rounding::Exact);
                        self.join(i, op, left, right, q)
                    }
                }
                (
                    Layer::MaxPool2d { kernel },
                    Tensor::Quantized {
                        sources,
                        quantizer,
                        range,
                    },
                ) => match self.poolable_before_lookup(&sources) {
                    Some(k) => self.max_pool_before_lookup(i, k),
                    None => self.max_pool(i, kernel, sources, quantizer, range),
                },
                (layer, _) => {
                    return Err(self
                        .reader
                        .unsupported(i, format!("{} at this place", layer.name())))
                }
            };
        }
        match tensor {
            Tensor::Pending { stage, activations } if stage + 1 == self.stages.len() => {
                Ok((self.stages, activations))
            }
            _ => Err(self.reader.unsupported(
                layers.len() - 1,
                "an output that is not the last weighted layer's".into(),
            )),
        }
    }

    /// Adds `stage` reading `sources`; its accumulators await their lookup.
    fn pending(&mut self, mut stage: WeightedStage, sources: Vec<Source>) -> Tensor {
        stage.shared_inputs = sources.iter().any(|s| self.shared.contains(s));
        stage.source_factors = vec![1; sources.len()];
        stage.source_widths = sources.iter().map(|&s| self.width(s)).collect();
        stage.sources = sources;
        self.stages.push(stage);
        Tensor::Pending {
            stage: self.stages.len() - 1,
            activations: Vec::new(),
        }
    }

    /// A stage reading each value of `sources` as it is (one link per value), for a lookup
    /// on a tensor that is already quantized.
    fn identity(
        &mut self,
        layer: usize,
        sources: Vec<Source>,
        quantizer: &Quantizer,
        range: IntRange,
    ) -> usize {
        let n = sources.iter().map(|&s| self.width(s)).sum();
        let links = (0..n).map(|j| vec![(j, 1)]).collect();
        let stage =
            WeightedStage::from_links(layer, n, links, range, quantizer.scale, Combine::Affine);
        self.pending(stage, sources);
        self.stages.len() - 1
    }

    /// Closes `tensor` with the lookup into `quantizer` formed at declared layer `layer`: the
    /// pending stage's lookup, or a re-quantization stage for a quantized tensor. Returns
    /// the stage whose lookup outputs hold the result.
    fn close(
        &mut self,
        layer: usize,
        tensor: Tensor,
        quantizer: &Quantizer,
        declared: Rounding,
    ) -> usize {
        let (stage, activations) = match tensor {
            Tensor::Pending { stage, activations } => (stage, activations),
            Tensor::Quantized {
                sources,
                quantizer: from,
                range,
            } => (self.identity(layer, sources, &from, range), Vec::new()),
        };
        let lookup = build_lookup(
            &self.stages[stage],
            layer,
            declared,
            Reading::Exact,
            activations,
            quantizer.clone(),
            stage == 0,
        );
        self.stages[stage].lookup = Some(lookup);
        stage
    }

    /// The values stage `k`'s lookup can output (over its tables).
    fn output_range(&self, k: usize) -> IntRange {
        let lookup = self.stages[k].lookup.as_ref().expect("a closed stage");
        let values = lookup
            .tables()
            .iter()
            .flat_map(|t| t.values.iter().copied());
        let (min, max) = values.fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        IntRange::new(min.min(max), max)
    }

    /// Values per sample that `source` holds.
    fn width(&self, source: Source) -> usize {
        match source {
            Source::Input => self.stages.first().map_or(0, |s| s.in_features),
            Source::Stage(k) => self.stages[k].out_features,
        }
    }

    /// The join of stages `left` (the fork's side) and `right`, both re-quantized by `q`.
    fn join(
        &mut self,
        layer: usize,
        op: JoinOp,
        left: usize,
        right: usize,
        q: Quantizer,
    ) -> Tensor {
        let (l, r) = (self.output_range(left), self.output_range(right));
        let (m, n) = (
            self.stages[left].out_features,
            self.stages[right].out_features,
        );
        let sides = vec![Source::Stage(left), Source::Stage(right)];
        let range = op.range(l, r);
        // Element-wise: output j reads value j of either side with these weights.
        let element_wise = |a: i64, b: i64| -> Vec<Vec<(usize, i64)>> {
            (0..n).map(|j| vec![(j, a), (n + j, b)]).collect()
        };
        let bound = self.arch.analysis()[layer].range;
        match op {
            JoinOp::Concat => Tensor::Quantized {
                sources: sides,
                quantizer: q,
                range,
            },
            JoinOp::Add | JoinOp::Sub => {
                let links = element_wise(1, op.sign());
                let mut stage =
                    WeightedStage::from_links(layer, m + n, links, range, q.scale, Combine::Affine);
                stage.worst_case = bound.unwrap_or(range);
                self.pending(stage, sides)
            }
            JoinOp::Mul => {
                // ⌊(a+b)²/4⌋ − ⌊(a−b)²/4⌋ = a·b (a+b and a−b have one parity): two exact
                // lookups read both sides, a difference of their outputs the product.
                self.shared.extend(sides.iter().copied());
                let mut squares = Vec::new();
                for sum in [JoinOp::Add, JoinOp::Sub] {
                    let sum_range = sum.range(l, r);
                    let stage = WeightedStage::from_links(
                        layer,
                        m + n,
                        element_wise(1, sum.sign()),
                        sum_range,
                        1.0,
                        Combine::QuarterSquare,
                    );
                    let square = self.pending(stage, sides.clone());
                    let largest = sum_range.min.abs().max(sum_range.max.abs());
                    // Integers at scale 1, wide enough for the largest square.
                    let integers = Quantizer {
                        scale: 1.0,
                        bits: IntRange::new(0, largest * largest / 4).bits() + 1,
                        signed: true,
                    };
                    let k = self.close(layer, square, &integers, Rounding::Exact);
                    squares.push(Source::Stage(k));
                }
                let mut stage = WeightedStage::from_links(
                    layer,
                    2 * n,
                    element_wise(1, -1),
                    range,
                    q.scale * q.scale,
                    Combine::Affine,
                );
                stage.worst_case = bound.unwrap_or(range);
                self.pending(stage, squares)
            }
        }
    }

    /// The join of the forked tensor `fork` (as it is) with stage `right`'s outputs (already
    /// re-quantized by `q`) in one stage reading both packed as `radix · x + v`: its lookup
    /// re-quantizes `x` by `q` and joins, so the fork's side costs no lookup (nor a product
    /// its squares).
    fn packed_join(
        &mut self,
        layer: usize,
        op: JoinOp,
        fork: Tensor,
        right: usize,
        q: Quantizer,
    ) -> Tensor {
        let Tensor::Quantized {
            sources,
            quantizer: from,
            range: x,
        } = fork
        else {
            unreachable!("a fork saves a quantized tensor")
        };
        let v = self.output_range(right);
        let radix = v.max - v.min + 1;
        let n = self.stages[right].out_features;
        let links = (0..n).map(|j| vec![(j, radix), (n + j, 1)]).collect();
        let exact = IntRange::new(radix * x.min + v.min, radix * x.max + v.max);
        // Each forked value as the shared quantizer re-quantizes it.
        let fork_values = (x.min..=x.max)
            .map(|value| q.quantize(from.scale * value as f64))
            .collect();
        let unit = if op == JoinOp::Mul {
            q.scale * q.scale
        } else {
            q.scale
        };
        let combine = Combine::PackedJoin {
            op,
            radix,
            low: (x.min, v.min),
            fork: fork_values,
        };
        let mut stage = WeightedStage::from_links(layer, 2 * n, links, exact, unit, combine);
        stage.worst_case = exact;
        let mut all = sources;
        all.push(Source::Stage(right));
        self.pending(stage, all)
    }

    /// The add or difference of the forked tensor `fork`, whose re-quantization by `q` is
    /// `α·x + β` on every value it can hold (see [`affine_requantization`]), with stage
    /// `right`'s outputs (already re-quantized by `q`): one stage reading `α·x ± v`, `β` in its
    /// bias, so the fork's side costs no lookup.
    fn affine_join(
        &mut self,
        layer: usize,
        op: JoinOp,
        fork: Tensor,
        right: usize,
        q: Quantizer,
        (alpha, beta): (i64, i64),
    ) -> Tensor {
        let Tensor::Quantized {
            sources, range: x, ..
        } = fork
        else {
            unreachable!("a fork saves a quantized tensor")
        };
        let v = self.output_range(right);
        let n = self.stages[right].out_features;
        let sign = op.sign();
        let links = (0..n)
            .map(|j| {
                let fork_side = (alpha != 0).then_some((j, alpha));
                fork_side.into_iter().chain([(n + j, sign)]).collect()
            })
            .collect();
        let scaled = IntRange::new(alpha * x.min, alpha * x.max);
        let exact = JoinOp::range(op, scaled, v);
        let mut stage =
            WeightedStage::from_links(layer, 2 * n, links, exact, q.scale, Combine::Affine);
        stage.bias = vec![beta as f64 * q.scale];
        stage.worst_case = exact;
        let mut all = sources;
        all.push(Source::Stage(right));
        self.pending(stage, all)
    }

    /// The stage whose lookup outputs `sources` are, where `MaxPool2d` can take the max of
    /// its accumulators instead and apply its lookup once per window: the lookup is a
    /// non-decreasing function `f` of the accumulator (so `max f(a) = f(max a)`, exactly),
    /// nothing else reads its outputs, and its accumulators are a narrow weighted sum of
    /// earlier lookups (a join's), so that their differences are cheap to read.
    fn poolable_before_lookup(&self, sources: &[Source]) -> Option<usize> {
        let &[Source::Stage(k)] = sources else {
            return None;
        };
        let stage = &self.stages[k];
        let lookup = stage.lookup.as_ref()?;
        let range = stage.exact_range();
        let difference_bits = unsigned_bits(range.max.abs_diff(range.min).saturating_mul(2));
        let narrow_join = k + 1 == self.stages.len()
            && !self.shared.contains(&Source::Stage(k))
            && stage.connectivity == Connectivity::Graph
            && matches!(stage.combine, Combine::Affine)
            && !stage.sources.contains(&Source::Input)
            && difference_bits <= MAX_POOLED_DIFFERENCE_BITS;
        // Checked last: it reads the table at every accumulator value.
        let non_decreasing =
            || (range.min..range.max).all(|a| lookup.read(0, a) <= lookup.read(0, a + 1));
        (narrow_join && non_decreasing()).then_some(k)
    }

    /// `MaxPool2d` over stage `k`'s accumulators, before its lookup `f` (see
    /// [`poolable_before_lookup`](Self::poolable_before_lookup)): per window, a tree of
    /// `max(a, b) = b + relu(a − b)`, where `a − b` is a weighted sum of the stage's inputs
    /// and the tree's earlier lookups (one exact lookup per pair), then `f` once on the
    /// window's max, folded into the next quantizer's lookup. A 2×2 window costs 4 lookups
    /// instead of 7 (`f` on each value, then 3 comparisons).
    fn max_pool_before_lookup(&mut self, layer: usize, k: usize) -> Tensor {
        debug_assert_eq!(k + 1, self.stages.len(), "the pooled stage is the last");
        let base = self.stages.pop().expect("the pooled stage is the last");
        let lookup = base.lookup.clone().expect("a closed stage");
        let window = self
            .arch
            .window(layer)
            .expect("the analysis pools images only");
        let range = base.exact_range();
        let span = range.max - range.min;
        let difference = IntRange::new(-span, span);
        // `relu(a − b)` as an integer in accumulator units.
        let integers = Quantizer {
            scale: 1.0,
            bits: unsigned_bits(span as u64),
            signed: false,
        };
        // Each window's candidates, as weighted sums over `inputs` read one after another.
        let positions = window.positions();
        let mut windows: Vec<Vec<Vec<(usize, i64)>>> = (0..window.channels * positions)
            .map(|out| {
                window
                    .pool_sources(out / positions, out % positions)
                    .map(|e| base.links[e].clone())
                    .collect()
            })
            .collect();
        let mut inputs = base.sources.clone();
        let mut width = base.in_features;
        while windows.iter().any(|candidates| candidates.len() > 1) {
            let mut differences = Vec::new();
            for candidates in &mut windows {
                let mut kept = Vec::with_capacity(candidates.len().div_ceil(2));
                for pair in candidates.chunks(2) {
                    match pair {
                        [a, b] => {
                            let relu = (width + differences.len(), 1);
                            differences.push(weighted_sum(a, b, -1));
                            kept.push(weighted_sum(b, &[relu], 1));
                        }
                        [a] => kept.push(a.clone()),
                        _ => unreachable!("chunks of two"),
                    }
                }
                *candidates = kept;
            }
            let mut stage = WeightedStage::from_links(
                layer,
                width,
                differences,
                difference,
                1.0,
                Combine::Affine,
            );
            stage.worst_case = difference;
            self.shared.extend(inputs.iter().copied());
            let Tensor::Pending { stage: level, .. } = self.pending(stage, inputs.clone()) else {
                unreachable!("a new stage is pending")
            };
            let pending = Tensor::Pending {
                stage: level,
                activations: vec![Activation::ReLU],
            };
            let level = self.close(layer, pending, &integers, Rounding::Exact);
            width += self.stages[level].out_features;
            inputs.push(Source::Stage(level));
        }
        let maxima = windows
            .into_iter()
            .map(|mut candidates| candidates.pop().expect("a window holds a value"))
            .collect();
        let combine = Combine::Pooled {
            activations: lookup.activations,
            quantizer: lookup.quantizer,
        };
        let mut stage =
            WeightedStage::from_links(layer, width, maxima, range, base.unit[0], combine);
        stage.bias = base.bias.clone();
        stage.worst_case = range;
        self.shared.extend(inputs.iter().copied());
        self.pending(stage, inputs)
    }

    /// The comparison trees of `MaxPool2d(kernel)` over a quantized image: one stage per
    /// level, each comparing pairs packed as `radix · a + b`; every level but the last
    /// outputs the larger value as it is, the last awaits the next quantizer.
    fn max_pool(
        &mut self,
        layer: usize,
        kernel: usize,
        sources: Vec<Source>,
        quantizer: Quantizer,
        range: IntRange,
    ) -> Tensor {
        let window = self
            .arch
            .window(layer)
            .expect("the analysis pools images only");
        // Each window's values, as indices into the current level's inputs.
        let positions = window.positions();
        let mut windows: Vec<Vec<usize>> = (0..window.channels * positions)
            .map(|out| {
                window
                    .pool_sources(out / positions, out % positions)
                    .collect()
            })
            .collect();
        let radix = range.max - range.min + 1;
        let packed = IntRange::new(range.min * (radix + 1), range.max * (radix + 1));
        let combine = Combine::MaxPair {
            radix,
            low: range.min,
        };
        let levels = max_tree_levels(kernel * kernel);
        let mut current = sources.clone();
        let mut in_features = sources.iter().map(|&s| self.width(s)).sum();
        let mut tensor = Tensor::Quantized {
            sources,
            quantizer: quantizer.clone(),
            range,
        };
        for (level, &per_window) in levels.iter().enumerate() {
            let mut links = Vec::with_capacity(windows.len() * per_window);
            for (index, window) in windows.iter_mut().enumerate() {
                for pair in window.chunks(2) {
                    links.push(match *pair {
                        [a, b] => vec![(a, radix), (b, 1)],
                        [a] => vec![(a, radix + 1)],
                        _ => unreachable!("chunks of two"),
                    });
                }
                *window = (index * per_window..(index + 1) * per_window).collect();
            }
            let stage = WeightedStage::from_links(
                layer,
                in_features,
                links,
                packed,
                quantizer.scale,
                combine.clone(),
            );
            in_features = stage.out_features;
            tensor = self.pending(stage, current.clone());
            if level + 1 < levels.len() {
                let k = self.close(layer, tensor, &quantizer, Rounding::Exact);
                current = vec![Source::Stage(k)];
                tensor = Tensor::Quantized {
                    sources: current.clone(),
                    quantizer: quantizer.clone(),
                    range,
                };
            }
        }
        tensor
    }
}

/// Widest difference of two accumulators that [`GraphBuilder::max_pool_before_lookup`]
/// compares: its lookups stay cheap to read exactly at any parameter set.
const MAX_POOLED_DIFFERENCE_BITS: u32 = 6;

/// `a + sign · b`, as one list of `(input, weight)`.
fn weighted_sum(a: &[(usize, i64)], b: &[(usize, i64)], sign: i64) -> Vec<(usize, i64)> {
    let mut sum: Vec<(usize, i64)> = a.to_vec();
    for &(i, w) in b {
        match sum.iter_mut().find(|(j, _)| *j == i) {
            Some((_, v)) => *v += sign * w,
            None => sum.push((i, sign * w)),
        }
    }
    sum.retain(|&(_, w)| w != 0);
    sum
}

/// `(α, β)` where re-quantizing every value `x` the forked tensor `fork` can hold by `q` gives
/// exactly `α·x + β` (for instance the identity, where the join's quantizer has the fork's
/// scale): the join then reads the fork's values as they are, with no lookup.
fn affine_requantization(fork: &Tensor, q: &Quantizer) -> Option<(i64, i64)> {
    let Tensor::Quantized {
        quantizer: from,
        range,
        ..
    } = fork
    else {
        return None;
    };
    let requantize = |x: i64| q.quantize(from.scale * x as f64);
    let alpha = if range.max > range.min {
        requantize(range.min + 1) - requantize(range.min)
    } else {
        0
    };
    let beta = requantize(range.min) - alpha * range.min;
    (range.min..=range.max)
        .all(|x| requantize(x) == alpha * x + beta)
        .then_some((alpha, beta))
}
