//! The end-to-end run shared by the `digits` and `mnist` examples: load or train a model,
//! run Clear and Simulate on the whole test split and Fhe on a few samples, print the
//! figures and write them as JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fhe_nn::fhe::{generate_keys, log2, FheOptions, FheServer, DEFAULT_P_ERROR};
use fhe_nn::train::{train, TrainConfig};
use fhe_nn::{argmax_rows, Architecture, QuantModel};
use ndarray::Axis;
use serde_json::json;

use crate::data::Dataset;

/// The trainer settings the shipped digits model (`models/digits_seed.safetensors`) was
/// made with: `cargo run --release --example digits -- --train --save models/digits_seed.safetensors`.
pub const DIGITS_TRAINING: TrainConfig = TrainConfig {
    epochs: 300,
    batch_size: 64,
    learning_rate: 0.003,
    seed: 1,
};

/// The trainer settings of the shipped MNIST model (`models/mnist_card.safetensors`):
/// `cargo run --release --example mnist -- --train --save models/mnist_card.safetensors`.
pub const MNIST_TRAINING: TrainConfig = TrainConfig {
    epochs: 30,
    batch_size: 32,
    learning_rate: 0.001,
    seed: 1,
};

/// Command-line options of the examples.
#[derive(Clone, Debug)]
pub struct Options {
    pub train: bool,
    pub save: Option<PathBuf>,
    pub samples: usize,
    pub p_error: f64,
    pub precision: Option<u32>,
    pub json: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub seed: u64,
    pub max_disagreement: f64,
}

const USAGE: &str = "options:
  --train            train the model with the Rust QAT trainer instead of loading the shipped one
  --save FILE        write the trained weights to FILE (safetensors)
  --epochs N         training epochs
  --seed N           training seed (default 1)
  --samples N        encrypted inferences to run (default: the example's)
  --p-error P        failure probability of one lookup (default 2^-40)
  --precision B      force the parameter set's lookup precision in bits (2..8)
  --max-disagreement F
                     choose the cheapest parameters whose simulated predictions on the
                     training data differ from exact Clear on at most this fraction (default 0.02)
  --json FILE        write the figures to FILE";

impl Options {
    /// Parses `std::env::args`, with the example's default sample count.
    pub fn from_args(default_samples: usize) -> Result<Options, String> {
        let mut o = Options {
            train: false,
            save: None,
            samples: default_samples,
            p_error: DEFAULT_P_ERROR,
            precision: None,
            json: None,
            epochs: None,
            seed: 1,
            max_disagreement: 0.02,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
            };
            match a.as_str() {
                "--train" => o.train = true,
                "--save" => o.save = Some(value("--save")?.into()),
                "--samples" => o.samples = parse(&value("--samples")?, "--samples")?,
                "--epochs" => o.epochs = Some(parse(&value("--epochs")?, "--epochs")?),
                "--seed" => o.seed = parse(&value("--seed")?, "--seed")?,
                "--p-error" => {
                    o.p_error = parse(&value("--p-error")?, "--p-error")?;
                    if !(o.p_error > 0.0 && o.p_error < 1.0) {
                        return Err("--p-error must be in (0, 1)".into());
                    }
                }
                "--precision" => o.precision = Some(parse(&value("--precision")?, "--precision")?),
                "--json" => o.json = Some(value("--json")?.into()),
                "--max-disagreement" => {
                    o.max_disagreement = parse(&value("--max-disagreement")?, "--max-disagreement")?
                }
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown option `{other}`\n{USAGE}")),
            }
        }
        Ok(o)
    }
}

fn parse<T: std::str::FromStr>(s: &str, name: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{name}: cannot parse `{s}`"))
}

/// What one run measured.
pub struct Figures {
    pub json: serde_json::Value,
}

