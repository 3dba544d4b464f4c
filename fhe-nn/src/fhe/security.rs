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
    #[error("the parameter set must encrypt under the big key with the native 64-bit modulus")]
    Shape,
}

/// Checks that both secret keys of `params` carry at least the minimal secure noise for
/// their dimensions (`n` for the LWE key, `k·N` for the GLWE key).
pub fn check(params: &ClassicPBSParameters) -> Result<(), SecurityError> {
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
