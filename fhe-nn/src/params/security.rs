//! 128-bit security by TFHE-rs's own curve: the minimal noise variance of an LWE secret of
//! dimension `n` on the 64-bit torus
//! (`noise_formulas::secure_noise::minimal_lwe_variance_for_132_bits_security_gaussian`,
//! 132 bits by the lattice estimator, the margin TFHE-rs keeps over 128). Every parameter
//! set fhe-nn generates keys for, vetted or custom, must pass [`check`].
//!
//! A set that arrives from elsewhere (a client spec, a key, an upload, a user's fixed
//! choice) is never trusted: [`check_set`] rebuilds it from its shape with fhe-nn's own rule
//! (TFHE-rs's constant for a vetted set, the curve's minimal noise for a custom one) and
//! refuses it, naming the field, if any field differs, so a forged noise deviation, mean,
//! modulus switch or failure estimate cannot reach key generation.

use tfhe::core_crypto::commons::noise_formulas::secure_noise::minimal_lwe_variance_for_132_bits_security_gaussian;
use tfhe::core_crypto::commons::parameters::{DynamicDistribution, LweDimension};
use tfhe::shortint::parameters::{ClassicPBSParameters, EncryptionKeyChoice};

use super::sets::{vetted, ParameterSet, SET_PRECISIONS};

/// Relative slack on the standard deviation (TFHE-rs prints its vetted sets' deviations to
/// 16 significant digits).
const STD_SLACK: f64 = 1e-9;

/// The smallest Gaussian standard deviation (torus units) that keeps an LWE secret of
/// dimension `dimension` at TFHE-rs's 132-bit security level.
pub(crate) fn minimal_secure_std(dimension: usize) -> f64 {
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
    #[error("{which}: field `{field}` is {found}, where fhe-nn's set of this shape has {expected} (parameters are rebuilt, never trusted)")]
    Tampered {
        /// Which of the set's parameter lists: the set's own or its last lookup layer's.
        which: &'static str,
        field: &'static str,
        found: String,
        expected: String,
    },
}

/// The largest `k·N` of a custom set (the optimizer searches up to 16,384; TFHE-rs's vetted
/// 8-bit set, at 65,536, is allowed as the constant it is).
const CUSTOM_RING_MAX: usize = 1 << 15;

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
        // TFHE-rs's sets use at most 11 keyswitch and 4 bootstrap levels; more only makes
        // keys larger (a 64-level bootstrapping key of a small set is over a gigabyte).
        within(what, levels, 1, if what == "pbs" { 16 } else { 64 })?;
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

/// Relative tolerance on a rebuilt Gaussian deviation: the curve is evaluated with the
/// platform's `ln` and `powf`, which may differ in the last digits between machines.
const REBUILD_STD_TOLERANCE: f64 = 1e-12;

/// Checks a parameter set that arrived from elsewhere: it is rebuilt from its shape,
/// precision, input key and last-lookup-layer decomposition with fhe-nn's own rule, every
/// field must equal the rebuilt set's (deviations to a relative 1e-12, means zero,
/// finite values only), and the rebuilt set must meet [`check`] for both of its parameter
/// lists (its own and its last lookup layer's).
pub fn check_set(set: &ParameterSet) -> Result<(), SecurityError> {
    if !SET_PRECISIONS.contains(&set.precision) {
        return Err(SecurityError::OutOfBounds {
            what: "precision",
            value: set.precision as u64,
            min: *SET_PRECISIONS.start() as u64,
            max: *SET_PRECISIONS.end() as u64,
        });
    }
    check_bounds(&set.params)?;
    check_bounds(&set.last_layer_params())?;
    let rebuilt = rebuild(set);
    if !rebuilt.is_vetted() {
        // A custom set's ring stays within what the optimizer searches (and a little
        // beyond): a forged spec cannot make key generation run for minutes.
        let p = &set.params;
        let ring = p.glwe_dimension.0.saturating_mul(p.polynomial_size.0);
        if ring > CUSTOM_RING_MAX {
            return Err(SecurityError::OutOfBounds {
                what: "custom set's glwe_dimension × polynomial_size",
                value: ring as u64,
                min: 256,
                max: CUSTOM_RING_MAX as u64,
            });
        }
    }
    same_field("set", "name", &set.name, &rebuilt.name)?;
    same_field(
        "set",
        "last_layer_pbs",
        &set.last_layer_pbs,
        &rebuilt.last_layer_pbs,
    )?;
    same_params("parameters", &set.params, &rebuilt.params)?;
    same_params(
        "last lookup layer's parameters",
        &set.last_layer_params(),
        &rebuilt.last_layer_params(),
    )?;
    check(&rebuilt.params)?;
    check(&rebuilt.last_layer_params())
}

