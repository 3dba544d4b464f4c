//! The end-to-end run shared by the `digits`, `mnist`, `cnn` and `bench` examples: load or train a
//! model, run Clear and Simulate on the whole test split and Fhe on a few samples, print the
//! figures and write them as JSON.
// Each example uses part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fhe_nn::arch::layer::Layer;
use fhe_nn::compile::LookupFigures;
use fhe_nn::datasets::Dataset;
use fhe_nn::tensors::TensorFile;
use fhe_nn::train::{train, TrainConfig};
use fhe_nn::{
    argmax, argmax_rows, Architecture, Estimate, FheOptions, Mode, ParameterChoice, QuantModel,
    DEFAULT_MAX_DISAGREEMENT, DEFAULT_P_ERROR,
};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Axis;
use serde::Serialize;

/// Simulations of each Fhe sample behind the prediction Fhe is compared with.
const SIMULATIONS_PER_SAMPLE: usize = 200;

/// Command-line options of the examples.
#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Train the model with the Rust QAT trainer instead of loading the shipped weights.
    #[arg(long)]
    pub train: bool,
    /// Write the trained weights to FILE (safetensors).
    #[arg(long, value_name = "FILE", requires = "train")]
    pub save: Option<PathBuf>,
    /// Training epochs [default: the shipped model's].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Train with batch normalization after every weighted layer but the last (folded into
    /// the exported scales and biases).
    #[arg(long, requires = "train")]
    pub batch_norm: bool,
    /// Encrypted inferences to run [default: the example's].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Failure probability of one lookup (`2^-64`: the strict profile).
    #[arg(long, default_value_t = DEFAULT_P_ERROR, value_parser = probability)]
    pub p_error: f64,
    /// Use TFHE-rs's vetted set of this lookup precision in bits (2..8).
    #[arg(long, value_name = "BITS")]
    pub precision: Option<u32>,
    /// Choose among TFHE-rs's vetted sets only (no custom sets).
    #[arg(long)]
    pub vetted_only: bool,
    /// Choose the cheapest parameters whose simulated predictions on the calibration inputs
    /// (the test images, without labels) differ from exact Clear on at most this fraction.
    #[arg(long, default_value_t = DEFAULT_MAX_DISAGREEMENT, value_parser = probability)]
    pub max_disagreement: f64,
    /// Write the figures to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Declare `acc = N` (an accumulator bound of N bits, checked against the weights) on
    /// the first weighted layer; with --train the trainer keeps it.
    #[arg(long, value_name = "BITS")]
    pub acc: Option<u32>,
    /// Declare `acc = N` on the last (output) weighted layer; with --train the trainer keeps
    /// it. A narrower output leaves its decryption more room for noise.
    #[arg(long, value_name = "BITS")]
    pub output_acc: Option<u32>,
}

/// The command line of an example that takes only [`Options`].
#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    options: Options,
}

/// Parses the command line of an example described by `about` (its `--help` heading).
pub fn parse(about: &'static str) -> Options {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().about(about).get_matches();
    Cli::from_arg_matches(&matches)
        .map(|cli| cli.options)
        .unwrap_or_else(|e| e.exit())
}

