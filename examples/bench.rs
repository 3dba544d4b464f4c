//! Benchmark of both networks in all three modes: prints a table and writes JSON.
//!
//!     cargo run --release --example bench -- [--samples N] [--p-error P] [--json FILE]
//!
//! Fhe time is the median over `--samples` encrypted inferences (default 5).

use fhe_nn::fhe_net;
use fhe_nn_suite::{data, driver};

fhe_net! {
    pub struct Seed<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 10, w = 3)>
}

fhe_net! {
    pub struct Card<QuantIdentity(3), QuantLinear(784, 128, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(128, 10, w = 3)>
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = match driver::Options::from_args(5) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let json_path = options
        .json
        .take()
        .unwrap_or_else(|| "bench-results/bench.json".into());
    let digits = data::digits()?;
    let seed = driver::run(
        "digits",
        Seed::architecture(),
        &digits,
        &data::models_dir().join("digits_seed.safetensors"),
        driver::DIGITS_TRAINING,
        &options,
    )?;
    let mnist = data::mnist_5k()?;
    let card = driver::run(
        "mnist",
        Card::architecture(),
        &mnist,
        &data::models_dir().join("mnist_card.safetensors"),
        driver::MNIST_TRAINING,
        &options,
    )?;

    println!("\n| network | params | lookups | fhe s/inference | keygen s | eval key MB | clear acc | simulate acc | fhe acc | fhe = clear | clear samples/s | simulate samples/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, f) in [
        ("seed 64-30-30-10", &seed.json),
        ("card 784-128-10", &card.json),
    ] {
        println!(
            "| {name} | {} | {} | {:.3} | {:.2} | {:.1} | {:.4} | {:.4} | {:.4} ({} samples) | {:.4} | {:.0} | {:.0} |",
            f["parameters"]["name"].as_str().unwrap_or("?"),
            f["lookups_per_inference"],
            f["fhe"]["seconds_per_inference"].as_f64().unwrap_or(f64::NAN),
            f["keygen_seconds"].as_f64().unwrap_or(f64::NAN),
            f["evaluation_key_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
            f["clear"]["accuracy"].as_f64().unwrap_or(f64::NAN),
            f["simulate"]["accuracy"].as_f64().unwrap_or(f64::NAN),
            f["fhe"]["accuracy"].as_f64().unwrap_or(f64::NAN),
            f["fhe"]["samples"],
            f["fhe"]["agreement_with_clear"].as_f64().unwrap_or(f64::NAN),
            f["clear"]["samples_per_second"].as_f64().unwrap_or(f64::NAN),
            f["simulate"]["samples_per_second"].as_f64().unwrap_or(f64::NAN),
        );
    }
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(
            &serde_json::json!({ "digits": seed.json, "mnist": card.json }),
        )?,
    )?;
    println!("figures written to {}", json_path.display());
    Ok(())
}
