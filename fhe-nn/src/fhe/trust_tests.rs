//! A client trusts nothing it is handed: a parameter set that arrives as bytes (or in a spec
//! it is given) is rebuilt from its shape with fhe-nn's own rule and refused, by field, where
//! it differs; and the client decrypts only what the model outputs.

//!
//! Unit tests: the tampering happens on the fields of specs in memory, as a server (or anyone
//! on its path) would write them into the bytes it hands out.

use super::{ClientSpec, EncryptedSample, FheError};
use crate::compile::{CompiledModel, FheOptions, ParameterChoice};
use crate::datasets::{digits, digits_seed_weights, Seed};
use crate::model::QuantModel;
use crate::params::security::SecurityError;
use crate::params::{vetted, InputKey, ParameterSet};
use crate::rng::SplitMix64;
use ndarray::Array2;
use tfhe::core_crypto::prelude::{
    CiphertextModulus, DecompositionBaseLog, DecompositionLevelCount, DynamicDistribution,
    Gaussian, GlweDimension, LweDimension, PolynomialSize,
};
use tfhe::shortint::parameters::{
    CarryModulus, EncryptionKeyChoice, MaxNoiseLevel, MessageModulus, ModulusSwitchType,
};

/// The shipped seed network compiled with `parameters`, and the test digits.
fn compiled(parameters: ParameterChoice) -> (CompiledModel, Array2<f64>) {
    let weights = digits_seed_weights().unwrap();
    let model = QuantModel::from_tensors(Seed::architecture(), &weights).unwrap();
    let test = digits().unwrap().test.images;
    let options = FheOptions {
        parameters,
        ..FheOptions::default()
    };
    (model.compile(test.view(), &options).unwrap(), test)
}

/// The field a refusal names, if the refusal is a rebuilt-set mismatch.
fn tampered_field(result: Result<impl Sized, FheError>) -> Option<&'static str> {
    match result {
        Err(FheError::Insecure(SecurityError::Tampered { field, .. })) => Some(field),
        _ => None,
    }
}

#[test]
fn genuine_specs_round_trip() {
    // The optimizer's custom set, a vetted set, and a vetted set with the inputs under the
    // small key and the last lookup layer at its own decomposition.
    for choice in [
        ParameterChoice::default(),
        ParameterChoice::Vetted(4),
        ParameterChoice::Fixed(Box::new(
            vetted(4)
                .unwrap()
                .with_inputs(InputKey::Small)
                .with_last_layer_pbs(Some((15, 2))),
        )),
    ] {
        let (compiled, _) = compiled(choice);
        let spec = compiled.client_spec();
        let read = ClientSpec::from_bytes(&spec.to_bytes().unwrap()).unwrap();
        assert_eq!(read, spec, "{}", spec.set.label());
        read.keygen().unwrap();
    }
}

#[test]
fn every_tampered_noise_field_is_refused_by_name() {
    let (compiled, _) = compiled(ParameterChoice::default());
    let genuine = compiled.client_spec();
    let DynamicDistribution::Gaussian(lwe) = genuine.set.params.lwe_noise_distribution else {
        panic!("fhe-nn's sets are Gaussian")
    };
    let tampers = [
        ("huge deviation", 1e20, 0.0),
        ("2^60 deviation", 2f64.powi(60), 0.0),
        ("NaN deviation", f64::NAN, 0.0),
        ("infinite deviation", f64::INFINITY, 0.0),
        ("negative deviation", -lwe.std, 0.0),
        ("zero deviation", 0.0, 0.0),
        ("more noise than the rule", 1.5 * lwe.std, 0.0),
        ("mean 2^30", lwe.std, 2f64.powi(30)),
        ("small mean", lwe.std, 1e-3),
        ("NaN mean", lwe.std, f64::NAN),
    ];
    let mut refused = 0;
    for field in ["lwe_noise_distribution", "glwe_noise_distribution"] {
        for (what, std, mean) in tampers {
            let mut spec = genuine.clone();
            let noise = DynamicDistribution::Gaussian(Gaussian { std, mean });
            match field {
                "lwe_noise_distribution" => spec.set.params.lwe_noise_distribution = noise,
                _ => spec.set.params.glwe_noise_distribution = noise,
            }
            let bytes = spec.to_bytes().unwrap();
            assert_eq!(
                tampered_field(ClientSpec::from_bytes(&bytes)),
                Some(field),
                "{what} in the {field} read from bytes"
            );
            assert_eq!(
                tampered_field(spec.keygen()),
                Some(field),
                "{what} in the {field} at keygen"
            );
            refused += 1;
        }
    }
    eprintln!("{refused} of {refused} tampered specs refused");
    // A consistent custom set of a ring far beyond what the optimizer searches (key
    // generation would run for minutes): refused by its bounds.
    let mut spec = genuine.clone();
    let mut shape = spec.set.shape();
    (shape.glwe_dimension, shape.polynomial_size) = (1, 65536);
    spec.set = ParameterSet::custom(shape, spec.set.precision).with_inputs(spec.set.inputs);
    assert!(matches!(
        ClientSpec::from_bytes(&spec.to_bytes().unwrap()),
        Err(FheError::Insecure(SecurityError::OutOfBounds { .. }))
    ));
    // The error says what it found and what the rule gives.
    let mut spec = genuine.clone();
    spec.set.params.lwe_noise_distribution = DynamicDistribution::Gaussian(Gaussian {
        std: 1e20,
        mean: 0.0,
    });
    let message = spec.keygen().unwrap_err().to_string();
    assert!(
        message.contains("lwe_noise_distribution") && message.contains("1e20"),
        "{message}"
    );
}

