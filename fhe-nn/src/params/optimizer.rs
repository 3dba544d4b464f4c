//! The parameter search: every classic KS-PBS set shape in a grid (LWE dimension, GLWE
//! dimension and polynomial size, bootstrap and keyswitch decompositions), each with the
//! minimal secure noise of TFHE-rs's security curve, plus TFHE-rs's vetted sets; for each, the
//! largest lookup precision whose failure probabilities meet the targets (noise from
//! TFHE-rs's formulas), and its cost from the fitted [`CostModel`](super::cost::CostModel). The feasible candidates
//! come back cheapest first; the compile step then checks accuracy (Simulate) in that order.

use super::cost::{Work, FITTED};
use super::sets::{classic_custom, pbs_of, vetted, InputKey, ParameterSet, Shape, PRECISIONS};
use crate::model::MAX_MULTIPLIER;
use crate::params::noise::{failure_probability, half_box, half_output_box, NoiseModel};
use tfhe::shortint::parameters::ClassicPBSParameters;

/// What the lookups after one weighted layer ask of a parameter set.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDemand {
    /// Declared index of the weighted layer feeding the lookups.
    pub layer: usize,
    /// Lookups (neurons).
    pub count: usize,
    /// Largest squared weight 2-norm over the neurons (with their multipliers, where the
    /// model is compiled).
    pub norm2_squared: f64,
    /// Where the model is not compiled yet: per group, its largest squared weight 2-norm and
    /// the span of its exact accumulator range, which bound the multiplier a table of `N`
    /// positions can give it (see [`norm2_squared_at`](Self::norm2_squared_at)).
    pub multiplier_bound: Vec<(f64, i64)>,
    /// Whether the layer reads fresh encryptions (the first layer) or bootstrap outputs.
    pub fresh: bool,
    /// Bits the accumulators need to be read exactly.
    pub exact_bits: u32,
    /// Whether the declaration requires an exact reading (`exact`).
    pub must_be_exact: bool,
    /// Widest span (values) of one group's exact range, and of the union over the groups:
    /// how far a reading narrower than `exact_bits` spreads each value
    /// ([`positions_per_value`](Self::positions_per_value)).
    pub spans: (i64, i64),
    /// Per group, for wrapping placements (see `model::Wrap`): the span of its exact range,
    /// the values from its minimum to where its function's high tail starts, and from where
    /// its low tail ends to its maximum. Empty where unknown (no wrapping counted).
    pub reaches: Vec<(i64, i64, i64)>,
}

impl LayerDemand {
    /// The largest squared weight 2-norm the lookups can have with a table of
    /// `polynomial_size` positions: each group's weights times the largest weight multiplier
    /// it can get. A group's whole multiplier is at most what its span allows on the whole
    /// torus (`2N` positions, wrapping); the layer's common spread, which the inputs'
    /// scaling factor carries and which scales no noise, is at least what the widest group
    /// allows on half of the half torus (margins of at most an eighth of it at both ends).
    /// A layer whose accumulators overflow the table is read with its low bits rounded off
    /// (by less than `8/3` of its span over `N`), and a group's multiplier then reaches that
    /// factor times `N` over its span.
    pub fn norm2_squared_at(&self, polynomial_size: usize) -> f64 {
        let n = polynomial_size as i64;
        let widest = self.multiplier_bound.iter().map(|b| b.1).max().unwrap_or(1);
        let spread = (n / 2 / widest.max(1)).clamp(1, MAX_MULTIPLIER);
        let layer_span = self.spans.1.max(widest);
        self.multiplier_bound
            .iter()
            .map(|&(norm2, span)| {
                let span = span.max(1);
                let mut whole = 2 * n / span;
                // Within three quarters of `N` the layer fits (margins of at most `N/8`).
                if 4 * layer_span > 3 * n - 4 {
                    whole = whole.max(3 * layer_span / span + 1);
                }
                let w = (whole.clamp(1, MAX_MULTIPLIER) / spread).max(1) as f64;
                norm2 * w * w
            })
            .fold(self.norm2_squared, f64::max)
    }
}

