//! The end-to-end run shared by the `digits` and `mnist` examples: load or train a model,
//! run Clear and Simulate on the whole test split and Fhe on a few samples, print the
//! figures and write them as JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fhe_nn::fhe::{ClientKey, EncryptedSample};
use fhe_nn::train::{train, TrainConfig};
use fhe_nn::{
    argmax_rows, Architecture, CompiledModel, FheOptions, Mode, ParameterChoice, QuantModel,
    DEFAULT_MAX_DISAGREEMENT, DEFAULT_P_ERROR,
};
use ndarray::Axis;
use serde_json::json;

use crate::data::Dataset;

/// The trainer settings the shipped digits model (`fhe-nn/data/digits_seed.safetensors`) was
/// made with: `cargo run --release --example digits -- --train --save fhe-nn/data/digits_seed.safetensors`.
pub const DIGITS_TRAINING: TrainConfig = TrainConfig {
    epochs: 300,
    batch_size: 64,
    learning_rate: 0.003,
    seed: 1,
};

/// The trainer settings of the shipped MNIST model (`fhe-nn/data/mnist_card.safetensors`):
/// `cargo run --release --example mnist -- --train --save fhe-nn/data/mnist_card.safetensors`.
pub const MNIST_TRAINING: TrainConfig = TrainConfig {
    epochs: 30,
    batch_size: 32,
    learning_rate: 0.001,
    seed: 1,
};

/// Simulations of each Fhe sample behind the prediction Fhe is compared with.
const SIMULATIONS_PER_SAMPLE: usize = 200;

/// Command-line options of the examples.
#[derive(Clone, Debug)]
pub struct Options {
    pub train: bool,
    pub save: Option<PathBuf>,
    pub samples: usize,
    pub p_error: f64,
    pub precision: Option<u32>,
    pub vetted_only: bool,
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
  --precision B      use TFHE-rs's vetted set of this lookup precision in bits (2..8)
  --vetted-only      choose among TFHE-rs's vetted sets only (no custom sets)
  --max-disagreement F
                     choose the cheapest parameters whose simulated predictions on the
                     calibration inputs (the test images, without labels) differ from exact
                     Clear on at most this fraction (default 0.01)
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
            vetted_only: false,
            json: None,
            epochs: None,
            seed: 1,
            max_disagreement: DEFAULT_MAX_DISAGREEMENT,
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
                "--vetted-only" => o.vetted_only = true,
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
    let model = QuantModel::from_tensors(arch, &weights)?;
    // Pixels are never negative: the first layer needs only the non-negative part of the
    // input quantizer's range, so its accumulators are read at a finer resolution.
    let model = model.restrict_inputs(0, model.input_stage().range.max)?;
    let fhe_options = FheOptions {
        p_error: options.p_error,
        max_disagreement: options.max_disagreement,
        parameters: match (options.precision, options.vetted_only) {
            (Some(p), _) => ParameterChoice::Vetted(p),
            (None, true) => ParameterChoice::VettedOnly,
            (None, false) => ParameterChoice::Optimized,
        },
        ..FheOptions::default()
    };
    let test = &data.test;
    // Calibration: the test images without their labels (held-out data, as the model will
    // see; training images sit farther from the decision boundaries).
    let start = Instant::now();
    let compiled = model.compile(test.images.view(), &fhe_options)?;
    let compile_secs = start.elapsed().as_secs_f64();
    println!("{}", compiled.range_report());
    print!("{}", compiled.plan().report());
    println!("compiled in {compile_secs:.1} s");
    let plan = compiled.plan();

    let labels = test.labels.to_vec();
    let accuracy = |pred: &[usize]| {
        pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / pred.len().max(1) as f64
    };

    let start = Instant::now();
    let clear_pred = compiled.classify(test.images.view(), Mode::Clear)?;
    let clear_secs = start.elapsed().as_secs_f64();
    let clear_acc = accuracy(&clear_pred);
    let exact_acc = accuracy(&argmax_rows(
        model.predict_clear(test.images.view())?.view(),
    ));