/// Values for the mutation test: near `around` or extreme.
fn near(rng: &mut SplitMix64, around: usize) -> usize {
    match rng.below(6) {
        0 => 0,
        1 => around + 1,
        2 => around.saturating_sub(1),
        3 => around * 2,
        4 => rng.below(1 << 20) as usize,
        _ => u32::MAX as usize,
    }
}

/// Floats for the mutation test: NaN, infinite, negative, any bit pattern, or ordinary.
fn float(rng: &mut SplitMix64) -> f64 {
    match rng.below(5) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => -1.0,
        3 => f64::from_bits(rng.next_u64()),
        _ => rng.below(1000) as f64 / 7.0,
    }
}

/// What fhe-nn itself builds for `set`'s shape, precision, input key and last-lookup-layer
/// decomposition: the vetted set of that precision if `set` has its parameters, else the
/// custom set of its shape.
fn fhe_nns_own(set: &ParameterSet) -> ParameterSet {
    let base = vetted(set.precision)
        .filter(|v| v.params == set.params)
        .unwrap_or_else(|| ParameterSet::custom(set.shape(), set.precision));
    base.with_inputs(set.inputs)
        .with_last_layer_pbs(set.last_layer_pbs)
}

#[test]
fn a_mutated_parameter_field_is_refused_or_rebuilds_to_fhe_nns_own_set() {
    let (custom, _) = compiled(ParameterChoice::default());
    let (vetted_compile, _) = compiled(ParameterChoice::Vetted(4));
    let mut rng = SplitMix64::new(2026);
    let (mut refused, mut accepted) = (0, 0);
    for genuine in [custom.client_spec(), vetted_compile.client_spec()] {
        let bytes = genuine.to_bytes().unwrap();
        for field in 0..22 {
            for _ in 0..12 {
                let mut spec = ClientSpec::from_bytes(&bytes).unwrap();
                let set = &mut spec.set;
                let p = &mut set.params;
                match field {
                    0 => set.name.push('x'),
                    1 => set.precision = near(&mut rng, set.precision as usize) as u32,
                    2 => {
                        set.inputs = match set.inputs {
                            InputKey::Big => InputKey::Small,
                            InputKey::Small => InputKey::Big,
                        }
                    }
                    3 => set.last_layer_pbs = Some((near(&mut rng, 15), near(&mut rng, 2))),
                    4 => p.lwe_dimension = LweDimension(near(&mut rng, p.lwe_dimension.0)),
                    5 => p.glwe_dimension = GlweDimension(near(&mut rng, p.glwe_dimension.0)),
                    6 => p.polynomial_size = PolynomialSize(near(&mut rng, p.polynomial_size.0)),
                    7 => {
                        p.lwe_noise_distribution = DynamicDistribution::Gaussian(Gaussian {
                            std: float(&mut rng),
                            mean: 0.0,
                        })
                    }
                    8 => {
                        p.glwe_noise_distribution = DynamicDistribution::Gaussian(Gaussian {
                            std: float(&mut rng),
                            mean: 0.0,
                        })
                    }
                    9 => {
                        let std = match p.lwe_noise_distribution {
                            DynamicDistribution::Gaussian(g) => g.std,
                            _ => 1.0,
                        };
                        p.lwe_noise_distribution = DynamicDistribution::Gaussian(Gaussian {
                            std,
                            mean: float(&mut rng),
                        })
                    }
                    10 => p.lwe_noise_distribution = DynamicDistribution::new_t_uniform(20),
                    11 => p.pbs_base_log = DecompositionBaseLog(near(&mut rng, p.pbs_base_log.0)),
                    12 => p.pbs_level = DecompositionLevelCount(near(&mut rng, p.pbs_level.0)),
                    13 => p.ks_base_log = DecompositionBaseLog(near(&mut rng, p.ks_base_log.0)),
                    14 => p.ks_level = DecompositionLevelCount(near(&mut rng, p.ks_level.0)),
                    15 => p.message_modulus = MessageModulus(near(&mut rng, 2) as u64),
                    16 => {
                        p.carry_modulus =
                            CarryModulus(near(&mut rng, p.carry_modulus.0 as usize) as u64)
                    }
                    17 => p.max_noise_level = MaxNoiseLevel::new(near(&mut rng, 15) as u64),
                    18 => p.log2_p_fail = float(&mut rng),
                    19 => {
                        p.ciphertext_modulus =
                            CiphertextModulus::try_new_power_of_2(1 + rng.below(63) as usize)
                                .unwrap()
                    }
                    20 => p.encryption_key_choice = EncryptionKeyChoice::Small,
                    _ => {
                        p.modulus_switch_noise_reduction_params = match rng.below(2) {
                            0 => ModulusSwitchType::Standard,
                            _ => ModulusSwitchType::CenteredMeanNoiseReduction,
                        }
                    }
                }
                let mutated = spec.set.clone();
                match ClientSpec::from_bytes(&spec.to_bytes().unwrap()) {
                    Err(FheError::Insecure(_)) => refused += 1,
                    Err(e) => panic!("field {field}: refused with {e}, not as insecure"),
                    Ok(read) => {
                        assert_eq!(read.set, mutated, "field {field}");
                        assert_eq!(
                            read.set,
                            fhe_nns_own(&mutated),
                            "field {field}: an accepted set is fhe-nn's own"
                        );
                        accepted += 1;
                    }
                }
                // The spec in memory is held to the same rule at key generation.
                if !matches!(spec.keygen(), Ok(_) | Err(FheError::Insecure(_))) {
                    panic!("field {field}: keygen failed otherwise");
                }
            }
        }
    }
    eprintln!("{refused} mutations refused, {accepted} accepted as fhe-nn's own set");
    assert!(refused > 400, "{refused}");
}