impl LayerDemand {
    /// The fewest table positions any accumulator value gets when the table has `2N =
    /// 2^(resolution+1)` positions per torus and margins of half a `precision`-bit box: the
    /// whole layer is spread by the largest integer every group fits at, on the half torus
    /// or wrapping where the group's tails allow it (see `model::build_lookup`), and on fresh
    /// inputs each group's weights may spread it further.
    pub fn positions_per_value(&self, polynomial_size: usize, precision: u32) -> i64 {
        let resolution = polynomial_size.trailing_zeros();
        let margin = 1i64 << resolution.saturating_sub(precision + 1);
        let n = polynomial_size as i64;
        let usable = n - 2 * margin;
        let span = if self.fresh {
            self.spans.0
        } else {
            self.spans.1
        };
        let plain = (usable / span.max(1)).min(MAX_MULTIPLIER);
        if self.reaches.is_empty() || self.spans.1 > usable {
            // Unknown tails, or low bits rounded off (no wrapping).
            return plain;
        }
        // The layer's spread is the largest factor every group fits at, on the half torus
        // or wrapping (`GroupEncoding::place_at`: its reading may run up to the negated copy
        // of the other tail, less a margin, and span at most `2N` less the margins).
        self.reaches
            .iter()
            .map(|&(span, to_high, from_low)| {
                let half = usable / span.max(1);
                let wrapped = ((n - margin) / to_high.max(1))
                    .min((n - margin) / from_low.max(1))
                    .min((2 * n - 2 * margin) / span.max(1));
                half.max(wrapped)
            })
            .min()
            .unwrap_or(plain)
            .min(MAX_MULTIPLIER)
    }

    /// Half the width (torus units) within which noise keeps a reading right: half a box of
    /// the set, and for a lookup declared exact but read spread (its accumulator wider than
    /// the set's boxes), half the positions of one value less the phase's rounding.
    fn half_width(&self, polynomial_size: usize, precision: u32) -> f64 {
        let half = half_box(precision);
        if self.must_be_exact && self.exact_bits > precision {
            let per_value = self.positions_per_value(polynomial_size, precision);
            let spread = (per_value - 1).max(0) as f64 / 2.0 / (2.0 * polynomial_size as f64);
            half.min(spread)
        } else {
            half
        }
    }
}

/// What a network asks of a parameter set.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    /// One entry per layer followed by lookups.
    pub lookups: Vec<LayerDemand>,
    /// The outputs the client decrypts.
    pub outputs: OutputDemand,
    /// The homomorphic work of one inference (lookups and non-zero weights, on fresh inputs
    /// or on bootstrap outputs), which the cost model prices.
    pub work: Work,
}

/// What the outputs the client decrypts demand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputDemand {
    /// Outputs per inference.
    pub count: usize,
    /// Their largest squared weight 2-norm.
    pub norm2_squared: f64,
    /// Whether the output layer reads fresh encryptions (a network without lookups).
    pub fresh: bool,
    /// Width of the output encoding (no padding bit).
    pub bits: u32,
    /// Whether the output layer reads the last lookup layer's bootstraps only: then, and
    /// only then, may that layer bootstrap with a key of its own (the outputs' noise is
    /// charged at that key's variance; the server uses it for that layer alone).
    pub reads_last_lookups_only: bool,
}

/// A parameter set that meets the failure targets, with its cost and noise.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub set: ParameterSet,
    /// Seconds of one core per inference, by the cost model.
    pub cost: f64,
    /// Noise standard deviation before each lookup layer's blind rotation, in positions of
    /// the table (`2N` per torus).
    pub sigma_positions: Vec<f64>,
}

/// Failure targets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Targets {
    /// Largest failure probability of one lookup (and of one decrypted output).
    pub p_error: f64,
    /// Largest failure probability of one inference (union bound), if set.
    pub global_p_error: Option<f64>,
}

