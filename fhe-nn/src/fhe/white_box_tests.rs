//! White-box tests on the shipped seed network, reading the compiled tables: at the default
//! p_error every approximate lookup stays within half a box of Clear's table position and
//! predictions flip no more often than Simulate expects; a compiled file read back rebuilds
//! the same tables.

use ndarray::Axis;

use crate::compile::{CompiledModel, FheOptions, ParameterChoice};
use crate::datasets::{digits, digits_seed_weights, Seed};
use crate::model::QuantModel;

const SAMPLES: usize = 20;
const SIMULATIONS: usize = 200;

#[test]
fn approximate_lookups_stay_close_to_clear() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/seed_brevitas.safetensors");
    let model = QuantModel::load(Seed::architecture(), path).unwrap();
    let options = FheOptions {
        parameters: ParameterChoice::Vetted(5),
        ..FheOptions::default()
    };
    let test = digits().unwrap().test.images;
    let compiled = model.compile(test.view(), &options).unwrap();
    // Both layers' values are spread over numbers of positions that are no powers of two,
    // carried by the inputs' scaling factors (the client's for the first layer, the first
    // lookups' for the second): decrypting below checks both encodings.
    for stage in compiled.layers().iter().filter_map(|l| l.lookup()) {
        let spread = stage.spread;
        assert!(
            spread > 2 && !(spread as u64).is_power_of_two(),
            "spread {spread}"
        );
    }
    let (client, eval) = compiled.keygen().unwrap();
    let server = compiled.server(eval).unwrap();
    let (mut lookups, mut off_by_one, mut agree) = (0, 0, 0);
    let (mut expected_flips, mut flip_variance) = (0.0, 0.0);
    let mut rng = crate::rng::SplitMix64::new(31);
    let noise = compiled.simulation_noise();
    for row in test.axis_iter(Axis(0)).take(SAMPLES) {
        let q = client.quantize(row).unwrap();
        let clear = compiled.clear_trace(&q).unwrap();
        let trace = server.run_traced(&client.encrypt(row).unwrap()).unwrap();
        // Each lookup is compared with Clear's table applied to the accumulator of the
        // inputs FHE actually had (an earlier off-by-one changes later accumulators).
        let mut inputs = q.clone();
        for (k, stage) in compiled.layers().iter().enumerate() {
            let Some(lookup) = stage.lookup() else {
                continue;
            };
            let delta = compiled.input_delta(k + 1);
            let margin =
                1i64 << (lookup.encoding().precision() - compiled.parameters().precision() - 1);
            let mut outputs = Vec::new();
            for (j, ct) in trace[k].ciphertexts().iter().enumerate() {
                let accumulator = stage.accumulate_one(j, &inputs);
                let got = client.decrypt_value(ct, delta).unwrap();
                let index = lookup.index(stage.group(j), accumulator);
                let table = &lookup.tables()[stage.group(j)];
                // Noise past half a box of the parameter set (the margin) has probability
                // p_error; within it, the reading may move to nearby positions.
                let reachable: Vec<i64> = (index - margin..=index + margin)
                    .map(|i| table.get(i))
                    .collect();
                assert!(
                    reachable.contains(&got),
                    "layer {k} neuron {j}: {got} not within half a box of position {index}"
                );
                lookups += 1;
                off_by_one += usize::from(got != table.get(index));
                outputs.push(got);
            }
            inputs = outputs;
        }
        let fhe = client.decrypt(trace.last().unwrap()).unwrap();
        let clear_out = model.dequantize_outputs(clear.last().unwrap()).unwrap();
        let argmax = |v: &[f64]| {
            v.iter()
                .enumerate()
                .fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
        };
        let clear_class = argmax(&clear_out);
        agree += usize::from(argmax(&fhe) == clear_class);
        // How often Simulate flips this very sample's prediction.
        let flips = (0..SIMULATIONS)
            .filter(|_| {
                let sim = compiled.simulate_trace(noise, &q, &mut rng).unwrap();
                argmax(&model.dequantize_outputs(sim.last().unwrap()).unwrap()) != clear_class
            })
            .count() as f64;
        let p = flips / SIMULATIONS as f64;
        expected_flips += p;
        flip_variance += p * (1.0 - p);
    }
    eprintln!("{off_by_one} of {lookups} lookups differ from Clear; predictions agree on {agree}/{SAMPLES}");
    assert_eq!(lookups, SAMPLES * 60);
    // Approximate rounding changes a few percent of the lookups, and predictions follow
    // Clear's on (nearly) every sample.
    assert!(
        off_by_one * 10 < lookups,
        "{off_by_one} of {lookups} lookups differ from Clear"
    );
    // Simulate predicts how often each of these samples' prediction flips; FHE's flips stay
    // within 3 sigma of that (plus one sample).
    let flips = (SAMPLES - agree) as f64;
    let allowed = expected_flips + 3.0 * flip_variance.sqrt() + 1.0;
    eprintln!("{flips} flips, Simulate expects {expected_flips:.2}");
    assert!(
        flips <= allowed,
        "{flips} flips, Simulate expects {expected_flips:.2} (allowed {allowed:.2})"
    );
}

#[test]
fn a_compiled_file_read_back_has_the_same_tables() {
    let weights = digits_seed_weights().unwrap();
    let model = QuantModel::from_tensors(Seed::architecture(), &weights).unwrap();
    let options = FheOptions {
        parameters: ParameterChoice::Vetted(4),
        ..FheOptions::default()
    };
    let test = digits().unwrap().test.images;
    let compiled = model.compile(test.view(), &options).unwrap();
    let read = CompiledModel::from_bytes(&compiled.to_bytes().unwrap()).unwrap();
    assert_eq!(read.layers(), compiled.layers());
    assert_eq!(read.fingerprint(), compiled.fingerprint());
}

#[test]
fn some_groups_wrap_at_the_optimizers_fine_resolution() {
    // The compile of `tests/simulate.rs`'s Simulate-vs-Fhe test: groups wrapping around the
    // negacyclic table are part of what it compares.
    let weights = digits_seed_weights().unwrap();
    let model = QuantModel::from_tensors(Seed::architecture(), &weights).unwrap();
    let model = model.restrict_inputs(0, 3).unwrap();
    let test = digits().unwrap().test.images;
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    let first = compiled.layers()[0].lookup().unwrap();
    let wrapping = first.groups.iter().filter(|g| g.wrap.is_some()).count();
    assert!(wrapping > 0, "no group wraps");
}