/// fhe-nn's set of `set`'s shape: TFHE-rs's vetted constant where `set` names the vetted
/// set of its precision, else the custom set of its shape; with `set`'s input key and
/// last-lookup-layer decomposition.
fn rebuild(set: &ParameterSet) -> ParameterSet {
    let shape = set.shape();
    let base = vetted(set.precision)
        .filter(|v| v.name == set.name)
        .unwrap_or_else(|| ParameterSet::custom(shape, set.precision));
    base.with_inputs(set.inputs)
        .with_last_layer_pbs(set.last_layer_pbs)
}

fn same_field<T: PartialEq + std::fmt::Debug>(
    which: &'static str,
    field: &'static str,
    found: &T,
    expected: &T,
) -> Result<(), SecurityError> {
    if found == expected {
        Ok(())
    } else {
        Err(SecurityError::Tampered {
            which,
            field,
            found: format!("{found:?}"),
            expected: format!("{expected:?}"),
        })
    }
}

/// Every field of `found` equals `expected`'s, the Gaussian deviations to
/// [`REBUILD_STD_TOLERANCE`].
fn same_params(
    which: &'static str,
    found: &ClassicPBSParameters,
    expected: &ClassicPBSParameters,
) -> Result<(), SecurityError> {
    // The noise first: what a forged set is after.
    for (field, found, expected) in [
        (
            "lwe_noise_distribution",
            found.lwe_noise_distribution,
            expected.lwe_noise_distribution,
        ),
        (
            "glwe_noise_distribution",
            found.glwe_noise_distribution,
            expected.glwe_noise_distribution,
        ),
    ] {
        let refuse = || SecurityError::Tampered {
            which,
            field,
            found: format!("{found:?}"),
            expected: format!("{expected:?}"),
        };
        let (DynamicDistribution::Gaussian(f), DynamicDistribution::Gaussian(e)) =
            (found, expected)
        else {
            return Err(refuse());
        };
        let close = f.std.is_finite()
            && f.std > 0.0
            && ((f.std - e.std) / e.std).abs() <= REBUILD_STD_TOLERANCE;
        if !close || f.mean != 0.0 || e.mean != 0.0 {
            return Err(refuse());
        }
    }
    macro_rules! same {
        ($($field:ident),* $(,)?) => {
            $(same_field(which, stringify!($field), &found.$field, &expected.$field)?;)*
        };
    }
    same!(
        lwe_dimension,
        glwe_dimension,
        polynomial_size,
        pbs_base_log,
        pbs_level,
        ks_base_log,
        ks_level,
        message_modulus,
        carry_modulus,
        max_noise_level,
        ciphertext_modulus,
        encryption_key_choice,
        modulus_switch_noise_reduction_params,
    );
    // Compared by bits: a NaN estimate is refused too.
    if found.log2_p_fail.to_bits() != expected.log2_p_fail.to_bits() {
        return Err(SecurityError::Tampered {
            which,
            field: "log2_p_fail",
            found: found.log2_p_fail.to_string(),
            expected: expected.log2_p_fail.to_string(),
        });
    }
    Ok(())
}