/// Runs the example: `shipped` is the weight file used without `--train`, `training` the
/// trainer's settings with `--train`.
pub fn run(
    name: &str,
    arch: &Architecture,
    data: &Dataset,
    shipped: &Path,
    training: TrainConfig,
    options: &Options,
) -> Result<Figures, Box<dyn std::error::Error>> {
    println!("{}", arch.report());
    let weights = if options.train {
        let config = TrainConfig {
            epochs: options.epochs.unwrap_or(training.epochs),
            seed: options.seed,
            ..training
        };
        println!(
            "training {} epochs on {} samples (seed {})",
            config.epochs,
            data.train.images.nrows(),
            config.seed
        );
        let start = Instant::now();
        let labels = data.train.labels.to_vec();
        let file = train(arch, data.train.images.view(), &labels, config, |s| {
            eprint!(
                "\r  epoch {:>3}: loss {:.4}, train accuracy {:.4}   ",
                s.epoch + 1,
                s.loss,
                s.train_accuracy
            );
        })?;
        eprintln!();
        println!("trained in {:.1} s", start.elapsed().as_secs_f64());
        if let Some(path) = &options.save {
            std::fs::write(path, file.to_safetensors()?)?;
            println!("saved {}", path.display());
        }
        file
    } else {
        fhe_nn::tensors::TensorFile::read(shipped)?
    };
    let mut model = QuantModel::from_tensors(arch, &weights)?;
    let fhe_options = FheOptions {
        p_error: options.p_error,
        precision: options.precision,
        ..FheOptions::default()
    };
    // The cheapest parameters whose simulated predictions on training data stay close to
    // exact Clear's.
    let plan = model.plan_for_accuracy(
        &fhe_options,
        data.train.images.view(),
        options.max_disagreement,
    )?;
    println!("{}", model.range_report());
    print!("{}", plan.report());

    let test = &data.test;
    let labels = test.labels.to_vec();
    let accuracy = |pred: &[usize]| {
        pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / pred.len().max(1) as f64
    };

    let start = Instant::now();
    let clear_out = model.predict_clear(test.images.view())?;
    let clear_secs = start.elapsed().as_secs_f64();
    let clear_pred = argmax_rows(clear_out.view());
    let clear_acc = accuracy(&clear_pred);

    let start = Instant::now();
    let sim_out = model.predict_simulate(&plan, test.images.view(), 7)?;
    let sim_secs = start.elapsed().as_secs_f64();
    let sim_pred = argmax_rows(sim_out.view());
    let sim_acc = accuracy(&sim_pred);
    let n = test.images.nrows();
    println!(
        "clear:    accuracy {:.4} on {n} test samples ({:.0} samples/s)",
        clear_acc,
        n as f64 / clear_secs
    );
    println!(
        "simulate: accuracy {:.4} on {n} test samples ({:.0} samples/s)",
        sim_acc,
        n as f64 / sim_secs
    );
    let quantized = model.quantize_inputs(test.images.view())?;
    let overflows = model.simulate_overflows(&plan, quantized.view(), 7)?;
    if overflows.is_empty() {
        println!("simulate: no lookup left its table's range (overflow detector)");
    }
    for o in &overflows {
        println!(
            "simulate: overflow at layer {} neuron {}: {} of {n} samples",
            o.layer + 1,
            o.neuron,
            o.count
        );
    }

    let start = Instant::now();
    let (client, eval) = generate_keys(&model, &plan);
    let keygen = start.elapsed().as_secs_f64();
    let eval_bytes = eval.serialized_size()?;
    let start = Instant::now();
    let server = FheServer::new(&model, &plan, eval)?;
    let server_setup = start.elapsed().as_secs_f64();
    println!(
        "keys: generated in {keygen:.2} s by the client, evaluation key {:.1} MB (compressed, serialized); server set-up {server_setup:.2} s (decompression, tables)",
        eval_bytes as f64 / 1e6
    );

    let samples = options.samples.min(n);
    let mut times = Vec::new();
    let (mut fhe_correct, mut agree) = (0, 0);
    for (i, row) in test.images.axis_iter(Axis(0)).take(samples).enumerate() {
        let input = client.encrypt(row)?;
        let start = Instant::now();
        let output = server.run(&input)?;
        times.push(start.elapsed().as_secs_f64());
        let out = client.decrypt(&output)?;
        let pred = out
            .iter()
            .enumerate()
            .fold(0, |b, (j, &v)| if v > out[b] { j } else { b });
        fhe_correct += usize::from(pred == labels[i]);
        agree += usize::from(pred == clear_pred[i]);
        eprint!(
            "\r  fhe: {}/{samples} samples, last {:.2} s, agreement with clear {agree}/{}   ",
            i + 1,
            times[i],
            i + 1
        );
    }
    if samples > 0 {
        eprintln!();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let fhe_acc = fhe_correct as f64 / samples.max(1) as f64;
    let agreement = agree as f64 / samples.max(1) as f64;
    if samples == 0 {
        println!(
            "fhe:      no encrypted inference (--samples 0); {} lookups per inference",
            server.lookups()
        );
    } else {
        println!("fhe:      accuracy {fhe_acc:.4} on {samples} samples, agreement with clear {agreement:.4}, {median:.3} s per inference (median), {} lookups", server.lookups());
    }

    let p = &plan.set.params;
    let json = json!({
        "example": name,
        "clear": { "accuracy": clear_acc, "samples": n, "samples_per_second": n as f64 / clear_secs },
        "simulate": { "accuracy": sim_acc, "samples": n, "samples_per_second": n as f64 / sim_secs },
        "fhe": { "accuracy": fhe_acc, "agreement_with_clear": agreement, "seconds_per_inference": median, "samples": samples },
        "keygen_seconds": keygen,
        "server_setup_seconds": server_setup,
        "evaluation_key_bytes": eval_bytes,
        "lookups_per_inference": server.lookups(),
        "p_error": options.p_error,
        "max_disagreement": options.max_disagreement,
        "global_p_error": plan.global_p_error,
        "parameters": {
            "name": plan.set.name, "precision": plan.set.precision, "lwe_dimension": p.lwe_dimension.0,
            "glwe_dimension": p.glwe_dimension.0, "polynomial_size": p.polynomial_size.0,
            "log2_worst_lookup_p_error": plan.lookups.iter().map(|l| log2(l.p_error)).fold(f64::MIN, f64::max),
        },
    });
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(Figures { json })
}
