//! Fhe mode on real trained weights and real samples, at the default p_error (2^-40):
//! exact lookups give Clear's integers exactly; approximate lookups stay within half a box of
//! Clear's table position and predictions agree; wrong keys and damaged bytes are errors,
//! never panics.

mod common;

use common::tiny_model;
use common::Seed;
use fhe_nn::datasets::digits;
use fhe_nn::fhe::{
    ClientKey, ClientSpec, CompressedSample, EncryptedSample, EvaluationKey, FheError,
};
use fhe_nn::format::DecodeError;
use fhe_nn::params::{vetted, InputKey};
use fhe_nn::{CompileError, CompiledModel, FheOptions, Mode, ParameterChoice, QuantModel};
use ndarray::{Array2, Axis};

const SAMPLES: usize = 20;

#[test]
fn exact_lookups_give_clears_integers() {
    let (model, test) = tiny_model();
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    assert!(compiled.plan().lookups.iter().all(|l| l.exact), "all exact");
    let (client, eval) = compiled.keygen().unwrap();
    let server = compiled.server(eval).unwrap();
    // The analysis's 8 lookups, less the hidden neurons whose output is known without a
    // bootstrap (trained 2-bit weights leave some with no weight, or unread).
    assert_eq!(server.lookups(), model.lookups());
    assert!((1..=8).contains(&model.lookups()), "{}", model.lookups());
    for row in test.axis_iter(Axis(0)).take(SAMPLES) {
        let q = client.quantize(row).unwrap();
        let out = server.run(&client.encrypt(row).unwrap()).unwrap();
        assert_eq!(
            client.decrypt_int(&out).unwrap(),
            model.clear_int(&q).unwrap()
        );
    }
}

fn keys() -> (CompiledModel, ClientKey, EvaluationKey, Array2<f64>) {
    let (model, test) = tiny_model();
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    let (client, eval) = compiled.keygen().unwrap();
    (compiled, client, eval, test)
}

