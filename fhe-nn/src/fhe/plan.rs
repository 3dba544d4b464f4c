//! Parameter choice from noise: the cheapest vetted set that keeps every lookup's failure
//! probability under `p_error`, given each layer's exact weight 2-norm, computed with
//! TFHE-rs's own noise formulas.

use tfhe::core_crypto::commons::noise_formulas::centered_mean_shifted_modulus_switch::centered_binary_shifted_modulus_switch_additive_variance;
use tfhe::core_crypto::commons::noise_formulas::lwe_keyswitch::keyswitch_additive_variance_132_bits_security_gaussian;
use tfhe::core_crypto::commons::noise_formulas::lwe_programmable_bootstrap::pbs_variance_132_bits_security_gaussian_fft_mul;
use tfhe::core_crypto::commons::parameters::LweDimension;

use super::params::{vetted, ParameterSet, PRECISIONS};
use crate::arch::activation::erfc;
use crate::arch::analysis::Rounding;
use crate::model::QuantModel;

/// Default failure probability of one lookup, as Concrete ML.
pub const DEFAULT_P_ERROR: f64 = 9.094_947_017_729_282e-13; // 2^-40

/// Default smallest parameter-set precision when some lookup is rounded: its table
/// resolution (`N`) and noise decide how close to Clear the rounded lookups stay.
pub const DEFAULT_ROUNDED_PRECISION: u32 = 4;

/// What the user may ask of the parameter choice.
#[derive(Clone, Debug, PartialEq)]
pub struct FheOptions {
    /// Largest failure probability of any single lookup.
    pub p_error: f64,
    /// Largest probability that any lookup of one inference fails, if set.
    pub global_p_error: Option<f64>,
    /// Forces the lookup precision (bits), instead of the cheapest that fits.
    pub precision: Option<u32>,
    /// Smallest parameter-set precision when some lookup is rounded.
    pub rounded_precision: u32,
}

impl Default for FheOptions {
    fn default() -> Self {
        FheOptions {
            p_error: DEFAULT_P_ERROR,
            global_p_error: None,
            precision: None,
            rounded_precision: DEFAULT_ROUNDED_PRECISION,
        }
    }
}

/// Why no parameters could be chosen.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("p_error must be in (0, 1), got {0}")]
    BadProbability(f64),
    #[error("precision {0} has no vetted 128-bit parameter set (2 to 8 bits)")]
    NoSet(u32),
    #[error("lookups need {needed} bits exactly, but precision {forced} was forced")]
    ForcedTooLow { needed: u32, forced: u32 },
    #[error("calibration data: {0}")]
    Calibration(String),
    #[error("no vetted parameter set meets p_error = {p_error:e}: the best, {best_set}, gives {best:e} {}; lower the weights' 2-norm or raise p_error", match .layer { Some(l) => format!("at the lookups after layer {l}"), None => "when decrypting the outputs".to_string() })]
    TooNoisy {
        p_error: f64,
        best_set: &'static str,
        best: f64,
        /// The declared layer (1-based) whose lookups fail; `None`: the outputs.
        layer: Option<usize>,
    },
}

/// The noise and failure probability of the lookups after one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LookupNoise {
    /// Declared index of the weighted layer feeding the lookups.
    pub layer: usize,
    /// Lookups (neurons).
    pub count: usize,
    /// Largest squared weight 2-norm over the layer's neurons.
    pub norm2_squared: f64,
    /// Variance (torus units) before the blind rotation, worst neuron.
    pub variance: f64,
    /// Failure probability of the worst neuron's lookup.
    pub p_error: f64,
}

/// The chosen parameters and their error figures.
#[derive(Clone, Debug)]
pub struct FhePlan {
    pub set: ParameterSet,
    pub lookups: Vec<LookupNoise>,
    /// Failure probability of decoding one output (noise past half an output unit).
    pub output_p_error: f64,
    /// Probability that anything fails in one inference (union bound).
    pub global_p_error: f64,
    pub options: FheOptions,
    /// With [`plan_for_accuracy`](QuantModel::plan_for_accuracy): the fraction of
    /// calibration samples whose simulated prediction differs from exact Clear's.
    pub calibration_disagreement: Option<f64>,
}