/// The failure probabilities of `demand` under `params` at lookup precision `precision`:
/// per lookup layer, then per output, then for one whole inference (union bound).
pub fn failure_probabilities(
    demand: &Demand,
    noise: &NoiseModel,
    precision: u32,
) -> (Vec<f64>, f64, f64) {
    let per_layer: Vec<f64> = demand
        .lookups
        .iter()
        .map(|l| {
            failure_probability(
                noise.lookup_variance(l.norm2_squared_at(noise.polynomial_size), l.fresh),
                l.half_width(noise.polynomial_size, precision),
            )
        })
        .collect();
    let output = output_failure(demand, noise);
    let global = (demand
        .lookups
        .iter()
        .zip(&per_layer)
        .map(|(l, p)| l.count as f64 * p)
        .sum::<f64>()
        + demand.outputs.count as f64 * output)
        .min(1.0);
    (per_layer, output, global)
}

/// The failure probability of decoding one output (its weighted sum of the last lookups'
/// bootstraps, or of fresh inputs, off by more than half a box of its encoding).
fn output_failure(demand: &Demand, noise: &NoiseModel) -> f64 {
    let o = &demand.outputs;
    failure_probability(
        noise.output_variance(o.norm2_squared, o.fresh),
        half_output_box(o.bits),
    )
}

fn meets(targets: &Targets, (layers, output, global): &(Vec<f64>, f64, f64)) -> bool {
    layers.iter().chain([output]).all(|&p| p <= targets.p_error)
        && targets.global_p_error.is_none_or(|g| *global <= g)
}

/// The largest precision at which `params`'s shape meets the targets, if any (at most
/// `log2 N - 1`, so a box has at least two positions).
fn best_precision(
    demand: &Demand,
    shape: &Shape,
    noise: &NoiseModel,
    targets: &Targets,
    cap: u32,
) -> Option<u32> {
    let top = (shape.polynomial_size.trailing_zeros() - 1).min(cap);
    (*PRECISIONS.start()..=top)
        .rev()
        .find(|&p| meets(targets, &failure_probabilities(demand, noise, p)))
}

/// Per lookup layer: the noise standard deviation before the blind rotation, worst neuron,
/// in table positions (`2N` per torus).
pub(crate) fn sigma_positions(demand: &Demand, noise: &NoiseModel) -> Vec<f64> {
    let positions = 2.0 * noise.polynomial_size as f64;
    demand
        .lookups
        .iter()
        .map(|l| {
            noise
                .lookup_variance(l.norm2_squared_at(noise.polynomial_size), l.fresh)
                .sqrt()
                * positions
        })
        .collect()
}

/// Bootstrap decompositions `(base_log, levels)` searched, cheapest (fewest levels) first.
const PBS_DECOMPOSITIONS: [(usize, usize); 5] = [(23, 1), (18, 1), (15, 2), (11, 3), (9, 4)];

/// The decomposition the last lookup layer bootstraps at, and the noise with it: `params`'s
/// own where the outputs decrypt within the targets with it, else, where other lookup layers
/// come before it (which keep `params`'s, their outputs only feeding further lookups), the
/// cheapest that does. `None` if none does.
fn last_layer_pbs(
    demand: &Demand,
    params: &ClassicPBSParameters,
    noise: NoiseModel,
    targets: &Targets,
) -> Option<((usize, usize), NoiseModel)> {
    let own = pbs_of(params);
    let decrypts = |noise: &NoiseModel| output_failure(demand, noise) <= targets.p_error;
    if demand.lookups.is_empty() || decrypts(&noise) {
        return Some((own, noise));
    }
    if demand.lookups.len() < 2 || !demand.outputs.reads_last_lookups_only {
        // The only lookup layer: a second key would leave the set's own unused. Outputs
        // that also read earlier lookups' bootstraps (a `Concat` or an `Add` before the
        // output layer) carry the set's own bootstrap noise in those terms: no second key.
        return None;
    }
    PBS_DECOMPOSITIONS
        .into_iter()
        .filter(|&pbs| pbs != own)
        .map(|pbs| (pbs, noise.with_last_layer_pbs(params, pbs)))
        .find(|(_, noise)| decrypts(noise))
}