#[test]
fn serialized_keys_and_ciphertexts_round_trip_and_are_checked() {
    let (compiled, client, eval, test) = keys();
    let row = test.row(0);

    // Client and server exchange bytes only.
    let client = ClientKey::from_bytes(&client.to_bytes().unwrap()).unwrap();
    let eval_bytes = eval.to_bytes().unwrap();
    let server = compiled
        .server(EvaluationKey::from_bytes(&eval_bytes).unwrap())
        .unwrap();
    let input =
        EncryptedSample::from_bytes(&client.encrypt(row).unwrap().to_bytes().unwrap()).unwrap();
    let output =
        EncryptedSample::from_bytes(&server.run(&input).unwrap().to_bytes().unwrap()).unwrap();
    assert_eq!(
        client.decrypt_int(&output).unwrap(),
        compiled.clear_int(&client.quantize(row).unwrap()).unwrap()
    );

    // Server-side readers bound every upload by what this model can need, before decoding.
    assert!(eval_bytes.len() as u64 <= compiled.max_evaluation_key_bytes());
    assert!(eval_bytes.len() as u64 * 10 >= compiled.max_evaluation_key_bytes() * 8);
    compiled.read_evaluation_key(&eval_bytes).unwrap();
    let mut padded = eval_bytes.clone();
    padded.resize(compiled.max_evaluation_key_bytes() as usize + 1, 0);
    assert!(matches!(
        compiled.read_evaluation_key(&padded),
        Err(FheError::Format(DecodeError::TooLarge { .. }))
    ));
    let full_bytes = input.to_bytes().unwrap();
    assert!(full_bytes.len() as u64 <= server.max_sample_bytes());
    server.read_sample(&full_bytes).unwrap();
    let mut padded = full_bytes.clone();
    padded.resize(server.max_sample_bytes() as usize + 1, 0);
    assert!(matches!(
        server.read_sample(&padded),
        Err(FheError::Format(DecodeError::TooLarge { .. }))
    ));

    // The compressed upload: the same result from a fraction of the bytes.
    let compressed = client.encrypt_compressed(row).unwrap().to_bytes().unwrap();
    let full = input.to_bytes().unwrap();
    assert!(
        compressed.len() * 100 < full.len(),
        "{} vs {} bytes",
        compressed.len(),
        full.len()
    );
    assert!(compressed.len() as u64 <= server.max_compressed_bytes());
    let decompressed = server.read_compressed(&compressed).unwrap();
    assert_eq!(
        client
            .decrypt_int(&server.run(&decompressed).unwrap())
            .unwrap(),
        compiled.clear_int(&client.quantize(row).unwrap()).unwrap()
    );
    let mut damaged = compressed.clone();
    let at = damaged.len() - 5;
    damaged[at] ^= 4;
    assert!(matches!(
        CompressedSample::from_bytes(&damaged),
        Err(FheError::Format(DecodeError::Checksum))
    ));

    // Damaged bytes.
    let ct_bytes = input.to_bytes().unwrap();
    assert!(matches!(
        EncryptedSample::from_bytes(&ct_bytes[..ct_bytes.len() - 3]),
        Err(FheError::Format(DecodeError::Truncated { .. }))
    ));
    let mut tampered = ct_bytes.clone();
    let last = tampered.len() - 10;
    tampered[last] ^= 1;
    assert!(matches!(
        EncryptedSample::from_bytes(&tampered),
        Err(FheError::Format(DecodeError::Checksum))
    ));
    assert!(matches!(
        EncryptedSample::from_bytes(b"garbage garbage garbage garbage garbage"),
        Err(FheError::Format(DecodeError::NotFheNn))
    ));
    assert!(matches!(
        EvaluationKey::from_bytes(&eval_bytes[..eval_bytes.len() / 2]),
        Err(FheError::Format(DecodeError::Truncated { .. }))
    ));
    assert!(matches!(
        EvaluationKey::from_bytes(&ct_bytes),
        Err(FheError::Format(DecodeError::WrongKind { .. }))
    ));
    let mut bad_version = eval_bytes.clone();
    bad_version[5] = 9;
    assert!(matches!(
        EvaluationKey::from_bytes(&bad_version),
        Err(FheError::Format(DecodeError::Version { .. }))
    ));
    let client_bytes = client.to_bytes().unwrap();
    let mut tampered_key = client_bytes.clone();
    let mid = tampered_key.len() / 2;
    tampered_key[mid] ^= 0x40;
    assert!(matches!(
        ClientKey::from_bytes(&tampered_key),
        Err(FheError::Format(DecodeError::Checksum))
    ));
}

#[test]
fn foreign_keys_and_ciphertexts_are_refused() {
    let (compiled, client, eval, test) = keys();
    let (other_client, other_eval) = compiled.keygen().unwrap();
    let server = compiled.server(eval).unwrap();
    let row = test.row(1);
    // A ciphertext of another key pair.
    let foreign = other_client.encrypt(row).unwrap();
    assert!(matches!(
        server.run(&foreign),
        Err(FheError::WrongKey { .. })
    ));
    // Output decrypted with the wrong client key.
    let out = server.run(&client.encrypt(row).unwrap()).unwrap();
    assert!(matches!(
        other_client.decrypt_int(&out),
        Err(FheError::WrongKey { .. })
    ));
    // Wrong number of inputs.
    assert!(client.encrypt_quantized(&[0; 3]).is_err());
    assert!(client
        .encrypt(ndarray::Array1::from(vec![f64::NAN; 16]).view())
        .is_err());

    // Another compile of the same weights (other parameters): its keys and ciphertexts are
    // refused by name, and the message names both fingerprints.
    let (model, _) = tiny_model();
    let other = model
        .compile(
            test.view(),
            &FheOptions {
                parameters: ParameterChoice::Vetted(4),
                ..FheOptions::default()
            },
        )
        .unwrap();
    assert_ne!(other.fingerprint(), compiled.fingerprint());
    let (other_model_client, _) = other.keygen().unwrap();
    match compiled.server(other.keygen().unwrap().1) {
        Err(e @ FheError::WrongModel { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&other.fingerprint().to_string()),
                "{message}"
            );
            assert!(
                message.contains(&compiled.fingerprint().to_string()),
                "{message}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a key of another compiled model was accepted"),
    }
    assert!(matches!(
        server.run(&other_model_client.encrypt(row).unwrap()),
        Err(FheError::WrongModel { .. })
    ));
    assert!(matches!(
        server.decompress(&other_model_client.encrypt_compressed(row).unwrap()),
        Err(FheError::WrongModel { .. })
    ));
    drop(other_eval);
}