/// Noise variances of a parameter set (torus units).
#[derive(Clone, Copy, Debug)]
pub struct NoiseModel {
    /// A fresh encryption under the big (GLWE-derived) key.
    pub fresh: f64,
    /// The output of a bootstrap.
    pub bootstrap: f64,
    /// Added by the keyswitch.
    pub keyswitch: f64,
    /// Added by the centered modulus switch to `2N`.
    pub modulus_switch: f64,
}

impl NoiseModel {
    /// The variances of `set`, from TFHE-rs's formulas.
    pub fn new(set: &ParameterSet) -> NoiseModel {
        let p = &set.params;
        let q = 2f64.powi(64);
        let big = LweDimension(p.glwe_dimension.0 * p.polynomial_size.0);
        let glwe_std = match p.glwe_noise_distribution {
            tfhe::core_crypto::commons::parameters::DynamicDistribution::Gaussian(g) => g.std,
            _ => unreachable!("the runtime's sets are Gaussian"),
        };
        NoiseModel {
            fresh: glwe_std * glwe_std,
            bootstrap: pbs_variance_132_bits_security_gaussian_fft_mul(
                p.lwe_dimension,
                p.glwe_dimension,
                p.polynomial_size,
                p.pbs_base_log,
                p.pbs_level,
                53.0,
                q,
            )
            .0,
            keyswitch: keyswitch_additive_variance_132_bits_security_gaussian(
                big,
                p.lwe_dimension,
                p.ks_base_log,
                p.ks_level,
                q,
                q,
            )
            .0,
            modulus_switch: centered_binary_shifted_modulus_switch_additive_variance(
                p.lwe_dimension,
                q,
                2.0 * p.polynomial_size.0 as f64,
            )
            .0,
        }
    }

    /// Variance before the blind rotation of a lookup reading a weighted sum of squared
    /// 2-norm `norm2_squared` of fresh (first layer) or bootstrapped ciphertexts.
    pub fn lookup_variance(&self, norm2_squared: f64, fresh_inputs: bool) -> f64 {
        norm2_squared
            * if fresh_inputs {
                self.fresh
            } else {
                self.bootstrap
            }
            + self.keyswitch
            + self.modulus_switch
    }

    /// Variance of an output the client decrypts.
    pub fn output_variance(&self, norm2_squared: f64, fresh_inputs: bool) -> f64 {
        norm2_squared
            * if fresh_inputs {
                self.fresh
            } else {
                self.bootstrap
            }
    }
}

/// Probability that centered Gaussian noise of `variance` exceeds `half_width` in magnitude.
pub fn failure_probability(variance: f64, half_width: f64) -> f64 {
    erfc(half_width / (2.0 * variance).sqrt())
}

/// Half a box (torus units) of a lookup with `precision` bits and a padding bit.
pub fn half_box(precision: u32) -> f64 {
    2f64.powi(-(precision as i32 + 2))
}

impl QuantModel {
    /// Lowest parameter-set precision the lookups need: lookups declared exact their full
    /// width; if any lookup is rounded, at least `rounded_precision`.
    pub fn required_precision(&self, rounded_precision: u32) -> u32 {
        self.layers
            .iter()
            .filter_map(|s| s.lookup.as_ref().map(|l| (s, l)))
            .map(|(s, l)| {
                let exact_bits = s.exact_bits();
                match l.declared {
                    Rounding::Exact => exact_bits,
                    Rounding::Declared | Rounding::Runtime => rounded_precision.min(exact_bits),
                }
            })
            .max()
            .unwrap_or(2)
            .max(*PRECISIONS.start())
    }

