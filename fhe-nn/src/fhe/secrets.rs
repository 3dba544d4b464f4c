//! Checks of a client key's secrets as read from bytes.

use tfhe::shortint;
use tfhe::shortint::client_key::atomic_pattern::AtomicPatternClientKey;

use super::FheError;
use crate::params::ParameterSet;

/// Refuses secret keys that TFHE-rs's key generation cannot have made: the wrong length, a
/// coefficient other than 0 or 1 (the sets' secrets are uniform binary), or a Hamming weight
/// outside `[len/4, 3len/4]` (a uniform binary secret of `len >= 512` falls there except
/// with probability below `2·exp(-len/8)`, under 2^-90). An all-zero secret would make every
/// ciphertext carry its value in the clear.
pub(crate) fn check(key: &shortint::ClientKey, set: &ParameterSet) -> Result<(), FheError> {
    let AtomicPatternClientKey::Standard(standard) = &key.atomic_pattern else {
        return Err(FheError::BadSecret {
            key: "client key",
            why: "not a standard (KS-PBS) key".into(),
        });
    };
    let params = &set.params;
    let big = params.glwe_dimension.0 * params.polynomial_size.0;
    for (name, secret, len) in [
        (
            "LWE secret key",
            standard.small_lwe_secret_key(),
            params.lwe_dimension.0,
        ),
        ("GLWE secret key", standard.large_lwe_secret_key(), big),
    ] {
        let coefficients = secret.as_ref();
        let bad = |why: String| FheError::BadSecret { key: name, why };
        if coefficients.len() != len {
            return Err(bad(format!(
                "{} coefficients where the parameter set has {len}",
                coefficients.len()
            )));
        }
        if let Some(c) = coefficients.iter().find(|&&c| c > 1) {
            return Err(bad(format!("a coefficient {c}: secrets are binary")));
        }
        let weight = coefficients.iter().filter(|&&c| c == 1).count();
        if weight < len / 4 || weight > len - len / 4 {
            return Err(bad(format!(
                "{weight} of {len} coefficients are 1: not a uniform binary secret"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tfhe::shortint;
    use tfhe::shortint::client_key::atomic_pattern::{
        AtomicPatternClientKey, StandardAtomicPatternClientKey,
    };

    use super::check;
    use crate::fhe::FheError;
    use crate::params::vetted;

    /// What `check` says of a genuine key of TFHE-rs's 2-bit set whose secrets `tamper`
    /// changed (the small LWE secret, then the GLWE secret).
    fn refusal(tamper: impl Fn(&mut [u64])) -> Vec<String> {
        let set = vetted(2).unwrap();
        let genuine = shortint::ClientKey::new(set.params);
        check(&genuine, &set).expect("a genuine key passes");
        let mut found = Vec::new();
        for small in [true, false] {
            let AtomicPatternClientKey::Standard(standard) = genuine.atomic_pattern.clone() else {
                unreachable!("fhe-nn's keys are standard")
            };
            let (mut glwe, mut lwe, params, wopbs) = standard.into_raw_parts();
            if small {
                tamper(lwe.as_mut());
            } else {
                tamper(glwe.as_mut());
            }
            let mut key = genuine.clone();
            key.atomic_pattern = AtomicPatternClientKey::Standard(
                StandardAtomicPatternClientKey::from_raw_parts(glwe, lwe, params, wopbs),
            );
            match check(&key, &set) {
                Err(FheError::BadSecret { key, why }) => found.push(format!("{key}: {why}")),
                other => panic!("accepted: {other:?}"),
            }
        }
        found
    }

    #[test]
    fn secrets_that_key_generation_cannot_make_are_refused() {
        // All zero: every ciphertext would carry its value in the clear.
        let zero = refusal(|s| s.fill(0));
        assert!(zero[0].starts_with("LWE secret key: 0 of 837"), "{zero:?}");
        assert!(
            zero[1].starts_with("GLWE secret key: 0 of 2048"),
            "{zero:?}"
        );
        // All one, and one coefficient of 2 in an otherwise genuine key.
        let one = refusal(|s| s.fill(1));
        assert!(one[0].contains("837 of 837"), "{one:?}");
        let two = refusal(|s| s[3] = 2);
        assert!(two.iter().all(|w| w.contains("a coefficient 2")), "{two:?}");
    }
}