#[test]
fn a_client_from_the_spec_bytes_alone_runs_the_whole_flow() {
    let (model, test) = tiny_model();
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    // The client side sees only these bytes: no weight, no model.
    let spec_bytes = compiled.client_spec().to_bytes().unwrap();
    let spec = ClientSpec::from_bytes(&spec_bytes).unwrap();
    assert_eq!(spec.fingerprint(), compiled.fingerprint());
    let (client, eval) = spec.keygen().unwrap();
    let eval_bytes = eval.to_bytes().unwrap();
    // The server side: the compiled model and the uploaded key.
    let server = compiled
        .server(EvaluationKey::from_bytes(&eval_bytes).unwrap())
        .unwrap();
    let clear = compiled.predict(test.view(), Mode::Clear).unwrap();
    for i in 0..3 {
        let upload = client
            .encrypt_compressed(test.row(i))
            .unwrap()
            .to_bytes()
            .unwrap();
        let input = server
            .decompress(&CompressedSample::from_bytes(&upload).unwrap())
            .unwrap();
        let output = server.run(&input).unwrap().to_bytes().unwrap();
        let scores = client
            .decrypt(&EncryptedSample::from_bytes(&output).unwrap())
            .unwrap();
        assert_eq!(scores, clear.row(i).to_vec());
    }
    // A damaged spec is refused before any key is made.
    let mut damaged = spec_bytes.clone();
    let at = damaged.len() - 3;
    damaged[at] ^= 1;
    assert!(ClientSpec::from_bytes(&damaged).is_err());
}

#[test]
fn compiling_leaves_the_model_unchanged_and_failures_leave_nothing_behind() {
    let (model, test) = tiny_model();
    let before = model.clone();
    let clear_before = model.predict_clear(test.view()).unwrap();
    let no_such_set = FheOptions {
        parameters: ParameterChoice::Vetted(9),
        ..FheOptions::default()
    };
    assert!(matches!(
        model.compile(test.view(), &no_such_set),
        Err(CompileError::NoVettedSet(9))
    ));
    // A set read from a file whose LWE dimension was lowered.
    let mut json = serde_json::to_value(fhe_nn::params::vetted(4).unwrap()).unwrap();
    json["params"]["lwe_dimension"] = serde_json::json!(600);
    let insecure: fhe_nn::params::ParameterSet = serde_json::from_value(json).unwrap();
    assert!(matches!(
        model.compile(
            test.view(),
            &FheOptions {
                parameters: ParameterChoice::Fixed(Box::new(insecure)),
                ..FheOptions::default()
            }
        ),
        Err(CompileError::Insecure(_))
    ));
    let too_fine = fhe_nn::params::ParameterSet::custom(
        fhe_nn::params::Shape {
            lwe_dimension: 900,
            glwe_dimension: 1,
            polynomial_size: 2048,
            pbs: (23, 1),
            ks: (3, 6),
        },
        11,
    );
    assert!(matches!(
        model.compile(
            test.view(),
            &FheOptions {
                parameters: ParameterChoice::Fixed(Box::new(too_fine)),
                ..FheOptions::default()
            }
        ),
        Err(CompileError::BadPrecision {
            precision: 11,
            polynomial_size: 2048
        })
    ));
    assert!(matches!(
        model.compile(
            test.view(),
            &FheOptions {
                p_error: 1.5,
                ..FheOptions::default()
            }
        ),
        Err(CompileError::BadProbability {
            name: "p_error",
            ..
        })
    ));
    assert_eq!(model, before);
    assert_eq!(model.predict_clear(test.view()).unwrap(), clear_before);
    // Every lookup of this network is exact: Clear of the compiled model equals Clear of the
    // loaded one, and Simulate too (exact boxes, failures at 2^-40 at most).
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    assert_eq!(
        compiled.predict(test.view(), Mode::Clear).unwrap(),
        clear_before
    );
    assert_eq!(
        compiled
            .predict(test.view(), Mode::Simulate { seed: 3 })
            .unwrap(),
        clear_before
    );
    assert_eq!(model, before);
    // One-call local Fhe on a few samples.
    let few = test.slice(ndarray::s![..2, ..]);
    assert_eq!(
        compiled.predict(few, Mode::Fhe).unwrap(),
        clear_before.slice(ndarray::s![..2, ..])
    );
}