    /// Chooses the cheapest vetted parameter set meeting `options`, sets every lookup's
    /// precision to it (so Clear and Simulate compute what FHE computes), and returns the
    /// plan with its error figures.
    pub fn plan(&mut self, options: &FheOptions) -> Result<FhePlan, PlanError> {
        for p in [Some(options.p_error), options.global_p_error]
            .into_iter()
            .flatten()
        {
            if !(p > 0.0 && p < 1.0) {
                return Err(PlanError::BadProbability(p));
            }
        }
        let needed = self.required_precision(options.rounded_precision);
        let candidates: Vec<u32> = match options.precision {
            Some(forced) if forced < needed && self.has_exact_lookups_over(forced) => {
                return Err(PlanError::ForcedTooLow { needed, forced })
            }
            Some(forced) if vetted(forced).is_none() => return Err(PlanError::NoSet(forced)),
            Some(forced) => vec![forced],
            None if needed > *PRECISIONS.end() => return Err(PlanError::NoSet(needed)),
            None => (needed..=*PRECISIONS.end()).collect(),
        };
        let mut best: Option<(f64, &'static str, Option<usize>)> = None;
        for precision in candidates {
            let set = vetted(precision).ok_or(PlanError::NoSet(precision))?;
            self.set_lookup_precision(precision);
            let plan = self.evaluate(set, options.clone());
            let worst = plan
                .lookups
                .iter()
                .map(|l| (l.p_error, Some(l.layer + 1)))
                .chain([(plan.output_p_error, None)])
                .fold((0.0, None), |a, b| if b.0 > a.0 { b } else { a });
            let ok = worst.0 <= options.p_error
                && options
                    .global_p_error
                    .is_none_or(|g| plan.global_p_error <= g);
            if ok {
                return Ok(plan);
            }
            if best.is_none_or(|b| worst.0 < b.0) {
                best = Some((worst.0, set.name, worst.1));
            }
        }
        let (best, best_set, layer) = best.expect("at least one candidate");
        Err(PlanError::TooNoisy {
            p_error: options.p_error,
            best_set,
            best,
            layer,
        })
    }

    /// Like [`plan`](Self::plan), but also requires that Simulate's predictions on
    /// `calibration` inputs (rows) differ from exact Clear's on at most `max_disagreement`
    /// of them: the cheapest set that keeps approximate lookups accurate. The inputs should
    /// not be the test data. When no set reaches it, the most precise plan is returned: its
    /// [`calibration_disagreement`](FhePlan::calibration_disagreement) says by how much it
    /// misses.
    pub fn plan_for_accuracy(
        &mut self,
        options: &FheOptions,
        calibration: ndarray::ArrayView2<f64>,
        max_disagreement: f64,
    ) -> Result<FhePlan, PlanError> {
        if options.precision.is_some() {
            return self.plan(options);
        }
        let quantized = self
            .quantize_inputs(calibration)
            .map_err(|e| PlanError::Calibration(e.to_string()))?;
        self.set_exact_lookups();
        let exact = self
            .clear_int_batch(quantized.view())
            .map_err(|e| PlanError::Calibration(e.to_string()))?;
        let reference = crate::argmax_rows(
            self.dequantize_batch(exact.view())
                .map_err(|e| PlanError::Calibration(e.to_string()))?
                .view(),
        );
        let mut last = Err(PlanError::NoSet(*PRECISIONS.end() + 1));
        let start = self.required_precision(options.rounded_precision);
        for precision in start..=*PRECISIONS.end() {
            let forced = FheOptions {
                precision: Some(precision),
                ..options.clone()
            };
            let plan = match self.plan(&forced) {
                Ok(plan) => plan,
                Err(e) => {
                    last = Err(e);
                    continue;
                }
            };
            let simulated = self
                .simulate_int_batch(&plan, quantized.view(), 0x5eed)
                .map_err(|e| PlanError::Calibration(e.to_string()))?;
            let predicted = crate::argmax_rows(
                self.dequantize_batch(simulated.view())
                    .map_err(|e| PlanError::Calibration(e.to_string()))?
                    .view(),
            );
            let differ = predicted
                .iter()
                .zip(&reference)
                .filter(|(a, b)| a != b)
                .count() as f64
                / reference.len().max(1) as f64;
            let plan = FhePlan {
                options: options.clone(),
                calibration_disagreement: Some(differ),
                ..plan
            };
            if differ <= max_disagreement {
                return Ok(plan);
            }
            last = Ok(plan);
        }
        last
    }

    fn has_exact_lookups_over(&self, precision: u32) -> bool {
        self.layers
            .iter()
            .filter_map(|s| s.lookup.as_ref().map(|l| (s, l)))
            .any(|(s, l)| l.declared == Rounding::Exact && s.exact_bits() > precision)
    }

    /// Error figures of the current tables under `set`.
    pub fn evaluate(&self, set: ParameterSet, options: FheOptions) -> FhePlan {
        let noise = NoiseModel::new(&set);
        let mut lookups = Vec::new();
        let mut output_p_error = 0.0;
        for (k, stage) in self.layers.iter().enumerate() {
            let norm2_squared = (0..stage.out_features)
                .map(|j| stage.norm2_squared(j))
                .fold(0.0, f64::max);
            let fresh = k == 0;
            match &stage.lookup {
                Some(_) => {
                    let variance = noise.lookup_variance(norm2_squared, fresh);
                    // Exact lookups use the set's boxes; rounded ones keep half a box of
                    // margin at both ends: either way, a failure is noise past half a box.
                    let p_error = failure_probability(variance, half_box(set.precision));
                    lookups.push(LookupNoise {
                        layer: stage.layer,
                        count: stage.out_features,
                        norm2_squared,
                        variance,
                        p_error,
                    });
                }
                None => {
                    let bits = self.output_encoding_bits();
                    output_p_error = failure_probability(
                        noise.output_variance(norm2_squared, fresh),
                        half_box(bits),
                    );
                }
            }
        }
        let outputs = self.output_features() as f64;
        let global_p_error = (lookups
            .iter()
            .map(|l| l.count as f64 * l.p_error)
            .sum::<f64>()
            + outputs * output_p_error)
            .min(1.0);
        FhePlan {
            set,
            lookups,
            output_p_error,
            global_p_error,
            options,
            calibration_disagreement: None,
        }
    }
}

impl FhePlan {
    /// Lookups per inference.
    pub fn lookups_per_inference(&self) -> usize {
        self.lookups.iter().map(|l| l.count).sum()
    }

