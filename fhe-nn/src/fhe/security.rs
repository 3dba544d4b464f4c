//! 128-bit security by TFHE-rs's own curve: the minimal noise variance of an LWE secret of
//! dimension `n` on the 64-bit torus
//! (`noise_formulas::secure_noise::minimal_lwe_variance_for_132_bits_security_gaussian`,
//! 132 bits by the lattice estimator, the margin TFHE-rs keeps over 128). Every parameter
//! set fhe-nn generates keys for, vetted or custom, must pass [`check`]; keys read from
//! bytes are checked again.

use tfhe::core_crypto::commons::noise_formulas::secure_noise::minimal_lwe_variance_for_132_bits_security_gaussian;
use tfhe::core_crypto::commons::parameters::{DynamicDistribution, LweDimension};
use tfhe::shortint::parameters::{ClassicPBSParameters, EncryptionKeyChoice};

/// Relative slack on the standard deviation (TFHE-rs prints its vetted sets' deviations to
/// 16 significant digits).
const STD_SLACK: f64 = 1e-9;

/// The smallest Gaussian standard deviation (torus units) that keeps an LWE secret of
/// dimension `dimension` at TFHE-rs's 132-bit security level.
pub fn minimal_secure_std(dimension: usize) -> f64 {
    minimal_lwe_variance_for_132_bits_security_gaussian(LweDimension(dimension), 2f64.powi(64))
        .0
        .sqrt()
}

/// Why a parameter set is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SecurityError {
    #[error("{key} noise is not Gaussian; fhe-nn only uses Gaussian sets")]
    NotGaussian { key: &'static str },
    #[error("{key} of dimension {dimension} has noise std {std:e}, below the {minimal:e} that 128-bit security needs")]
    TooLittleNoise {
        key: &'static str,
        dimension: usize,
        std: f64,
        minimal: f64,
    },
    #[error("the parameter set must keyswitch before it bootstraps (outputs under the big key) and use the native 64-bit modulus")]
    Shape,
    #[error("parameter {what} = {value} is outside the supported {min}..={max}")]
    OutOfBounds {
        what: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

/// Bounds on every dimension a parameter set may have: far beyond any useful set, tight
/// enough that a forged set cannot make key generation or decoding allocate without bound.
fn check_bounds(params: &ClassicPBSParameters) -> Result<(), SecurityError> {
    let within = |what, value: usize, min: u64, max: u64| {
        if (min..=max).contains(&(value as u64)) {
            Ok(())
        } else {
            Err(SecurityError::OutOfBounds {
                what,
                value: value as u64,
                min,
                max,
            })
        }
    };
    within("lwe_dimension", params.lwe_dimension.0, 256, 4096)?;
    within("glwe_dimension", params.glwe_dimension.0, 1, 8)?;
    within("polynomial_size", params.polynomial_size.0, 256, 1 << 17)?;
    if !params.polynomial_size.0.is_power_of_two() {
        return Err(SecurityError::OutOfBounds {
            what: "polynomial_size (a power of two)",
            value: params.polynomial_size.0 as u64,
            min: 256,
            max: 1 << 17,
        });
    }
    within(
        "glwe_dimension × polynomial_size",
        params.glwe_dimension.0 * params.polynomial_size.0,
        256,
        1 << 17,
    )?;
    for (what, base, levels) in [
        ("pbs", params.pbs_base_log.0, params.pbs_level.0),
        ("ks", params.ks_base_log.0, params.ks_level.0),
    ] {
        within(what, base, 1, 63)?;
        within(what, levels, 1, 64)?;
        within(what, base * levels, 1, 64)?;
    }
    let boxes = params
        .message_modulus
        .0
        .saturating_mul(params.carry_modulus.0);
    within("message × carry modulus", boxes as usize, 2, 1 << 16)?;
    Ok(())
}

/// Checks that `params` is within the supported bounds and that both secret keys carry at
/// least the minimal secure noise for their dimensions (`n` for the LWE key, `k·N` for the
/// GLWE key).
pub fn check(params: &ClassicPBSParameters) -> Result<(), SecurityError> {
    check_bounds(params)?;
    if params.encryption_key_choice != EncryptionKeyChoice::Big
        || !params.ciphertext_modulus.is_native_modulus()
    {
        return Err(SecurityError::Shape);
    }
    let keys = [
        (
            "LWE key",
            params.lwe_dimension.0,
            params.lwe_noise_distribution,
        ),
        (
            "GLWE key",
            params.glwe_dimension.0 * params.polynomial_size.0,
            params.glwe_noise_distribution,
        ),
    ];
    for (key, dimension, distribution) in keys {
        let DynamicDistribution::Gaussian(g) = distribution else {
            return Err(SecurityError::NotGaussian { key });
        };
        let minimal = minimal_secure_std(dimension);
        if g.std < minimal * (1.0 - STD_SLACK) {
            return Err(SecurityError::TooLittleNoise {
                key,
                dimension,
                std: g.std,
                minimal,
            });
        }
    }
    Ok(())
}

/// [`check`] on both of a set's parameter lists: its own and its last lookup layer's, which
/// differ only in the bootstrap decomposition.
pub fn check_set(set: &super::ParameterSet) -> Result<(), SecurityError> {
    check(&set.params)?;
    check(&set.last_layer_params())
}