/// The grid of custom shapes searched.
pub fn grid() -> Vec<Shape> {
    const RINGS: [(usize, usize); 8] = [
        (4, 512),
        (1, 1024),
        (2, 1024),
        (1, 2048),
        (2, 2048),
        (1, 4096),
        (1, 8192),
        (1, 16384),
    ];
    let mut shapes = Vec::new();
    for (k, big_n) in RINGS {
        for n in (560..=1120).step_by(8) {
            for pbs in PBS_DECOMPOSITIONS {
                for ks_base in 1..=10usize {
                    for ks_levels in 1..=(44 / ks_base).min(16) {
                        shapes.push(Shape {
                            lwe_dimension: n,
                            glwe_dimension: k,
                            polynomial_size: big_n,
                            pbs,
                            ks: (ks_base, ks_levels),
                        });
                    }
                }
            }
        }
    }
    shapes
}

/// The feasible candidates for `demand`, cheapest first by the fitted cost model: custom
/// sets from [`grid`] (unless `vetted_only`) at the largest precision that meets the
/// targets (at most 10 bits), and the vetted sets, each with the inputs under either key.
pub fn candidates(demand: &Demand, targets: &Targets, vetted_only: bool) -> Vec<Candidate> {
    let mut found = Vec::new();
    let candidate = |set: ParameterSet, noise: &NoiseModel| Candidate {
        cost: FITTED.inference_seconds(&set, &demand.work),
        sigma_positions: sigma_positions(demand, noise),
        set,
    };
    for inputs in [InputKey::Big, InputKey::Small] {
        for precision in PRECISIONS {
            let set = vetted(precision)
                .expect("a vetted set per precision")
                .with_inputs(inputs);
            let noise = NoiseModel::of(&set);
            if meets(targets, &failure_probabilities(demand, &noise, precision)) {
                found.push(candidate(set, &noise));
            }
        }
        if !vetted_only {
            // The largest precision a custom set may use; beyond 10 bits a box is too
            // narrow for any noise this grid produces.
            for shape in grid() {
                let params = classic_custom(&shape, 2);
                let noise = NoiseModel::new(&params, inputs);
                let Some((last, noise)) = last_layer_pbs(demand, &params, noise, targets) else {
                    continue;
                };
                if let Some(precision) = best_precision(demand, &shape, &noise, targets, 10) {
                    let set = ParameterSet::custom(shape, precision)
                        .with_inputs(inputs)
                        .with_last_layer_pbs(Some(last));
                    found.push(candidate(set, &noise));
                }
            }
        }
    }
    found.sort_by(|a, b| a.cost.total_cmp(&b.cost));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::security;

    /// Outputs read from the last lookup layer only.
    fn outputs(count: usize, norm2_squared: f64, bits: u32) -> OutputDemand {
        OutputDemand {
            count,
            norm2_squared,
            fresh: false,
            bits,
            reads_last_lookups_only: true,
        }
    }

    fn card_like() -> Demand {
        Demand {
            lookups: vec![LayerDemand {
                layer: 1,
                count: 128,
                norm2_squared: 900.0,
                multiplier_bound: Vec::new(),
                fresh: true,
                exact_bits: 10,
                must_be_exact: false,
                spans: (1186, 1186),
                reaches: Vec::new(),
            }],
            outputs: outputs(10, 200.0, 9),
            work: Work {
                lookups: 0,
                fresh_lookups: 128,
                multiply_adds: 1280,
                fresh_multiply_adds: 784 * 128 / 2,
                last_layer_lookups: 128,
            },
        }
    }

    #[test]
    fn every_candidate_is_secure_and_meets_the_targets() {
        let targets = Targets {
            p_error: 2f64.powi(-40),
            global_p_error: None,
        };
        let demand = card_like();
        let found = candidates(&demand, &targets, false);
        assert!(!found.is_empty());
        assert_secure_and_within_targets(&found, &demand, &targets);
        assert!(found.windows(2).all(|w| w[0].cost <= w[1].cost));
    }

    /// Every candidate is 128-bit secure (both parameter lists) and meets the targets with
    /// the noise of its whole set (the last lookup layer's decomposition included).
    fn assert_secure_and_within_targets(found: &[Candidate], demand: &Demand, targets: &Targets) {
        for c in found {
            security::check_set(&c.set).unwrap();
            let noise = NoiseModel::of(&c.set);
            let (layers, output, _) = failure_probabilities(demand, &noise, c.set.precision);
            assert!(
                layers
                    .iter()
                    .chain([&output])
                    .all(|&p| p <= targets.p_error),
                "{}",
                c.set.label()
            );
        }
    }

    #[test]
    fn the_input_key_is_chosen_by_noise_and_cost() {
        let targets = Targets {
            p_error: 2f64.powi(-40),
            global_p_error: None,
        };
        let best = |demand: &Demand, inputs: InputKey| {
            candidates(demand, &targets, false)
                .into_iter()
                .find(|c| c.set.inputs == inputs)
                .expect("a candidate for each input key")
        };
        // The card: every lookup reads fresh inputs through moderate weights, so skipping
        // the keyswitch (its time and its noise) pays.
        let card = card_like();
        let (small, big) = (best(&card, InputKey::Small), best(&card, InputKey::Big));
        assert!(small.cost < big.cost, "{} vs {}", small.cost, big.cost);
        assert_eq!(
            candidates(&card, &targets, false)[0].set.inputs,
            InputKey::Small
        );
        // Without a keyswitch the first lookups' noise is the modulus switch's and the
        // inputs' only: less than with it, on the same shape.
        let shape = big.set.shape();
        let params = classic_custom(&shape, 2);
        let [with, without] = [InputKey::Big, InputKey::Small]
            .map(|k| sigma_positions(&card, &NoiseModel::new(&params, k))[0]);
        assert!(without < with, "{without} vs {with}");
        // Huge first-layer weights amplify the small key's larger input noise past what the
        // keyswitch costs: the big key wins.
        let mut heavy = card_like();
        heavy.lookups[0].norm2_squared = 1e8;
        assert_eq!(
            candidates(&heavy, &targets, false)[0].set.inputs,
            InputKey::Big
        );
    }

    /// The CNN's three lookup layers (288 exact on fresh inputs, 64 and 32 approximate) and
    /// its 10 outputs, which decrypt exactly only with a fine bootstrap decomposition.
    fn cnn_like() -> Demand {
        let layer =
            |layer, count, norm2_squared, fresh, exact_bits, must_be_exact, span| LayerDemand {
                layer,
                count,
                norm2_squared,
                multiplier_bound: Vec::new(),
                fresh,
                exact_bits,
                must_be_exact,
                spans: (span, span),
                reaches: Vec::new(),
            };
        Demand {
            lookups: vec![
                layer(1, 288, 25.0, true, 6, true, 40),
                layer(4, 64, 60.0, false, 8, false, 148),
                layer(7, 32, 75.0, false, 8, false, 163),
            ],
            outputs: outputs(10, 150.0, 10),
            work: Work {
                lookups: 96,
                fresh_lookups: 288,
                multiply_adds: 5000,
                fresh_multiply_adds: 2592,
                last_layer_lookups: 32,
            },
        }
    }

    #[test]
    fn the_last_lookup_layer_gets_its_own_decomposition_where_it_pays() {
        let targets = Targets {
            p_error: 2f64.powi(-40),
            global_p_error: None,
        };
        let demand = cnn_like();
        let found = candidates(&demand, &targets, false);
        let best = &found[0];
        let (own, last) = (
            best.set.params.pbs_level.0,
            best.set.last_layer_decomposition().1,
        );
        assert!(last > own, "{}", best.set.label());
        // Cheaper than the best set whose lookups all bootstrap alike, by the lookups before
        // the last layer (352 of 384) bootstrapping at fewer levels.
        let uniform = found
            .iter()
            .find(|c| c.set.last_layer_pbs.is_none())
            .expect("a set with one decomposition");
        assert!(
            best.cost < 0.9 * uniform.cost,
            "{} vs {}",
            best.cost,
            uniform.cost
        );
        assert_secure_and_within_targets(&found, &demand, &targets);
        for c in &found {
            if c.set.last_layer_pbs.is_some() {
                // Only where the set's own decomposition leaves the outputs too noisy.
                let own = NoiseModel::new(&c.set.params, c.set.inputs);
                let p = output_failure(&demand, &own);
                assert!(p > targets.p_error, "{}", c.set.label());
            }
        }
        // With one lookup layer (the card) there is nothing to split.
        assert!(candidates(&card_like(), &targets, false)
            .iter()
            .all(|c| c.set.last_layer_pbs.is_none()));
    }

    /// Outputs that read earlier lookups too (a `Concat` before the output layer) carry the
    /// set's own bootstrap noise in those terms: no candidate gives the last lookup layer a
    /// key of its own, and every one decrypts its outputs within the target at the set's own
    /// decomposition (the noise the server really adds there).
    #[test]
    fn outputs_read_from_several_lookup_layers_get_no_second_key() {
        let targets = Targets {
            p_error: 2f64.powi(-40),
            global_p_error: None,
        };
        let mut demand = cnn_like();
        demand.outputs.reads_last_lookups_only = false;
        let found = candidates(&demand, &targets, false);
        assert!(!found.is_empty());
        for c in &found {
            assert_eq!(c.set.last_layer_pbs, None, "{}", c.set.label());
            let own = NoiseModel::new(&c.set.params, c.set.inputs);
            let p = output_failure(&demand, &own);
            assert!(p <= targets.p_error, "{}: {p:e}", c.set.label());
        }
        // The same network with its outputs read from the last lookups only is cheaper.
        let split = candidates(&cnn_like(), &targets, false);
        assert!(split[0].cost < found[0].cost);
    }

    #[test]
    fn every_grid_shape_is_secure() {
        for shape in grid() {
            security::check(&classic_custom(&shape, 4)).unwrap();
        }
    }

    #[test]
    fn a_looser_p_error_buys_a_cheaper_set() {
        let strict = Targets {
            p_error: 2f64.powi(-40),
            global_p_error: None,
        };
        let loose = Targets {
            p_error: 0.01,
            ..strict
        };
        let demand = card_like();
        let a = &candidates(&demand, &strict, false)[0];
        let b = &candidates(&demand, &loose, false)[0];
        assert!(b.cost < a.cost, "{} vs {}", b.cost, a.cost);
    }

    #[test]
    fn exact_lookups_may_be_read_spread_when_every_value_has_room() {
        // The CNN's first convolution: 288 lookups declared exact on 6-bit accumulators
        // (span 40), fresh inputs.
        let targets = Targets {
            p_error: 2f64.powi(-40),
            global_p_error: None,
        };
        let demand = |span| Demand {
            lookups: vec![LayerDemand {
                layer: 1,
                count: 288,
                norm2_squared: 25.0,
                multiplier_bound: Vec::new(),
                fresh: true,
                exact_bits: 6,
                must_be_exact: true,
                spans: (span, span),
                reaches: Vec::new(),
            }],
            outputs: outputs(10, 200.0, 9),
            work: Work {
                lookups: 0,
                fresh_lookups: 288,
                multiply_adds: 0,
                fresh_multiply_adds: 2592,
                last_layer_lookups: 288,
            },
        };
        let found = candidates(&demand(40), &targets, false);
        // Read spread, cheaper than 6-bit boxes (which need N = 8192).
        let best = &found[0];
        assert!(best.set.precision < 6, "{}", best.set.name);
        assert!(
            best.set.params.polynomial_size.0 < 8192,
            "{}",
            best.set.name
        );
        for c in found.iter().filter(|c| c.set.precision < 6) {
            // Half a value's width holds at least 7 standard deviations (2^-40 ≈ 7.1σ).
            let n = c.set.params.polynomial_size.0;
            let per_value = demand(40).lookups[0].positions_per_value(n, c.set.precision);
            assert!(
                (per_value - 1) as f64 / 2.0 >= 7.0 * c.sigma_positions[0],
                "{}: {per_value} positions per value, σ {}",
                c.set.name,
                c.sigma_positions[0]
            );
        }
        // A span too wide to give every value its own positions: only whole boxes remain.
        let wide = candidates(&demand(2000), &targets, false);
        assert!(wide.iter().all(|c| c.set.precision >= 6));
    }

    #[test]
    fn custom_sets_beat_the_vetted_ones() {
        let targets = Targets {
            p_error: 2f64.powi(-40),
            global_p_error: None,
        };
        let demand = card_like();
        let all = candidates(&demand, &targets, false);
        let vetted = candidates(&demand, &targets, true);
        assert!(all[0].cost < vetted[0].cost);
        assert!(!all[0].set.is_vetted());
    }
}
