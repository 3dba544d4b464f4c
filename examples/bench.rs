//! Benchmark of both networks at p_error 2^-40 and 0.01 in all three modes: prints a table
//! and writes JSON, with the time of one keyswitch + bootstrap of TFHE-rs's vetted 4-bit set
//! measured in the same run (so figures compare across machines).
//!
//!     cargo run --release --example bench -- [--samples N] [--p-error P] [--max-disagreement F] [--json FILE]
//!
//! Fhe time is the median over `--samples` encrypted inferences (default 5); with
//! `--p-error` only that p_error is run.

use std::time::Instant;

use fhe_nn::fhe::vetted;
use fhe_nn::fhe_net;
use fhe_nn_suite::{data, driver};
use tfhe::shortint;

fhe_net! {
    pub struct Seed<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 10, w = 3)>
}

fhe_net! {
    pub struct Card<QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(128, 10, w = 3)>
}

/// Median seconds of one KS+PBS of the vetted 4-bit set on one thread.
fn reference_lookup_seconds() -> f64 {
    let set = vetted(4).expect("the vetted 4-bit set");
    let client = shortint::ClientKey::new(set.params);
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
    let mut options = match driver::Options::from_args(5) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let explicit_p = std::env::args().any(|a| a == "--p-error");
    let json_path = options
        .json
        .take()
        .unwrap_or_else(|| "bench-results/bench.json".into());
    let reference = reference_lookup_seconds();
    println!(
        "reference: one KS+PBS of {} takes {:.2} ms on one thread here",
        vetted(4).map(|s| s.name).unwrap_or_default(),
        1e3 * reference
    );
    let p_errors = if explicit_p {
        vec![options.p_error]
    } else {
        vec![fhe_nn::DEFAULT_P_ERROR, 0.01]
    };
    let digits = data::digits()?;
    let mnist = data::mnist_5k()?;
    let mut rows = Vec::new();
    for &p_error in &p_errors {
        let run = driver::Options {
            p_error,
            ..options.clone()
        };
        let seed = driver::run(
            "digits",
            Seed::architecture(),
            &digits,
            &data::models_dir().join("digits_seed.safetensors"),
            driver::DIGITS_TRAINING,
            &run,
        )?;
        rows.push(("seed 64-30-30-10", p_error, seed.json));
        let card = driver::run(
            "mnist",
            Card::architecture(),
            &mnist,
            &data::models_dir().join("mnist_card.safetensors"),
            driver::MNIST_TRAINING,
            &run,
        )?;
        rows.push(("card 784-128-10", p_error, card.json));
    }

    println!("\n| network | p_error | parameters | lookups | fhe s/inference | × reference KS+PBS | keygen s | eval key MB | clear acc | simulate acc | fhe acc | predictions ≠ Clear: predicted | measured | lookups ≠ Clear: predicted (same samples) | measured |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, p, f) in &rows {
        let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        let samples = num(&f["fhe"]["samples"]);
        let lookups_predicted: Vec<String> = f["simulate_same_samples"]
            ["expected_lookups_differing"]
            .as_array()
            .map(|a| a.iter().map(|v| format!("{:.1}", num(v))).collect())
            .unwrap_or_default();
        let lookups_measured: Vec<String> = f["fhe"]["lookups_differing"]
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        println!(
            "| {name} | {} | {} | {} | {:.3} | {:.0} | {:.2} | {:.1} | {:.4} | {:.4} | {:.4} | {:.2}% | {} of {} | {} | {} |",
            if (*p - fhe_nn::DEFAULT_P_ERROR).abs() < 1e-20 { "2^-40".to_string() } else { format!("{p}") },
            f["parameters"]["name"].as_str().unwrap_or("?"),
            f["lookups_per_inference"],
            num(&f["fhe"]["seconds_per_inference"]),
            num(&f["fhe"]["seconds_per_inference"]) / reference,
            num(&f["keygen_seconds"]),
            num(&f["evaluation_key_bytes"]) / 1e6,
            num(&f["clear"]["accuracy"]),
            num(&f["simulate"]["accuracy"]),
            num(&f["fhe"]["accuracy"]),
            100.0 * num(&f["predicted"]["prediction_disagreement"]["mean"]),
            f["fhe"]["predictions_differing"],
            samples,
            lookups_predicted.join(", "),
            lookups_measured.join(", "),
        );
    }
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let runs: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(name, p, f)| serde_json::json!({ "network": name, "p_error": p, "figures": f }))
        .collect();
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&serde_json::json!({
            "reference_lookup_seconds": reference,
            "reference_set": vetted(4).map(|s| s.name).unwrap_or_default(),
            "runs": runs,
        }))?,
    )?;
    println!("figures written to {}", json_path.display());
    Ok(())
}
