//! The error figures of a compiled model, and what each means:
//!
//! - `p_error` (per lookup layer, and per decrypted output): the probability that one lookup
//!   fails outright, its noisy input leaving its table's margins (for a wrapping table,
//!   reaching the negated copy of its transition; for a lookup declared exact but read
//!   spread, another value's positions); from TFHE-rs's noise formulas, Gaussian tail.
//!   `global_p_error`: the same for a whole inference (union bound).
//! - `disagreement` (per lookup layer): the probability that one lookup's output differs
//!   from Clear's table on the same accumulator (a noisy reading near a step of the table);
//!   predicted by Simulate on the calibration inputs.
//! - `predictions`: the fraction of predictions (argmax) that differ from Clear's, predicted
//!   by Simulate on the calibration inputs, with a 95% confidence interval (the sample is the
//!   statistical unit: errors within one sample are correlated).

use ndarray::ArrayView2;
use rayon::prelude::*;

use super::FheOptions;
use crate::model::QuantModel;
use crate::params::noise::{log2, NoiseModel};
use crate::params::optimizer::{failure_probabilities, sigma_positions};
use crate::params::{InputKey, ParameterSet};
use crate::simulate::{sample_rng, SimulationNoise};

/// Simulations per calibration sample for the reported figures.
pub(crate) const REPORT_RUNS: usize = 8;
/// At most this many calibration samples are simulated.
pub(crate) const MAX_CALIBRATION_SAMPLES: usize = 1000;
/// Seed of the simulations behind the compile-time figures (they are reproducible).
pub(crate) const FIGURES_SEED: u64 = 0x5eed;

/// A proportion estimated from simulations, with its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// From per-sample proportions (the sample is the unit): mean ± 1.96 standard errors,
    /// and the rule of three when nothing was seen.
    pub fn from_samples(per_sample: &[f64]) -> Estimate {
        let n = per_sample.len().max(1) as f64;
        let mean = per_sample.iter().sum::<f64>() / n;
        let var = per_sample.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let half = 1.96 * (var / n).sqrt();
        let high = if mean == 0.0 { 3.0 / n } else { mean + half };
        Estimate {
            mean,
            low: (mean - half).max(0.0),
            high: high.min(1.0),
        }
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2}% (95% CI {:.2}–{:.2}%)",
            100.0 * self.mean,
            100.0 * self.low,
            100.0 * self.high
        )
    }
}

/// The figures of the lookups after one weighted layer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LookupFigures {
    /// Declared index (0-based) of the weighted layer feeding the lookups.
    pub layer: usize,
    /// Lookups (neurons).
    pub count: usize,
    /// Largest squared weight 2-norm over the layer's neurons, with their multipliers.
    pub norm2_squared: f64,
    /// Noise standard deviation before the blind rotation, worst neuron, in table positions
    /// (`2N` per torus).
    pub sigma_positions: f64,
    /// Probability that one lookup fails outright (worst neuron).
    pub p_error: f64,
    /// Whether the lookups are exact: each accumulator value has a whole box of the set, or
    /// (a lookup declared exact whose accumulator is wider than the boxes) positions of its
    /// own wide enough that a wrong reading is a failure `p_error` bounds. Otherwise the
    /// accumulators are read approximately at the table's full resolution.
    pub exact: bool,
    /// Probability that one lookup's output differs from Clear's, from Simulate.
    pub disagreement: Estimate,
}

/// A set cheaper than the chosen one that the search simulated and found off exact Clear on
/// more predictions than `max_disagreement` allows.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheaperSet {
    /// The set's label ([`ParameterSet::label`]).
    pub label: String,
    /// Seconds of one core per inference by the cost model.
    pub modeled_seconds: f64,
    /// Simulated fraction of predictions that differ from exact Clear.
    pub disagreement: f64,
}

/// The chosen parameters and the error figures (see the module documentation).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FhePlan {
    pub set: ParameterSet,
    pub lookups: Vec<LookupFigures>,
    /// Failure probability of decoding one output.
    pub output_p_error: f64,
    /// Probability that anything fails in one inference (union bound).
    pub global_p_error: f64,
    /// Fraction of predictions that differ from Clear's (the compiled tables without noise).
    pub predictions: Estimate,
    /// Fraction of predictions that differ from exact Clear (unrounded tables): rounding and
    /// noise together, what `max_disagreement` bounds.
    pub predictions_vs_exact: Estimate,
    /// Calibration samples the estimates come from.
    pub calibration_samples: usize,
    /// Seconds of one core per inference by the cost model.
    pub modeled_seconds: f64,
    /// Keyswitches per inference (lookups on bootstrap outputs, and on inputs under the big
    /// key); with none, the set's keyswitch decomposition is never used.
    pub keyswitches: usize,
    /// What a looser `max_disagreement` would buy: cheaper sets the search simulated and
    /// found too inaccurate, each markedly cheaper than the one before it and less off Clear
    /// than any cheaper one it simulated; most expensive first, possibly none.
    pub cheaper: Vec<CheaperSet>,
    pub options: FheOptions,
}

