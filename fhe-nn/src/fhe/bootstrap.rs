//! A programmable bootstrap without keyswitch, for sums of inputs the client encrypted under
//! the small key: TFHE-rs's lookup minus its keyswitch (the key's own modulus switch, the
//! blind rotation, the sample extraction); and the same with a second bootstrapping key of the
//! same secret keys, after a keyswitch where the input is under the big key.

use std::cell::RefCell;

use tfhe::core_crypto::prelude::*;
use tfhe::shortint::atomic_pattern::AtomicPatternServerKey;
use tfhe::shortint::parameters::ClassicPBSParameters;
use tfhe::shortint::server_key::{
    LookupTableOwned, ModulusSwitchConfiguration, ShortintBootstrappingKey,
};
use tfhe::shortint::ServerKey;

thread_local! {
    /// Scratch memory of the bootstraps run on this thread.
    static BUFFERS: RefCell<ComputationBuffers> = RefCell::new(ComputationBuffers::new());
}

/// The classic bootstrapping key of a server key and its modulus switch, if it has them.
fn classic_key(
    key: &ServerKey,
) -> Option<(
    &FourierLweBootstrapKeyOwned,
    &ModulusSwitchConfiguration<u64>,
)> {
    match &key.atomic_pattern {
        AtomicPatternServerKey::Standard(standard) => match &standard.bootstrapping_key {
            ShortintBootstrappingKey::Classic {
                bsk,
                modulus_switch_noise_reduction_key,
            } => Some((bsk, modulus_switch_noise_reduction_key)),
            ShortintBootstrappingKey::MultiBit { .. } => None,
        },
        _ => None,
    }
}

/// Whether `key` has a classic bootstrapping key of `params`'s dimensions (every key fhe-nn
/// generates for them does), so that [`bootstrap`] accepts its inputs and tables.
pub(crate) fn fits(key: &ServerKey, params: &ClassicPBSParameters) -> bool {
    classic_key(key).is_some_and(|(bsk, _)| {
        bsk.input_lwe_dimension() == params.lwe_dimension
            && bsk.glwe_size() == params.glwe_dimension.to_glwe_size()
            && bsk.polynomial_size() == params.polynomial_size
    })
}

/// Bootstraps `input` (under `key`'s small LWE key) through `table`; the result is under the
/// big key. `None` if `key` has no classic bootstrapping key or `input` is not of its size.
pub fn bootstrap(
    key: &ServerKey,
    input: &LweCiphertextOwned<u64>,
    table: &LookupTableOwned,
) -> Option<LweCiphertextOwned<u64>> {
    let (bsk, modulus_switch) = classic_key(key)?;
    bootstrap_with(bsk, modulus_switch, input, table)
}

/// Bootstraps `input` through `table` with `bsk` (another bootstrapping key of `key`'s
/// secret keys, at its own decomposition) and `key`'s modulus switch. `None` as for
/// [`bootstrap`], or if `bsk` is not of `key`'s dimensions.
pub(crate) fn bootstrap_other(
    key: &ServerKey,
    bsk: &FourierLweBootstrapKeyOwned,
    input: &LweCiphertextOwned<u64>,
    table: &LookupTableOwned,
) -> Option<LweCiphertextOwned<u64>> {
    if !fits_other(key, bsk) {
        return None;
    }
    let (_, modulus_switch) = classic_key(key)?;
    bootstrap_with(bsk, modulus_switch, input, table)
}

/// Whether `bsk` has the dimensions of `key`'s own classic bootstrapping key, so that
/// [`bootstrap_other`] accepts it.
pub(crate) fn fits_other(key: &ServerKey, bsk: &FourierLweBootstrapKeyOwned) -> bool {
    classic_key(key).is_some_and(|(own, _)| {
        own.input_lwe_dimension() == bsk.input_lwe_dimension()
            && own.glwe_size() == bsk.glwe_size()
            && own.polynomial_size() == bsk.polynomial_size()
    })
}

/// Keyswitches `input` (under `key`'s big key) to `key`'s small key. `None` if `key` is not a
/// standard (KS-PBS) key or `input` is not of its size.
pub(crate) fn keyswitch(
    key: &ServerKey,
    input: &LweCiphertextOwned<u64>,
) -> Option<LweCiphertextOwned<u64>> {
    let AtomicPatternServerKey::Standard(standard) = &key.atomic_pattern else {
        return None;
    };
    let ksk = &standard.key_switching_key;
    if input.lwe_size() != ksk.input_key_lwe_dimension().to_lwe_size() {
        return None;
    }
    let mut out = LweCiphertext::new(
        0u64,
        ksk.output_key_lwe_dimension().to_lwe_size(),
        CiphertextModulus::new_native(),
    );
    keyswitch_lwe_ciphertext(ksk, input, &mut out);
    Some(out)
}

/// The modulus switch, blind rotation and sample extraction of one bootstrap.
fn bootstrap_with(
    bsk: &FourierLweBootstrapKeyOwned,
    modulus_switch: &ModulusSwitchConfiguration<u64>,
    input: &LweCiphertextOwned<u64>,
    table: &LookupTableOwned,
) -> Option<LweCiphertextOwned<u64>> {
    if input.lwe_size() != bsk.input_lwe_dimension().to_lwe_size()
        || table.acc.glwe_size() != bsk.glwe_size()
        || table.acc.polynomial_size() != bsk.polynomial_size()
    {
        return None;
    }
    let polynomial_size = bsk.polynomial_size();
    let switched = modulus_switch.lwe_ciphertext_modulus_switch(
        input,
        polynomial_size.to_blind_rotation_input_modulus_log(),
    );
    let mut rotated = table.acc.clone();
    let fft = Fft::new(polynomial_size);
    let fft = fft.as_view();
    BUFFERS.with_borrow_mut(|buffers| {
        buffers.resize(
            blind_rotate_assign_mem_optimized_requirement::<u64>(
                bsk.glwe_size(),
                polynomial_size,
                fft,
            )
            .unaligned_bytes_required(),
        );
        blind_rotate_assign_mem_optimized(&switched, &mut rotated, bsk, fft, buffers.stack());
    });
    let mut out = LweCiphertext::new(
        0u64,
        bsk.output_lwe_dimension().to_lwe_size(),
        CiphertextModulus::new_native(),
    );
    extract_lwe_sample_from_glwe_ciphertext(&rotated, &mut out, MonomialDegree(0));
    Some(out)
}