#[test]
fn a_looser_p_error_buys_cheaper_parameters_when_accuracy_allows() {
    // Every lookup of the tiny network is exact: accuracy never binds, so the failure
    // target alone decides, and 0.01 must be cheaper than 2^-40.
    let (model, test) = tiny_model();
    let strict = model.compile(test.view(), &FheOptions::default()).unwrap();
    let loose = model
        .compile(
            test.view(),
            &FheOptions {
                p_error: 0.01,
                ..FheOptions::default()
            },
        )
        .unwrap();
    assert!(
        loose.plan().modeled_seconds < strict.plan().modeled_seconds,
        "{} vs {}",
        loose.parameters().name(),
        strict.parameters().name()
    );
    for compiled in [&strict, &loose] {
        fhe_nn::params::security::check(compiled.parameters().params()).unwrap();
        assert!(compiled.plan().worst_p_error() <= compiled.plan().options.p_error);
    }
    // Vetted sets only: never cheaper than the optimizer's choice.
    let vetted = model
        .compile(
            test.view(),
            &FheOptions {
                parameters: ParameterChoice::VettedOnly,
                ..FheOptions::default()
            },
        )
        .unwrap();
    assert!(vetted.parameters().is_vetted());
    assert!(strict.plan().modeled_seconds <= vetted.plan().modeled_seconds);
}

/// The shipped seed network compiled with the digits' test images as calibration inputs.
fn compile_seed(options: FheOptions) -> CompiledModel {
    let images = digits().unwrap().test.images;
    let model = QuantModel::load(Seed::architecture(), common::shipped_seed_path()).unwrap();
    model.compile(images.view(), &options).unwrap()
}

#[test]
fn a_looser_p_error_never_costs_more_when_accuracy_binds() {
    // The shipped seed network: the 1% disagreement limit binds at both targets. The widest
    // boxes 0.01 allows leave narrow margins that noise crosses, so the search also runs on
    // the default target's candidates and keeps the cheaper accurate choice.
    let compile = |p_error| {
        compile_seed(FheOptions {
            p_error,
            ..FheOptions::default()
        })
    };
    let (strict, loose) = (compile(fhe_nn::DEFAULT_P_ERROR), compile(0.01));
    assert!(
        loose.plan().modeled_seconds <= strict.plan().modeled_seconds,
        "{} vs {}",
        loose.parameters().label(),
        strict.parameters().label()
    );
    for compiled in [&strict, &loose] {
        let plan = compiled.plan();
        assert!(plan.predictions_vs_exact.mean <= plan.options.max_disagreement);
    }
}