/// Ends an example: on error, prints it and exits with status 1.
pub fn exit_on_error<T>(result: Result<T, Box<dyn std::error::Error>>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// A probability, as a decimal (`0.01`) or a power of two (`2^-64`, the strict profile).
fn probability(s: &str) -> Result<f64, String> {
    let parsed = match s.strip_prefix("2^") {
        Some(exponent) => exponent.parse::<i32>().map(|e| 2f64.powi(e)).ok(),
        None => s.parse::<f64>().ok(),
    };
    match parsed {
        Some(p) if p > 0.0 && p < 1.0 => Ok(p),
        _ => Err(format!("`{s}` is not a probability in (0, 1)")),
    }
}

/// `arch` with `acc = first` declared on its first weighted layer and `acc = last` on its
/// last, where given.
fn with_declared_acc(
    arch: &Architecture,
    first: Option<u32>,
    last: Option<u32>,
) -> Result<Architecture, String> {
    let mut layers = arch.layers().to_vec();
    let mut weighted: Vec<_> = layers
        .iter_mut()
        .filter_map(|l| match l {
            Layer::QuantLinear { options, .. } => Some(options),
            Layer::QuantConv2d(conv) => Some(&mut conv.options),
            _ => None,
        })
        .collect();
    if weighted.is_empty() {
        return Err("the network has no weighted layer".into());
    }
    if let Some(bits) = first {
        weighted[0].acc = Some(bits);
    }
    if let (Some(bits), Some(options)) = (last, weighted.last_mut()) {
        options.acc = Some(bits);
    }
    Architecture::new(arch.name(), layers).map_err(|e| e.to_string())
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub fn progress(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// A spinner on stderr while `work` runs (drawn only when stderr is a terminal).
pub fn with_spinner<T>(message: &str, work: impl FnOnce() -> T) -> T {
    let spinner = ProgressBar::new_spinner().with_message(message.to_string());
    spinner.enable_steady_tick(Duration::from_millis(120));
    let result = work();
    spinner.finish_and_clear();
    result
}

/// What one run measured (written as JSON by `--json`; the keys are the README's).
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub example: String,
    pub clear: ClearFigures,
    pub simulate: SimulateFigures,
    pub fhe: FheFigures,
    pub simulate_same_samples: SameSamples,
    pub predicted: Predicted,
    pub compile_seconds: f64,
    pub keygen_seconds: f64,
    pub server_setup_seconds: f64,
    pub evaluation_key_bytes: u64,
    pub lookups_per_inference: usize,
    pub p_error: f64,
    pub max_disagreement: f64,
    pub global_p_error: f64,
    pub parameters: Parameters,
}

/// Clear on the whole test split.
#[derive(Clone, Debug, Serialize)]
pub struct ClearFigures {
    pub accuracy: f64,
    /// With the unrounded tables of the loaded model.
    pub exact_accuracy: f64,
    pub samples: usize,
    pub samples_per_second: f64,
}

/// Simulate on the whole test split.
#[derive(Clone, Debug, Serialize)]
pub struct SimulateFigures {
    pub accuracy: f64,
    pub samples: usize,
    pub samples_per_second: f64,
}

/// Fhe on the first test samples.
#[derive(Clone, Debug, Serialize)]
pub struct FheFigures {
    pub accuracy: f64,
    pub agreement_with_clear: f64,
    /// Median.
    pub seconds_per_inference: f64,
    pub samples: usize,
    /// Per lookup layer: the fraction of lookups that differ from Clear.
    pub lookup_disagreement: Vec<f64>,
    /// Per lookup layer: how many differ.
    pub lookups_differing: Vec<usize>,
    pub predictions_differing: usize,
}

/// Simulate's prediction for the samples Fhe ran.
#[derive(Clone, Debug, Serialize)]
pub struct SameSamples {
    pub runs_per_sample: usize,
    pub expected_predictions_differing: f64,
    pub predictions_differing_sd: f64,
    pub expected_lookups_differing: Vec<f64>,
    pub lookups_differing_sd: Vec<f64>,
}

/// The compile step's error figures.
#[derive(Clone, Debug, Serialize)]
pub struct Predicted {
    pub prediction_disagreement: Estimate,
    pub prediction_disagreement_vs_exact: Estimate,
    pub lookups: Vec<LookupFigures>,
    pub calibration_samples: usize,
    /// Cheaper sets the search rejected as too far off Clear (what a larger
    /// `max_disagreement` allows).
    pub cheaper_rejected: Vec<fhe_nn::CheaperSet>,
}

/// The parameter set.
#[derive(Clone, Debug, Serialize)]
pub struct Parameters {
    pub name: String,
    /// `"small"` or `"big"`: the key the inputs are encrypted under.
    pub input_key: String,
    pub vetted: bool,
    pub precision: u32,
    pub lwe_dimension: usize,
    pub glwe_dimension: usize,
    pub polynomial_size: usize,
    pub pbs_base_log: usize,
    pub pbs_level: usize,
    /// The last lookup layer's bootstrap decomposition where it has its own key.
    pub last_layer_pbs: Option<(usize, usize)>,
    pub ks_base_log: usize,
    pub ks_level: usize,
    pub log2_worst_lookup_p_error: f64,
    pub modeled_seconds: f64,
}

/// Runs the example: `shipped` are the weights used without `--train`, `training` the
/// trainer's settings with `--train`; `samples` encrypted inferences unless `--samples`.
pub fn run(
    name: &str,
    arch: &Architecture,
    data: &Dataset,
    shipped: TensorFile,
    training: TrainConfig,
    samples: usize,
    options: &Options,
) -> Result<Figures, Box<dyn std::error::Error>> {
    let bounded;
    let arch = if options.acc.is_some() || options.output_acc.is_some() {
        bounded = with_declared_acc(arch, options.acc, options.output_acc)?;
        &bounded
    } else {
        arch
    };
    println!("{}", arch.report());
    let weights = if options.train {
        let config = TrainConfig {
            epochs: options.epochs.unwrap_or(training.epochs),
            seed: options.seed,
            batch_norm: options.batch_norm || training.batch_norm,
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
        let bar = progress(
            config.epochs as u64,
            "  training {bar:30} epoch {pos}/{len} {msg} ({eta} left)",
        );
        let file = train(arch, data.train.images.view(), &labels, config, |s| {
            bar.set_message(format!(
                "loss {:.4}, train accuracy {:.4}",
                s.loss, s.train_accuracy
            ));
            bar.inc(1);
        })?;
        bar.finish_and_clear();
        println!("trained in {:.1} s", start.elapsed().as_secs_f64());
        if let Some(path) = &options.save {
            std::fs::write(path, file.to_safetensors()?)?;
            println!("saved {}", path.display());
        }
        file
    } else {
        shipped
    };
    let model = QuantModel::from_tensors(arch, &weights)?;
    if model.lookups() < arch.lookups() {
        // A join whose fork's side the shared quantizer maps to itself costs no lookup, nor
        // does a neuron without weights or that no later layer reads.
        println!(
            "weights: {} lookups per inference (the analysis's bound: {})",
            model.lookups(),
            arch.lookups()
        );
    }
    // Pixels are never negative: the first layer needs only the non-negative part of the
    // input quantizer's range, so its accumulators are read at a finer resolution.
    let model = model.restrict_inputs(0, model.input_range().max)?;
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
    let (client, eval) = with_spinner("generating keys", || compiled.keygen())?;
    let keygen = start.elapsed().as_secs_f64();
    let eval_bytes = eval.serialized_size()?;
    let start = Instant::now();
    let server = compiled.server(eval)?;
    let server_setup = start.elapsed().as_secs_f64();
    println!(
        "keys: generated in {keygen:.2} s by the client, evaluation key {:.1} MB (compressed, serialized); server set-up {server_setup:.2} s (decompression, tables)",
        eval_bytes as f64 / 1e6
    );

    let samples = options.samples.unwrap_or(samples).min(n);
    let mut times = Vec::new();
    let (mut fhe_correct, mut agree) = (0, 0);
    let lookup_layers = plan.lookups.len();
    let (mut differing, mut lookups_seen) =
        (vec![0usize; lookup_layers], vec![0usize; lookup_layers]);
    let bar = progress(
        samples as u64,
        "  fhe {bar:30} {pos}/{len} samples {msg} ({eta} left)",
    );
    for (i, row) in test.images.axis_iter(Axis(0)).take(samples).enumerate() {
        let q = quantized.row(i).to_vec();
        let input = client.encrypt_quantized(&q)?;
        let start = Instant::now();
        let trace = server.run_traced(&input)?;
        times.push(start.elapsed().as_secs_f64());
        let output = trace.last().expect("the output layer");
        let out = client.decrypt(output)?;
        let pred = argmax(&out);
        fhe_correct += usize::from(pred == labels[i]);
        agree += usize::from(pred == clear_pred[i]);
        for (k, (d, c)) in compiled
            .lookup_differences(&client, &q, &trace)?
            .into_iter()
            .enumerate()
        {
            differing[k] += d;
            lookups_seen[k] += c;
        }
        let _ = row;
        bar.set_message(format!(
            "last {:.2} s, agreement with clear {agree}/{}",
            times[i],
            i + 1
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
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

    let p = plan.set.params();
    let figures = Figures {
        example: name.to_string(),
        clear: ClearFigures {
            accuracy: clear_acc,
            exact_accuracy: exact_acc,
            samples: n,
            samples_per_second: n as f64 / clear_secs,
        },
        simulate: SimulateFigures {
            accuracy: sim_acc,
            samples: n,
            samples_per_second: n as f64 / sim_secs,
        },
        fhe: FheFigures {
            accuracy: fhe_acc,
            agreement_with_clear: agreement,
            seconds_per_inference: median,
            samples,
            lookup_disagreement: measured_lookups,
            lookups_differing: differing,
            predictions_differing: samples - agree,
        },
        simulate_same_samples: SameSamples {
            runs_per_sample: SIMULATIONS_PER_SAMPLE,
            expected_predictions_differing: expected_flips,
            predictions_differing_sd: flip_sd,
            expected_lookups_differing: per_layer.iter().map(|p| p.0).collect(),
            lookups_differing_sd: per_layer.iter().map(|p| p.1).collect(),
        },
        predicted: Predicted {
            prediction_disagreement: plan.predictions,
            prediction_disagreement_vs_exact: plan.predictions_vs_exact,
            lookups: plan.lookups.clone(),
            calibration_samples: plan.calibration_samples,
            cheaper_rejected: plan.cheaper.clone(),
        },
        compile_seconds: compile_secs,
        keygen_seconds: keygen,
        server_setup_seconds: server_setup,
        evaluation_key_bytes: eval_bytes,
        lookups_per_inference: server.lookups(),
        p_error: options.p_error,
        max_disagreement: options.max_disagreement,
        global_p_error: plan.global_p_error,
        parameters: Parameters {
            name: plan.set.name().to_string(),
            input_key: match plan.set.inputs() {
                fhe_nn::params::InputKey::Small => "small".into(),
                fhe_nn::params::InputKey::Big => "big".into(),
            },
            vetted: plan.set.is_vetted(),
            precision: plan.set.precision(),
            lwe_dimension: p.lwe_dimension.0,
            glwe_dimension: p.glwe_dimension.0,
            polynomial_size: p.polynomial_size.0,
            pbs_base_log: p.pbs_base_log.0,
            pbs_level: p.pbs_level.0,
            last_layer_pbs: plan.set.last_layer_pbs(),
            ks_base_log: p.ks_base_log.0,
            ks_level: p.ks_level.0,
            log2_worst_lookup_p_error: plan.worst_p_error().max(f64::MIN_POSITIVE).log2(),
            modeled_seconds: plan.modeled_seconds,
        },
    };
    if let Some(path) = &options.json {
        write_json(path, &figures)?;
    }
    Ok(figures)
}

/// Writes `value` as pretty JSON to `path`, creating its directory.
pub fn write_json(
    path: &std::path::Path,
    value: &impl Serialize,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    println!("figures written to {}", path.display());
    Ok(())
}
