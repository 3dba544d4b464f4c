//! Simulate predicts Fhe: with a deliberately coarse parameter set (2-bit, errors frequent),
//! the rate at which each layer's outputs differ from Clear is the same in Simulate and in
//! Fhe within a 3-sigma bound (checked on a second key pair and other samples where the first
//! lands outside); where lookups are exact, both equal Clear.

mod common;

use fhe_nn::datasets::digits;
use fhe_nn::{CompileError, FheOptions, Mode, ParameterChoice, DEFAULT_P_ERROR};

#[test]
fn simulate_predicts_fhe_error_rates() {
    let model = common::shipped_seed();
    let options = FheOptions {
        parameters: ParameterChoice::Vetted(2),
        p_error: 0.01,
        ..FheOptions::default()
    };
    let test = digits().unwrap().test.images;
    let compiled = model.compile(test.view(), &options).unwrap();
    common::simulate_predicts_fhe(&compiled, test.view());
}

#[test]
fn exact_lookups_simulate_to_clear() {
    // Every lookup of the tiny network is exact at 2^-40: Simulate equals Clear on the
    // whole test split, as Fhe does (tests/fhe.rs).
    let (model, test) = common::tiny_model();
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    let q = compiled.quantize(test.view()).unwrap();
    let clear = compiled.predict_int(q.view(), Mode::Clear).unwrap();
    let simulated = compiled
        .predict_int(q.view(), Mode::Simulate { seed: 99 })
        .unwrap();
    assert_eq!(simulated, clear);
}

#[test]
fn overflow_detector_reports_where_readings_wrap() {
    let model = common::shipped_seed();
    let test = digits().unwrap().test.images;
    let options = FheOptions {
        parameters: ParameterChoice::Vetted(4),
        ..FheOptions::default()
    };
    let compiled = model.compile(test.view(), &options).unwrap();
    let q = compiled.quantize(test.view()).unwrap();
    // With the chosen parameters (p_error far below 2^-40), nothing wraps.
    assert_eq!(compiled.simulate_overflows(q.view(), 1).unwrap(), vec![]);
    // A deliberately broken set (the custom set of the vetted set's shape with a one-level
    // keyswitch: far too much noise) is refused at 2^-40; accepted with a p_error near 1, it
    // overflows, and the detector says where.
    let chosen = compiled.parameters();
    let mut shape = chosen.shape();
    shape.ks.1 = 1;
    let noisy = fhe_nn::params::ParameterSet::custom(shape, chosen.precision());
    let fixed = |p_error| FheOptions {
        p_error,
        parameters: ParameterChoice::Fixed(Box::new(noisy.clone())),
        ..FheOptions::default()
    };
    assert!(matches!(
        model.compile(test.view(), &fixed(DEFAULT_P_ERROR)),
        Err(CompileError::TooNoisy { .. })
    ));
    let broken = model.compile(test.view(), &fixed(0.999_999)).unwrap();
    let overflows = broken.simulate_overflows(q.view(), 1).unwrap();
    assert!(!overflows.is_empty());
    // Where the analysis forms lookups (the quantizers after weighted layers).
    let lookup_layers: Vec<usize> = (0..broken.architecture().layers().len())
        .filter(|&i| broken.architecture().analysis()[i].lookup.is_some())
        .collect();
    assert!(overflows
        .iter()
        .all(|o| lookup_layers.contains(&o.layer) && o.neuron < 30 && o.count > 0));
}

#[test]
fn simulate_predicts_fhe_at_the_optimizers_fine_resolution() {
    // The regime the optimizer chooses: custom parameters, accumulators spread over many
    // table positions (no whole boxes). Per lookup layer, the number of lookups whose output
    // differs from Clear's table (on the accumulator of the inputs Fhe actually had) must lie
    // within 3 sigma (+1) of Simulate's prediction for the same samples (on a second key
    // pair and the next samples where the first lands outside).
    let model = common::shipped_seed();
    let model = model.restrict_inputs(0, 3).unwrap();
    let test = digits().unwrap().test.images;
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    assert!(
        !compiled.parameters().is_vetted(),
        "{}",
        compiled.parameters().name()
    );
    assert!(compiled.plan().lookups.iter().all(|l| !l.exact));
    // Some groups wrap around the negacyclic table (Fhe reads them past `N`): checked on
    // this compile by `fhe::white_box_tests`.
    let q = compiled.quantize(test.view()).unwrap();
    common::within_bounds_on_a_fresh_key_pair(|attempt| {
        let (client, eval) = compiled.keygen().unwrap();
        let server = compiled.server(eval).unwrap();
        let rows = common::attempt_rows(attempt);
        let mut measured = [0usize; 2];
        let mut per_sample = Vec::new();
        for i in rows.clone() {
            let input = q.row(i).to_vec();
            let trace = server
                .run_traced(&client.encrypt_quantized(&input).unwrap())
                .unwrap();
            let differing = compiled
                .lookup_differences(&client, &input, &trace)
                .unwrap();
            assert_eq!(differing.len(), 2);
            per_sample.push((differing[0].0, differing[1].0));
            // Bootstraps per layer: 30 neurons less those whose output is known without one
            // (no weight, or read by no later neuron).
            for ((m, (d, count)), plan) in measured
                .iter_mut()
                .zip(differing)
                .zip(&compiled.plan().lookups)
            {
                assert_eq!(count, plan.count);
                assert!(count <= 30);
                *m += d;
            }
        }
        let predicted = compiled
            .simulate_disagreement(q.slice(ndarray::s![rows, ..]), 200, 5)
            .unwrap();
        let mut outside = Vec::new();
        for (k, &m) in measured.iter().enumerate() {
            let mean: f64 = predicted.iter().map(|d| d.lookups[k].0).sum();
            let sd = predicted.iter().map(|d| d.lookups[k].1).sum::<f64>().sqrt();
            eprintln!("layer {k}: Fhe {m}, Simulate {mean:.2} ± {sd:.2}");
            if (m as f64 - mean).abs() > 3.0 * sd + 1.0 {
                outside.push(format!(
                    "lookup layer {k}: Fhe {m} differing lookups, Simulate expects {mean:.2} ± {sd:.2}"
                ));
            }
        }
        if outside.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} (per sample, layers 0 and 1: {per_sample:?})",
                outside.join(", ")
            ))
        }
    });
}