impl FhePlan {
    /// Lookups per inference.
    pub fn lookups_per_inference(&self) -> usize {
        self.lookups.iter().map(|l| l.count).sum()
    }

    /// The worst per-lookup failure probability.
    pub fn worst_p_error(&self) -> f64 {
        self.lookups
            .iter()
            .map(|l| l.p_error)
            .fold(self.output_p_error, f64::max)
    }

    /// A printable summary of the parameters and error figures.
    pub fn report(&self) -> String {
        let p = &self.set.params;
        let mut s = format!(
            "parameters: {} ({}; {}-bit boxes; n = {}, k = {}, N = {}, PBS base 2^{} × {}{}, KS base 2^{} × {}; {}); modeled {:.3} s of one core per inference\n",
            self.set.name,
            if self.set.is_vetted() { "TFHE-rs vetted" } else { "custom, 128-bit secure by TFHE-rs's curve" },
            self.set.precision, p.lwe_dimension.0, p.glwe_dimension.0, p.polynomial_size.0, p.pbs_base_log.0, p.pbs_level.0,
            match self.set.last_layer_pbs {
                Some((base, levels)) => format!(" (the last lookup layer, whose outputs are decrypted: 2^{base} × {levels}, its own key)"),
                None => String::new(),
            },
            p.ks_base_log.0, p.ks_level.0,
            match (self.set.inputs, self.keyswitches) {
                (InputKey::Big, _) => "inputs under the big key",
                (InputKey::Small, 0) => "inputs under the small key: no lookup keyswitches, the keyswitch key is unused",
                (InputKey::Small, _) => "inputs under the small key: the first lookups skip the keyswitch",
            },
            self.modeled_seconds,
        );
        for l in &self.lookups {
            s.push_str(&format!(
                "  layer {:>2}: {:>4} lookups ({}), weight 2-norm {:>6.1} (with multipliers), noise σ {:.2} positions, p_error 2^{:.1}; output differs from Clear {}\n",
                l.layer + 1,
                l.count,
                if l.exact { "exact" } else { "approximate" },
                l.norm2_squared.sqrt(),
                l.sigma_positions,
                log2(l.p_error),
                l.disagreement,
            ));
        }
        s.push_str(&format!(
            "  outputs: p_error 2^{:.1}; global p_error 2^{:.1} (target per lookup 2^{:.1})\n",
            log2(self.output_p_error),
            log2(self.global_p_error),
            log2(self.options.p_error)
        ));
        s.push_str(&format!(
            "  predictions differing from Clear (Simulate, {} calibration samples × {REPORT_RUNS}): {}; from exact Clear: {} (max {:.2}%)\n",
            self.calibration_samples,
            self.predictions,
            self.predictions_vs_exact,
            100.0 * self.options.max_disagreement,
        ));
        if !self.cheaper.is_empty() {
            s.push_str(
                "  cheaper sets the search rejected (a larger max_disagreement allows them):\n",
            );
        }
        for c in &self.cheaper {
            s.push_str(&format!(
                "    {:.2}% of predictions off exact Clear, {:.2}× the modeled time ({:.3} s of one core): {}\n",
                100.0 * c.disagreement,
                c.modeled_seconds / self.modeled_seconds,
                c.modeled_seconds,
                c.label,
            ));
        }
        s
    }
}

use crate::clear::argmax;

/// Predictions (argmax of the de-quantized outputs) of `model` without noise.
pub(crate) fn clear_predictions(model: &QuantModel, inputs: ArrayView2<i64>) -> Vec<usize> {
    (0..inputs.nrows())
        .into_par_iter()
        .map(|i| {
            let out = model.clear_int_unchecked(&inputs.row(i).to_vec());
            argmax(&model.dequantize_unchecked(&out))
        })
        .collect()
}

/// Per-sample tallies of `runs` simulations of each input.
pub(crate) struct Simulated {
    /// Per sample: fraction of runs whose prediction differs from each reference.
    pub flips: Vec<Vec<f64>>,
    /// Per sample, per stage: fraction of that stage's lookups that differ.
    pub lookups: Vec<Vec<f64>>,
    /// Per sample, per stage: mean and variance over the runs of the number of that stage's
    /// lookups that differ.
    pub counts: Vec<Vec<(f64, f64)>>,
}