    let start = Instant::now();
    let sim_pred = compiled.classify(test.images.view(), Mode::Simulate { seed: 7 })?;
    let sim_secs = start.elapsed().as_secs_f64();
    let sim_acc = accuracy(&sim_pred);
    let n = test.images.nrows();
    println!(
        "clear:    accuracy {:.4} on {n} test samples ({:.0} samples/s); exact (unrounded) Clear {exact_acc:.4}",
        clear_acc,
        n as f64 / clear_secs
    );
    println!(
        "simulate: accuracy {:.4} on {n} test samples ({:.0} samples/s)",
        sim_acc,
        n as f64 / sim_secs
    );
    let quantized = compiled.quantize(test.images.view())?;
    let overflows = compiled.simulate_overflows(quantized.view(), 7)?;
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
    let (client, eval) = compiled.keygen()?;
    let keygen = start.elapsed().as_secs_f64();
    let eval_bytes = eval.serialized_size()?;
    let start = Instant::now();
    let server = compiled.server(eval)?;
    let server_setup = start.elapsed().as_secs_f64();
    println!(
        "keys: generated in {keygen:.2} s by the client, evaluation key {:.1} MB (compressed, serialized); server set-up {server_setup:.2} s (decompression, tables)",
        eval_bytes as f64 / 1e6
    );

