//! Simulate predicts Fhe: with a deliberately coarse parameter set (2-bit, errors frequent),
//! the rate at which each layer's outputs differ from Clear is the same in Simulate and in
//! Fhe within a 3-sigma binomial bound; where lookups are exact, both equal Clear.

mod common;

use fhe_nn::fhe::{generate_keys, FheOptions, FheServer};
use fhe_nn::rng::SplitMix64;
use fhe_nn::{fhe_net, QuantModel};
use fhe_nn_suite::data::{digits, models_dir};
use ndarray::Axis;

fhe_net! {
    struct Seed<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                QuantIdentity(3), QuantLinear(30, 30, w = 3), ReLU,
                QuantIdentity(3), QuantLinear(30, 10, w = 3)>
}

const FHE_SAMPLES: usize = 30;
const SIMULATIONS_PER_SAMPLE: usize = 40;

/// Per traced layer, how many values differ from Clear's.
fn mismatches(clear: &[Vec<i64>], other: &[Vec<i64>], counts: &mut [usize]) {
    for (k, (c, o)) in clear.iter().zip(other).enumerate() {
        counts[k] += c.iter().zip(o).filter(|(a, b)| a != b).count();
    }
}

#[test]
fn simulate_predicts_fhe_error_rates() {
    let mut model = QuantModel::load(
        Seed::architecture(),
        models_dir().join("digits_seed.safetensors"),
    )
    .unwrap();
    let options = FheOptions {
        precision: Some(2),
        p_error: 0.01,
        ..FheOptions::default()
    };
    let plan = model.plan(&options).unwrap();
    let (client, eval) = generate_keys(&model, &plan);
    let server = FheServer::new(&model, &plan, eval).unwrap();
    let test = digits().unwrap().test.images;

    // Traced values: lookup outputs of layers 1 and 2, and the decrypted outputs.
    let layers = model.layers().len();
    let sizes: Vec<usize> = model.layers().iter().map(|l| l.out_features).collect();
    let mut fhe_diff = vec![0usize; layers];
    let mut sim_diff = vec![0usize; layers];
    let mut rng = SplitMix64::new(2024);
    for row in test.axis_iter(Axis(0)).take(FHE_SAMPLES) {
        let q = client.quantize(row).unwrap();
        let clear = model.clear_trace(&q);
        // Clear's lookup outputs and final accumulators, in server-trace order.
        let clear_points: Vec<Vec<i64>> = (0..layers)
            .map(|k| clear[if k + 1 < layers { 2 * k + 1 } else { 2 * k }].clone())
            .collect();
        let trace = server.run_traced(&client.encrypt(row).unwrap()).unwrap();
        let fhe_points: Vec<Vec<i64>> = trace
            .iter()
            .enumerate()
            .map(|(k, sample)| {
                if k + 1 < layers {
                    sample
                        .ciphertexts()
                        .iter()
                        .map(|c| client.decrypt_value(c, model.input_delta_log2(k + 1)))
                        .collect()
                } else {
                    client.decrypt_int(sample).unwrap()
                }
            })
            .collect();
        mismatches(&clear_points, &fhe_points, &mut fhe_diff);
        for _ in 0..SIMULATIONS_PER_SAMPLE {
            let sim = model.simulate_trace(&plan, &q, &mut rng);
            let sim_points: Vec<Vec<i64>> = (0..layers)
                .map(|k| sim[if k + 1 < layers { 2 * k + 1 } else { 2 * k }].clone())
                .collect();
            mismatches(&clear_points, &sim_points, &mut sim_diff);
        }
    }
    let mut frequent = false;
    for k in 0..layers {
        let n_fhe = (FHE_SAMPLES * sizes[k]) as f64;
        let n_sim = n_fhe * SIMULATIONS_PER_SAMPLE as f64;
        let (r_fhe, r_sim) = (fhe_diff[k] as f64 / n_fhe, sim_diff[k] as f64 / n_sim);
        let pooled = (fhe_diff[k] + sim_diff[k]) as f64 / (n_fhe + n_sim);
        let bound = 3.0 * (pooled * (1.0 - pooled) * (1.0 / n_fhe + 1.0 / n_sim)).sqrt();
        eprintln!("layer {k}: fhe {r_fhe:.4} ({} of {n_fhe}), simulate {r_sim:.4}, 3-sigma bound {bound:.4}", fhe_diff[k]);
        assert!(
            (r_fhe - r_sim).abs() <= bound.max(1.0 / n_fhe),
            "layer {k}: fhe {r_fhe} vs simulate {r_sim} (bound {bound})"
        );
        frequent |= r_sim > 0.02;
    }
    assert!(
        frequent,
        "the coarse setting must make errors frequent for the test to mean something"
    );
}

#[test]
fn exact_lookups_simulate_to_clear() {
    // Every lookup of the tiny network is exact at 2^-40: Simulate equals Clear on the
    // whole test split, as Fhe does (tests/fhe.rs).
    let (mut model, test) = common::tiny_model();
    let plan = model.plan(&FheOptions::default()).unwrap();
    let q = model.quantize_inputs(test.view()).unwrap();
    let clear = model.clear_int_batch(q.view()).unwrap();
    let simulated = model.simulate_int_batch(&plan, q.view(), 99).unwrap();
    assert_eq!(simulated, clear);
}

#[test]
fn overflow_detector_reports_where_readings_wrap() {
    let mut model = QuantModel::load(
        Seed::architecture(),
        models_dir().join("digits_seed.safetensors"),
    )
    .unwrap();
    let plan = model
        .plan(&FheOptions {
            precision: Some(4),
            ..FheOptions::default()
        })
        .unwrap();
    let test = digits().unwrap().test.images;
    let q = model.quantize_inputs(test.view()).unwrap();
    // With the chosen parameters (p_error far below 2^-40), nothing wraps.
    assert_eq!(
        model.simulate_overflows(&plan, q.view(), 1).unwrap(),
        vec![]
    );
    // A deliberately broken set (a one-level keyswitch: far too much noise) overflows, and
    // the detector says at which lookups.
    let mut noisy = plan.clone();
    noisy.set.params.ks_level = tfhe::core_crypto::commons::parameters::DecompositionLevelCount(1);
    let overflows = model.simulate_overflows(&noisy, q.view(), 1).unwrap();
    assert!(!overflows.is_empty());
    let lookup_layers: Vec<usize> = model
        .layers()
        .iter()
        .filter_map(|s| s.lookup.as_ref().map(|l| l.layer))
        .collect();
    assert!(overflows
        .iter()
        .all(|o| lookup_layers.contains(&o.layer) && o.neuron < 30 && o.count > 0));
}
