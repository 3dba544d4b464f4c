//! Noise math shared by compilation (error figures, parameter search) and Simulate: the
//! variances of a TFHE-rs classic KS-PBS parameter set from TFHE-rs's own formulas, and
//! Gaussian tail probabilities.

use tfhe::core_crypto::commons::noise_formulas::centered_mean_shifted_modulus_switch::centered_binary_shifted_modulus_switch_additive_variance;
use tfhe::core_crypto::commons::noise_formulas::lwe_keyswitch::keyswitch_additive_variance_132_bits_security_gaussian;
use tfhe::core_crypto::commons::noise_formulas::lwe_programmable_bootstrap::pbs_variance_132_bits_security_gaussian_fft_mul;
use tfhe::core_crypto::commons::parameters::{DynamicDistribution, LweDimension};
use tfhe::shortint::parameters::ClassicPBSParameters;

use super::{InputKey, ParameterSet};

pub use crate::arch::activation::erfc;

/// Noise variances of a parameter set, in torus units (the torus has measure 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseModel {
    /// A fresh encryption under the key the client encrypts inputs under.
    pub fresh: f64,
    /// Whether lookups on fresh inputs keyswitch first (inputs under the big key).
    pub fresh_keyswitch: bool,
    /// The output of a bootstrap feeding further lookups.
    pub bootstrap: f64,
    /// The output of a bootstrap of the last lookup layer, which the client decrypts
    /// (through the output layer's weights): `bootstrap` unless that layer bootstraps at its
    /// own decomposition.
    pub last_bootstrap: f64,
    /// Added by the keyswitch.
    pub keyswitch: f64,
    /// Added by the centered modulus switch to `2N`.
    pub modulus_switch: f64,
    /// The set's polynomial size `N` (the table has `2N` positions per torus).
    pub polynomial_size: usize,
}

/// Standard deviation of a Gaussian noise distribution (0 for any other kind).
fn gaussian_std(d: DynamicDistribution<u64>) -> f64 {
    match d {
        DynamicDistribution::Gaussian(g) => g.std,
        _ => 0.0,
    }
}

impl NoiseModel {
    /// The variances of a set (see [`new`](Self::new)).
    pub fn of(set: &ParameterSet) -> NoiseModel {
        NoiseModel::new(&set.params, set.inputs)
            .with_last_layer_pbs(&set.params, set.last_layer_decomposition())
    }

    /// The same variances with the last lookup layer bootstrapping at decomposition `pbs`
    /// (`params` being the set's own parameters).
    pub fn with_last_layer_pbs(self, params: &ClassicPBSParameters, pbs: (usize, usize)) -> Self {
        NoiseModel {
            last_bootstrap: bootstrap_variance(&crate::params::with_pbs(params, pbs)),
            ..self
        }
    }

    /// The variances of `params` with inputs encrypted under `inputs`, from TFHE-rs's
    /// formulas (which assume the secret keys' noise is the minimal secure one for their
    /// dimension, as every set fhe-nn uses has).
    pub fn new(params: &ClassicPBSParameters, inputs: InputKey) -> NoiseModel {
        let p = params;
        let q = 2f64.powi(64);
        let big = LweDimension(p.glwe_dimension.0 * p.polynomial_size.0);
        let fresh_std = gaussian_std(match inputs {
            InputKey::Big => p.glwe_noise_distribution,
            InputKey::Small => p.lwe_noise_distribution,
        });
        let bootstrap = bootstrap_variance(p);
        NoiseModel {
            fresh: fresh_std * fresh_std,
            fresh_keyswitch: inputs == InputKey::Big,
            bootstrap,
            last_bootstrap: bootstrap,
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
            polynomial_size: p.polynomial_size.0,
        }
    }

    /// Variance before the blind rotation of a lookup reading a weighted sum of squared
    /// 2-norm `norm2_squared` of fresh (first layer) or bootstrapped ciphertexts, keyswitched
    /// unless they are fresh inputs under the small key.
    pub fn lookup_variance(&self, norm2_squared: f64, fresh_inputs: bool) -> f64 {
        let keyswitch = if fresh_inputs && !self.fresh_keyswitch {
            0.0
        } else {
            self.keyswitch
        };
        self.hidden_sum_variance(norm2_squared, fresh_inputs) + keyswitch + self.modulus_switch
    }

    /// Variance of a weighted sum of fresh inputs or of bootstrap outputs that feed further
    /// lookups (not the last lookup layer's).
    pub fn hidden_sum_variance(&self, norm2_squared: f64, fresh_inputs: bool) -> f64 {
        norm2_squared
            * if fresh_inputs {
                self.fresh
            } else {
                self.bootstrap
            }
    }

    /// Variance of a weighted sum the client decrypts (no keyswitch, no modulus switch) of
    /// fresh inputs or of the last lookup layer's outputs.
    pub fn output_variance(&self, norm2_squared: f64, fresh_inputs: bool) -> f64 {
        norm2_squared
            * if fresh_inputs {
                self.fresh
            } else {
                self.last_bootstrap
            }
    }
}

/// Variance of a bootstrap's output under `params` (TFHE-rs's formula, 53-bit FFT).
fn bootstrap_variance(p: &ClassicPBSParameters) -> f64 {
    pbs_variance_132_bits_security_gaussian_fft_mul(
        p.lwe_dimension,
        p.glwe_dimension,
        p.polynomial_size,
        p.pbs_base_log,
        p.pbs_level,
        53.0,
        2f64.powi(64),
    )
    .0
}

/// Probability that centered Gaussian noise of `variance` exceeds `half_width` in magnitude.
pub fn failure_probability(variance: f64, half_width: f64) -> f64 {
    erfc(half_width / (2.0 * variance).sqrt())
}

/// Half a box (torus units) of a lookup with `precision` bits and a padding bit.
pub(crate) fn half_box(precision: u32) -> f64 {
    2f64.powi(-(precision as i32 + 2))
}

/// Half a box (torus units) of an output the client decrypts, `bits` wide with no padding
/// bit (outputs are never bootstrapped).
pub(crate) fn half_output_box(bits: u32) -> f64 {
    2f64.powi(-(bits as i32 + 1))
}

/// log2 that prints the tail instead of -inf.
pub(crate) fn log2(p: f64) -> f64 {
    if p > 0.0 {
        p.log2()
    } else {
        -1074.0
    }
}