#[test]
fn the_client_decrypts_only_the_models_output() {
    // Inputs under the small key: an input ciphertext has another dimension than an output.
    let set = vetted(4).unwrap().with_inputs(InputKey::Small);
    let (compiled, test) = compiled(ParameterChoice::Fixed(Box::new(set.clone())));
    let spec = compiled.client_spec();
    assert_eq!(spec.output_key, InputKey::Big);
    let (client, eval) = spec.keygen().unwrap();
    let server = compiled.server(eval).unwrap();
    let input = client.encrypt(test.row(0)).unwrap();
    let trace = server.run_traced(&input).unwrap();
    let output = trace.last().unwrap();
    assert_eq!(output.len(), 10);
    client.decrypt_int(output).unwrap();

    let p = &set.params;
    let (small, big) = (
        p.lwe_dimension.0 + 1,
        p.glwe_dimension.0 * p.polynomial_size.0 + 1,
    );
    // The first 10 input ciphertexts handed back as "outputs": the right count, the input
    // key's dimension.
    let mut forged = serde_json::to_value(&input).unwrap();
    forged["cts"].as_array_mut().unwrap().truncate(10);
    let forged: EncryptedSample = serde_json::from_value(forged).unwrap();
    let expected = |count, lwe_size| FheError::NotModelOutput {
        count,
        lwe_size,
        expected_count: 10,
        expected_lwe_size: big,
    };
    let refusal = |sample: &EncryptedSample| client.decrypt(sample).unwrap_err().to_string();
    assert_eq!(refusal(&forged), expected(10, small).to_string());
    // The hidden layer's outputs: the output key's dimension, another count.
    assert_eq!(refusal(&trace[0]), expected(30, big).to_string());
}