#[test]
fn the_plan_lists_what_a_looser_max_disagreement_buys() {
    // The shipped seed network under a tight disagreement limit: the plan names cheaper sets
    // the search simulated and rejected, each markedly cheaper than the one before and more
    // off Clear; allowing the first one's disagreement buys a set at most as costly.
    let compile = |max_disagreement| {
        compile_seed(FheOptions {
            max_disagreement,
            ..FheOptions::default()
        })
    };
    let tight = compile(0.003);
    let plan = tight.plan();
    eprintln!("{}", plan.report());
    assert!(!plan.cheaper.is_empty(), "{}", plan.report());
    let mut last = (plan.modeled_seconds, plan.options.max_disagreement);
    for c in &plan.cheaper {
        assert!(c.modeled_seconds <= 0.8 * last.0, "{c:?}");
        assert!(c.disagreement > last.1, "{c:?}");
        last = (c.modeled_seconds, c.disagreement);
    }
    assert!(plan.report().contains(&plan.cheaper[0].label));
    let first = &plan.cheaper[0];
    let looser = compile(first.disagreement + 1e-9);
    assert!(
        looser.plan().modeled_seconds <= first.modeled_seconds * (1.0 + 1e-9),
        "{} ({} s) vs {} ({} s)",
        looser.parameters().label(),
        looser.plan().modeled_seconds,
        first.label,
        first.modeled_seconds
    );
}

#[test]
fn an_oversized_compressed_upload_is_refused_before_expansion() {
    // Reproducer of the 16 GB expansion: an upload of another model's input width (64
    // values), resealed with this server's key id and fingerprint (both travel in clear, at
    // bytes 8..48 of the envelope), is refused before any mask is regenerated.
    let (compiled, client, eval, test) = keys();
    let server = compiled.server(eval).unwrap();
    let images = digits().unwrap().test.images;
    let seed = QuantModel::load(Seed::architecture(), common::shipped_seed_path())
        .unwrap()
        .compile(images.view(), &FheOptions::default())
        .unwrap();
    let (seed_client, _) = seed.keygen().unwrap();
    let mut bytes = seed_client
        .encrypt_compressed(images.row(0))
        .unwrap()
        .to_bytes()
        .unwrap();
    let genuine = client
        .encrypt_compressed(test.row(0))
        .unwrap()
        .to_bytes()
        .unwrap();
    bytes[8..48].copy_from_slice(&genuine[8..48]);
    let forged = CompressedSample::from_bytes(&bytes).unwrap();
    match server.decompress(&forged) {
        Err(FheError::Shape(message)) => assert!(
            message.contains("64 compressed input values, the model takes 16"),
            "{message}"
        ),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a forged upload was expanded"),
    }
}

