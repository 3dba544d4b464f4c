//! Benchmark of the shipped networks (seed, card, CNN, residual) at p_error 2^-40 and 0.01 in all
//! three modes: prints a table
//! and writes JSON, with the time of one keyswitch + bootstrap of TFHE-rs's vetted 4-bit set
//! measured in the same run (so figures compare across machines).
//!
//!     cargo run --release --example bench -- [--samples N] [--p-error P] [--max-disagreement F] [--json FILE]
//!
//! Fhe time is the median over `--samples` encrypted inferences (default 5); with
//! `--p-error` only that p_error is run.

mod support;

use std::time::Instant;

use fhe_nn::datasets::{
    digits, digits_cnn_weights, digits_resnet_weights, digits_seed_weights, mnist_5k,
    mnist_card_weights, Card, Cnn, Resnet, Seed, DIGITS_CNN_TRAINING, DIGITS_RESNET_TRAINING,
    DIGITS_SEED_TRAINING, MNIST_CARD_TRAINING,
};
use fhe_nn::params::vetted;
use serde::Serialize;
use tfhe::shortint;

/// The JSON `bench` writes.
#[derive(Serialize)]
struct Bench {
    reference_lookup_seconds: f64,
    reference_set: String,
    runs: Vec<BenchRun>,
}

#[derive(Serialize)]
struct BenchRun {
    network: &'static str,
    p_error: f64,
    figures: support::Figures,
}

/// Median seconds of one KS+PBS of the vetted 4-bit set on one thread.
fn reference_lookup_seconds() -> f64 {
    let set = vetted(4).expect("the vetted 4-bit set");
    let client = shortint::ClientKey::new(*set.params());
    let server = shortint::ServerKey::new(&client);
    let ct = client.encrypt(1);
    let lut = server.generate_lookup_table(|x| x);
    let mut times: Vec<f64> = (0..21)
        .map(|_| {
            let start = Instant::now();
            let _ = std::hint::black_box(server.apply_lookup_table(&ct, &lut));
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = support::parse(
        "The shipped networks (seed, card, CNN, residual) at p_error 2^-40 and 0.01 (or --p-error only), \
         in the three modes, with a reference KS+PBS time measured in the same run",
    );
    let explicit_p = std::env::args().any(|a| a.starts_with("--p-error"));
    let json_path = options
        .json
        .take()
        .unwrap_or_else(|| "bench-results/bench.json".into());
    let reference = reference_lookup_seconds();
    let reference_set = vetted(4).map(|s| s.name().to_string()).unwrap_or_default();
    println!(
        "reference: one KS+PBS of {reference_set} takes {:.2} ms on one thread here",
        1e3 * reference
    );
    let p_errors = if explicit_p {
        vec![options.p_error]
    } else {
        vec![fhe_nn::DEFAULT_P_ERROR, 0.01]
    };
    let (digits, mnist) = (digits()?, mnist_5k()?);
    let mut runs = Vec::new();
    for &p_error in &p_errors {
        let run = support::Options {
            p_error,
            ..options.clone()
        };
        let seed = support::run(
            "digits",
            Seed::architecture(),
            &digits,
            digits_seed_weights()?,
            DIGITS_SEED_TRAINING,
            5,
            &run,
        )?;
        runs.push(BenchRun {
            network: "seed 64-30-30-10",
            p_error,
            figures: seed,
        });
        let card = support::run(
            "mnist",
            Card::architecture(),
            &mnist,
            mnist_card_weights()?,
            MNIST_CARD_TRAINING,
            5,
            &run,
        )?;
        runs.push(BenchRun {
            network: "card 784-128-10",
            p_error,
            figures: card,
        });
        let cnn = support::run(
            "cnn",
            Cnn::architecture(),
            &digits,
            digits_cnn_weights()?,
            DIGITS_CNN_TRAINING,
            3,
            &run,
        )?;
        runs.push(BenchRun {
            network: "cnn 3 conv + 32-10",
            p_error,
            figures: cnn,
        });
        let resnet = support::run(
            "resnet",
            Resnet::architecture(),
            &digits,
            digits_resnet_weights()?,
            DIGITS_RESNET_TRAINING,
            3,
            &run,
        )?;
        runs.push(BenchRun {
            network: "resnet (residual block, max pool)",
            p_error,
            figures: resnet,
        });
    }

    println!("\n| network | p_error | parameters | lookups | fhe s/inference | × reference KS+PBS | keygen s | eval key MB | clear acc | simulate acc | fhe acc | predictions ≠ Clear: predicted | measured | lookups ≠ Clear: predicted (same samples) | measured |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let f = &r.figures;
        let join = |v: Vec<String>| v.join(", ");
        println!(
            "| {} | {} | {}{}, inputs under the {} key | {} | {:.3} | {:.0} | {:.2} | {:.1} | {:.4} | {:.4} | {:.4} | {:.2}% | {} of {} | {} | {} |",
            r.network,
            if (r.p_error - fhe_nn::DEFAULT_P_ERROR).abs() < 1e-20 { "2^-40".to_string() } else { format!("{}", r.p_error) },
            f.parameters.name,
            match f.parameters.last_layer_pbs {
                Some((base, levels)) => format!(" (last lookup layer pbs 2^{base}x{levels})"),
                None => String::new(),
            },
            f.parameters.input_key,
            f.lookups_per_inference,
            f.fhe.seconds_per_inference,
            f.fhe.seconds_per_inference / reference,
            f.keygen_seconds,
            f.evaluation_key_bytes as f64 / 1e6,
            f.clear.accuracy,
            f.simulate.accuracy,
            f.fhe.accuracy,
            100.0 * f.predicted.prediction_disagreement.mean,
            f.fhe.predictions_differing,
            f.fhe.samples,
            join(f.simulate_same_samples.expected_lookups_differing.iter().map(|v| format!("{v:.1}")).collect()),
            join(f.fhe.lookups_differing.iter().map(|v| v.to_string()).collect()),
        );
    }
    support::write_json(
        &json_path,
        &Bench {
            reference_lookup_seconds: reference,
            reference_set,
            runs,
        },
    )
}