/// Simulates each input `runs` times and compares the predictions with `references`.
pub(crate) fn simulate(
    tables: &QuantModel,
    noise: &SimulationNoise,
    inputs: ArrayView2<i64>,
    references: &[&[usize]],
    runs: usize,
    seed: u64,
) -> Simulated {
    let stages = tables.layers().len();
    type Tally = (Vec<f64>, Vec<f64>, Vec<(f64, f64)>);
    let per_sample: Vec<Tally> = (0..inputs.nrows())
        .into_par_iter()
        .map(|i| {
            let input = inputs.row(i).to_vec();
            let mut rng = sample_rng(seed, i);
            let mut flips = vec![0.0; references.len()];
            let (mut sum, mut squares) = (vec![0.0; stages], vec![0.0; stages]);
            for _ in 0..runs {
                let mut differ = vec![0.0; stages];
                let out = tables
                    .simulate_with(
                        noise,
                        &input,
                        &mut rng,
                        |_, _| {},
                        |k, d| differ[k] += f64::from(u8::from(d)),
                    )
                    .pop()
                    .unwrap_or_default();
                for k in 0..stages {
                    sum[k] += differ[k];
                    squares[k] += differ[k] * differ[k];
                }
                let predicted = argmax(&tables.dequantize_unchecked(&out));
                for (f, r) in flips.iter_mut().zip(references) {
                    *f += f64::from(u8::from(predicted != r[i]));
                }
            }
            let n = runs.max(1) as f64;
            let counts: Vec<(f64, f64)> = sum
                .iter()
                .zip(&squares)
                .map(|(&s, &q)| {
                    let mean = s / n;
                    (
                        mean,
                        (q / n - mean * mean).max(0.0) * n / (n - 1.0).max(1.0),
                    )
                })
                .collect();
            let lookups = tables
                .layers()
                .iter()
                .zip(&counts)
                .map(|(s, c)| c.0 / s.bootstraps().max(1) as f64)
                .collect();
            (flips.into_iter().map(|f| f / n).collect(), lookups, counts)
        })
        .collect();
    let mut simulated = Simulated {
        flips: Vec::new(),
        lookups: Vec::new(),
        counts: Vec::new(),
    };
    for (f, l, c) in per_sample {
        simulated.flips.push(f);
        simulated.lookups.push(l);
        simulated.counts.push(c);
    }
    simulated
}

/// The first `MAX_CALIBRATION_SAMPLES` rows.
pub(crate) fn capped(inputs: ArrayView2<i64>) -> ArrayView2<i64> {
    let n = inputs.nrows().min(MAX_CALIBRATION_SAMPLES);
    inputs.slice_move(ndarray::s![..n, ..])
}

/// The error figures of `tables` (the model compiled for `set`).
pub(crate) fn evaluate(
    model: &QuantModel,
    tables: &QuantModel,
    noise: &SimulationNoise,
    set: ParameterSet,
    cheaper: Vec<CheaperSet>,
    calibration: ArrayView2<i64>,
    options: &FheOptions,
) -> FhePlan {
    let demand = tables.demand();
    let noise_model = NoiseModel::of(&set);
    let (per_layer, output_p_error, global_p_error) =
        failure_probabilities(&demand, &noise_model, set.precision);
    let calibration = capped(calibration);
    let clear = clear_predictions(tables, calibration);
    let exact = clear_predictions(model, calibration);
    let sim = simulate(
        tables,
        noise,
        calibration,
        &[&clear, &exact],
        REPORT_RUNS,
        FIGURES_SEED,
    );
    let column = |rows: &[Vec<f64>], k: usize| rows.iter().map(|r| r[k]).collect::<Vec<_>>();
    let sigmas = sigma_positions(&demand, &noise_model);
    let lookups = tables
        .layers()
        .iter()
        .enumerate()
        .filter_map(|(k, s)| s.lookup.as_ref().map(|l| (k, s, l)))
        .zip(demand.lookups.iter().zip(&per_layer).zip(&sigmas))
        .map(
            |((k, stage, lookup), ((d, &p_error), &sigma_positions))| LookupFigures {
                layer: stage.layer,
                count: stage.bootstraps(),
                norm2_squared: d.norm2_squared,
                sigma_positions,
                p_error,
                exact: lookup.encoding.exact || d.must_be_exact,
                disagreement: Estimate::from_samples(&column(&sim.lookups, k)),
            },
        )
        .collect();
    let modeled_seconds = crate::params::cost::FITTED.inference_seconds(&set, &demand.work);
    let keyswitches = demand.work.lookups
        + match set.inputs {
            InputKey::Big => demand.work.fresh_lookups,
            InputKey::Small => 0,
        };
    FhePlan {
        set,
        lookups,
        keyswitches,
        cheaper,
        output_p_error,
        global_p_error,
        predictions: Estimate::from_samples(&column(&sim.flips, 0)),
        predictions_vs_exact: Estimate::from_samples(&column(&sim.flips, 1)),
        calibration_samples: calibration.nrows(),
        modeled_seconds,
        options: options.clone(),
    }
}