#[test]
fn inputs_under_either_key_give_clears_integers() {
    // The same set with the inputs under the big key (every lookup keyswitches) and under
    // the small key (the first layer's sums are n + 1 words and its lookups bootstrap
    // directly): both give Clear's integers, and a sample made for one is refused by the
    // other.
    let (model, test) = tiny_model();
    let mut servers = Vec::new();
    for inputs in [InputKey::Big, InputKey::Small] {
        let set = vetted(4).unwrap().with_inputs(inputs);
        let options = FheOptions {
            parameters: ParameterChoice::Fixed(Box::new(set.clone())),
            ..FheOptions::default()
        };
        let compiled = model.compile(test.view(), &options).unwrap();
        assert_eq!(compiled.parameters().inputs(), inputs);
        let (client, eval) = compiled.keygen().unwrap();
        let server = compiled.server(eval).unwrap();
        let p = set.params();
        let expected_size = match inputs {
            InputKey::Big => p.glwe_dimension.0 * p.polynomial_size.0 + 1,
            InputKey::Small => p.lwe_dimension.0 + 1,
        };
        for row in test.axis_iter(Axis(0)).take(SAMPLES / 2) {
            let q = client.quantize(row).unwrap();
            let sample = client.encrypt(row).unwrap();
            assert!(sample
                .ciphertexts()
                .iter()
                .all(|c| c.lwe_size().0 == expected_size));
            let out = server.run(&sample).unwrap();
            assert_eq!(
                client.decrypt_int(&out).unwrap(),
                model.clear_int(&q).unwrap()
            );
            // The compact upload decompresses to ciphertexts of the same key.
            let upload = client.encrypt_compressed(row).unwrap().to_bytes().unwrap();
            let out = server
                .run(&server.read_compressed(&upload).unwrap())
                .unwrap();
            assert_eq!(
                client.decrypt_int(&out).unwrap(),
                model.clear_int(&q).unwrap()
            );
        }
        let bytes = client.encrypt(test.row(0)).unwrap().to_bytes().unwrap();
        servers.push((server, bytes));
    }
    // A sample made for one server, resealed with the other's key id and fingerprint (both
    // travel in clear, at bytes 8..48 of the envelope), is refused for its ciphertexts' size:
    // small-key ciphertexts by the big-key server when it runs them, big-key ones by the
    // small-key server before it decodes them (too many bytes for its inputs).
    let forge = |k: usize| {
        let mut forged = servers[1 - k].1.clone();
        forged[8..48].copy_from_slice(&servers[k].1[8..48]);
        forged
    };
    let big = &servers[0].0;
    match big.run(&big.read_sample(&forge(0)).unwrap()) {
        Err(FheError::Shape(message)) => assert!(message.contains("LWE size"), "{message}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("ciphertexts under the wrong key were run"),
    }
    match servers[1].0.read_sample(&forge(1)) {
        Err(FheError::Format(DecodeError::TooLarge { .. })) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an upload too large for the inputs was decoded"),
    }
}

#[test]
fn a_last_lookup_layer_with_its_own_bootstrap_key_gives_clears_integers() {
    // The optimizer gives the last lookup layer, whose outputs the client decrypts, a finer
    // bootstrap decomposition than the others when exact decryption needs it; the evaluation
    // key then carries a second bootstrapping key of the same secret keys. Forced here on the
    // tiny model's one lookup layer, with the inputs under either key (a keyswitch before the
    // second key's bootstrap, or none): Clear's integers, through serialized keys.
    let (model, test) = tiny_model();
    for inputs in [InputKey::Big, InputKey::Small] {
        let plain = vetted(4).unwrap().with_inputs(inputs);
        let set = plain.clone().with_last_layer_pbs(Some((15, 2)));
        assert_eq!(set.last_layer_pbs(), Some((15, 2)));
        assert!(
            set.label().contains("last lookups pbs 2^15x2"),
            "{}",
            set.label()
        );
        // The set's own decomposition is no second key.
        assert_eq!(
            plain
                .clone()
                .with_last_layer_pbs(Some((23, 1)))
                .last_layer_pbs(),
            None
        );
        let compile = |set: &fhe_nn::params::ParameterSet| {
            let options = FheOptions {
                parameters: ParameterChoice::Fixed(Box::new(set.clone())),
                ..FheOptions::default()
            };
            model.compile(test.view(), &options).unwrap()
        };
        let compiled = compile(&set);
        assert_eq!(compiled.parameters(), &set);
        let (client, eval) = compiled.keygen().unwrap();
        let bytes = eval.to_bytes().unwrap();
        // The second key's bodies: n · (k+1) · levels · N words.
        let p = set.params();
        let second = p.lwe_dimension.0 * (p.glwe_dimension.0 + 1) * 2 * p.polynomial_size.0 * 8;
        let (_, plain_eval) = compile(&plain).keygen().unwrap();
        let plain_bytes = plain_eval.to_bytes().unwrap().len();
        assert!(
            bytes.len() >= plain_bytes + second && bytes.len() <= plain_bytes + second * 11 / 10,
            "{} bytes, {plain_bytes} without the second key ({second} expected more)",
            bytes.len()
        );
        assert!(bytes.len() as u64 <= compiled.max_evaluation_key_bytes());
        let server = compiled
            .server(compiled.read_evaluation_key(&bytes).unwrap())
            .unwrap();
        for row in test.axis_iter(Axis(0)).take(SAMPLES / 2) {
            let q = client.quantize(row).unwrap();
            let out = server.run(&client.encrypt(row).unwrap()).unwrap();
            assert_eq!(
                client.decrypt_int(&out).unwrap(),
                model.clear_int(&q).unwrap()
            );
        }
        // A key made without the second bootstrapping key was made for another compile.
        assert!(matches!(
            compiled.server(plain_eval),
            Err(FheError::WrongModel { .. })
        ));
    }
}

#[test]
fn neurons_without_weights_or_readers_cost_no_bootstrap() {
    use fhe_nn::tensors::Values;
    let (mut weights, test) = common::tiny_weights();
    let ints = |file: &mut fhe_nn::tensors::TensorFile, name: &str| match &mut file
        .tensors
        .get_mut(name)
        .unwrap()
        .values
    {
        Values::Int(v) => v.clone(),
        Values::Float(_) => panic!("{name} holds integers"),
    };
    // Hidden neuron 0 loses its weights; no output reads hidden neuron 1.
    let mut w1 = ints(&mut weights, "layers.1.weight");
    w1[..16].fill(0);
    let mut w2 = ints(&mut weights, "layers.4.weight");
    for c in 0..10 {
        w2[c * 8 + 1] = 0;
    }
    weights.tensors.get_mut("layers.1.weight").unwrap().values = Values::Int(w1.clone());
    weights.tensors.get_mut("layers.4.weight").unwrap().values = Values::Int(w2.clone());
    let model = QuantModel::from_tensors(common::Tiny::architecture(), &weights).unwrap();
    // One bootstrap per hidden neuron with a weight that some output reads.
    let expected = (0..8)
        .filter(|&j| w1[j * 16..(j + 1) * 16].iter().any(|&w| w != 0))
        .filter(|&j| (0..10).any(|c| w2[c * 8 + j] != 0))
        .count();
    assert!(expected <= 6);
    assert_eq!(model.lookups(), expected);

    // Clear equals a direct evaluation of the weights (every hidden neuron computed).
    let float = |name: &str| match &weights.tensors[name].values {
        Values::Float(v) => v.clone(),
        Values::Int(v) => v.iter().map(|&x| x as f64).collect(),
    };
    let (s0, ws1, b1, s3) = (
        float("layers.0.scale")[0],
        float("layers.1.weight_scale"),
        float("layers.1.bias"),
        float("layers.3.scale")[0],
    );
    let direct = |x: &[f64]| -> Vec<i64> {
        let q: Vec<i64> = x
            .iter()
            .map(|&v| (v / s0).round_ties_even().clamp(0.0, 1.0) as i64)
            .collect();
        let hidden: Vec<i64> = (0..8)
            .map(|j| {
                let acc: i64 = (0..16).map(|i| w1[j * 16 + i] * q[i]).sum();
                let ws = ws1[if ws1.len() == 8 { j } else { 0 }];
                let y = (s0 * ws * acc as f64 + b1[j]).max(0.0);
                (y / s3).round_ties_even().clamp(0.0, 3.0) as i64
            })
            .collect();
        (0..10)
            .map(|c| (0..8).map(|j| w2[c * 8 + j] * hidden[j]).sum())
            .collect()
    };
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    let (client, eval) = compiled.keygen().unwrap();
    let server = compiled.server(eval).unwrap();
    assert_eq!(server.lookups(), model.lookups());
    for row in test.axis_iter(Axis(0)).take(5) {
        let x = row.to_vec();
        let q = client.quantize(row).unwrap();
        assert_eq!(model.clear_int(&q).unwrap(), direct(&x));
        // Exact lookups: Fhe gives Clear's integers, the fixed neurons as trivial ciphertexts.
        let out = server.run(&client.encrypt(row).unwrap()).unwrap();
        assert_eq!(client.decrypt_int(&out).unwrap(), direct(&x));
    }
}