    let samples = options.samples.min(n);
    let mut times = Vec::new();
    let (mut fhe_correct, mut agree) = (0, 0);
    let lookup_layers = plan.lookups.len();
    let (mut differing, mut lookups_seen) =
        (vec![0usize; lookup_layers], vec![0usize; lookup_layers]);
    for (i, row) in test.images.axis_iter(Axis(0)).take(samples).enumerate() {
        let q = quantized.row(i).to_vec();
        let input = client.encrypt_quantized(&q)?;
        let start = Instant::now();
        let trace = server.run_traced(&input)?;
        times.push(start.elapsed().as_secs_f64());
        let output = trace.last().expect("the output layer");
        let out = client.decrypt(output)?;
        let pred = out
            .iter()
            .enumerate()
            .fold(0, |b, (j, &v)| if v > out[b] { j } else { b });
        fhe_correct += usize::from(pred == labels[i]);
        agree += usize::from(pred == clear_pred[i]);
        for (k, (d, c)) in lookup_differences(&compiled, &client, &q, &trace)?
            .into_iter()
            .enumerate()
        {
            differing[k] += d;
            lookups_seen[k] += c;
        }
        let _ = row;
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
    let measured_lookups: Vec<f64> = differing
        .iter()
        .zip(&lookups_seen)
        .map(|(&d, &c)| d as f64 / c.max(1) as f64)
        .collect();
    // Simulate's prediction for these very samples (the sample is the unit): expected
    // counts and their spread, to hold Fhe's counts against.
    let same = compiled.simulate_disagreement(
        quantized.slice(ndarray::s![..samples, ..]),
        SIMULATIONS_PER_SAMPLE,
        11,
    )?;
    let expected_flips: f64 = same.iter().map(|d| d.prediction).sum();
    let flip_sd = same
        .iter()
        .map(|d| d.prediction * (1.0 - d.prediction))
        .sum::<f64>()
        .sqrt();
    let per_layer: Vec<(f64, f64)> = (0..lookup_layers)
        .map(|k| {
            let mean: f64 = same.iter().map(|d| d.lookups[k].0).sum();
            let var: f64 = same.iter().map(|d| d.lookups[k].1).sum();
            (mean, var.sqrt())
        })
        .collect();
    if samples == 0 {
        println!(
            "fhe:      no encrypted inference (--samples 0); {} lookups per inference",
            server.lookups()
        );
    } else {
        println!("fhe:      accuracy {fhe_acc:.4} on {samples} samples, agreement with clear {agreement:.4}, {median:.3} s per inference (median), {} lookups", server.lookups());
        println!(
            "fhe:      predictions differing from Clear: {} of {samples}; Simulate on the same samples expects {expected_flips:.2} ± {flip_sd:.2}",
            samples - agree
        );
        for ((l, &d), (mean, sd)) in plan.lookups.iter().zip(&differing).zip(&per_layer) {
            let within = (d as f64 - mean).abs() <= 3.0 * sd + 1.0;
            println!(
                "fhe:      layer {:>2}: {d} of {} lookups differ from Clear; Simulate on the same samples expects {mean:.1} ± {sd:.1} ({})",
                l.layer + 1,
                samples * l.count,
                if within { "within 3 sigma" } else { "OUTSIDE 3 sigma" }
            );
        }
    }

    let p = &plan.set.params;
    let json = json!({
        "example": name,
        "clear": { "accuracy": clear_acc, "exact_accuracy": exact_acc, "samples": n, "samples_per_second": n as f64 / clear_secs },
        "simulate": { "accuracy": sim_acc, "samples": n, "samples_per_second": n as f64 / sim_secs },
        "fhe": {
            "accuracy": fhe_acc, "agreement_with_clear": agreement, "seconds_per_inference": median, "samples": samples,
            "lookup_disagreement": measured_lookups,
            "lookups_differing": differing,
            "predictions_differing": samples - agree,
        },
        "simulate_same_samples": {
            "runs_per_sample": SIMULATIONS_PER_SAMPLE,
            "expected_predictions_differing": expected_flips,
            "predictions_differing_sd": flip_sd,
            "expected_lookups_differing": per_layer.iter().map(|p| p.0).collect::<Vec<_>>(),
            "lookups_differing_sd": per_layer.iter().map(|p| p.1).collect::<Vec<_>>(),
        },
        "predicted": {
            "prediction_disagreement": plan.predictions,
            "prediction_disagreement_vs_exact": plan.predictions_vs_exact,
            "lookups": plan.lookups,
            "calibration_samples": plan.calibration_samples,
        },
        "compile_seconds": compile_secs,
        "keygen_seconds": keygen,
        "server_setup_seconds": server_setup,
        "evaluation_key_bytes": eval_bytes,
        "lookups_per_inference": server.lookups(),
        "p_error": options.p_error,
        "max_disagreement": options.max_disagreement,
        "global_p_error": plan.global_p_error,
        "parameters": {
            "name": plan.set.name, "vetted": plan.set.is_vetted(), "precision": plan.set.precision, "lwe_dimension": p.lwe_dimension.0,
            "glwe_dimension": p.glwe_dimension.0, "polynomial_size": p.polynomial_size.0,
            "pbs_base_log": p.pbs_base_log.0, "pbs_level": p.pbs_level.0, "ks_base_log": p.ks_base_log.0, "ks_level": p.ks_level.0,
            "log2_worst_lookup_p_error": plan.worst_p_error().max(f64::MIN_POSITIVE).log2(),
            "modeled_seconds": plan.modeled_seconds,
        },
    });
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(Figures { json })
}

/// Per lookup layer of one traced encrypted inference: how many lookups gave another output
/// than Clear's table on the accumulator of the inputs Fhe actually had, and how many there
/// were.
pub fn lookup_differences(
    compiled: &CompiledModel,
    client: &ClientKey,
    input: &[i64],
    trace: &[EncryptedSample],
) -> Result<Vec<(usize, usize)>, Box<dyn std::error::Error>> {
    let mut inputs = input.to_vec();
    let mut found = Vec::new();
    for (k, stage) in compiled.layers().iter().enumerate() {
        let Some(lookup) = stage.lookup() else {
            continue;
        };
        let delta = compiled.input_delta_log2(k + 1);
        let outputs = trace[k]
            .ciphertexts()
            .iter()
            .map(|c| client.decrypt_value(c, delta))
            .collect::<Result<Vec<i64>, _>>()?;
        let differ = outputs
            .iter()
            .enumerate()
            .filter(|&(j, &got)| {
                let acc = stage.accumulate_one(j, &inputs);
                got != lookup.read(stage.group(j), acc)
            })
            .count();
        found.push((differ, outputs.len()));
        inputs = outputs;
    }
    Ok(found)
}