    /// A printable summary of the parameters and error probabilities.
    pub fn report(&self) -> String {
        let p = &self.set.params;
        let mut s = format!(
            "parameters: {} ({}-bit lookups; n = {}, k = {}, N = {}, PBS base 2^{} × {}, KS base 2^{} × {})\n",
            self.set.name, self.set.precision, p.lwe_dimension.0, p.glwe_dimension.0, p.polynomial_size.0, p.pbs_base_log.0, p.pbs_level.0, p.ks_base_log.0, p.ks_level.0
        );
        for l in &self.lookups {
            s.push_str(&format!(
                "  layer {:>2}: {:>4} lookups, weight 2-norm {:>6.1}, p_error 2^{:.1}\n",
                l.layer + 1,
                l.count,
                l.norm2_squared.sqrt(),
                log2(l.p_error)
            ));
        }
        s.push_str(&format!(
            "  outputs: p_error 2^{:.1}; global p_error 2^{:.1} (target per lookup 2^{:.1})\n",
            log2(self.output_p_error),
            log2(self.global_p_error),
            log2(self.options.p_error)
        ));
        if let Some(d) = self.calibration_disagreement {
            s.push_str(&format!("  simulated predictions differ from exact Clear on {:.2}% of the calibration samples\n", 100.0 * d));
        }
        s
    }
}

/// log2 that prints the tail instead of -inf.
pub fn log2(p: f64) -> f64 {
    if p > 0.0 {
        p.log2()
    } else {
        -1074.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vetted_sets_meet_their_nominal_failure_rate() {
        // TFHE-rs rates each set 2^-128 at its nominal 2-norm (max_noise_level), for its own
        // message space: 2^precision boxes with the padding bit.
        for precision in PRECISIONS {
            let set = vetted(precision).unwrap();
            let noise = NoiseModel::new(&set);
            let norm = set.params.max_noise_level.get() as f64;
            let p = failure_probability(
                noise.lookup_variance(norm * norm, false),
                half_box(precision),
            );
            assert!(
                log2(p) < -110.0 && log2(p) > -160.0,
                "precision {precision}: 2^{}",
                log2(p)
            );
        }
    }

    #[test]
    fn looser_p_error_tolerates_larger_norms() {
        let set = vetted(4).unwrap();
        let noise = NoiseModel::new(&set);
        let at = |norm: f64| {
            log2(failure_probability(
                noise.lookup_variance(norm * norm, false),
                half_box(4),
            ))
        };
        assert!(at(15.0) < -100.0);
        assert!(at(40.0) > at(15.0));
        assert!(at(40.0) < -40.0, "2-norm 40 at 2^-40: {}", at(40.0));
    }
}
