//! Client and server as separate roles that exchange only bytes. The server holds the
//! weights and compiles the model; it publishes the client spec (parameters, input
//! quantizer, output scales, fingerprint: no weight). The client reads only that spec,
//! generates keys, and sends the compressed evaluation key and encrypted inputs; the server,
//! which never sees the client key, computes and sends back encrypted outputs.
//!
//!     cargo run --release --example client_server -- [--samples N] [--dir DIR] [--p-error P] [--json FILE]
//!
//! The exchanged files are written under DIR (default: a temporary folder), so the roles
//! could as well be processes on two machines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use fhe_nn::datasets::{digits, digits_seed_weights, Seed};
use fhe_nn::fhe::{ClientKey, ClientSpec, EncryptedSample};
use fhe_nn::{argmax, CompiledModel, FheOptions, Mode};
use serde::Serialize;

/// Client and server roles exchanging only files, on the seed network and the digits.
#[derive(Parser, Debug)]
#[command()]
struct Cli {
    /// Encrypted samples to send.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// Directory for the exchanged files [default: a temporary folder].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Failure probability of one lookup.
    #[arg(long, default_value_t = fhe_nn::DEFAULT_P_ERROR)]
    p_error: f64,
    /// Write the figures to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The JSON `--json` writes.
#[derive(Serialize)]
struct Figures {
    example: &'static str,
    fhe: FheFigures,
    keygen_seconds: f64,
    evaluation_key_bytes: u64,
    lookups_per_inference: usize,
    p_error: f64,
    parameters: Parameters,
}

#[derive(Serialize)]
struct FheFigures {
    samples: usize,
    seconds_per_inference: f64,
    agreement_with_clear: f64,
}

#[derive(Serialize)]
struct Parameters {
    name: String,
    precision: u32,
}

type Error = Box<dyn std::error::Error>;

/// Server, step 0: load the weights, compile, publish the client spec.
fn server_compile(dir: &Path, p_error: f64) -> Result<CompiledModel, Error> {
    // Pixels are never negative.
    let model = Seed::from_tensors(&digits_seed_weights()?)?.restrict_inputs(0, 3)?;
    let calibration = digits()?.train.images;
    let compiled = model.compile(
        calibration.view(),
        &FheOptions {
            p_error,
            ..FheOptions::default()
        },
    )?;
    std::fs::write(dir.join("client.spec"), compiled.client_spec().to_bytes()?)?;
    Ok(compiled.into_untyped())
}

/// Client, step 1: keys from the published spec alone. The client key stays here; the
/// evaluation key goes to the server.
fn client_setup(dir: &Path) -> Result<ClientKey, Error> {
    let spec = ClientSpec::from_bytes(&std::fs::read(dir.join("client.spec"))?)?;
    let (client, evaluation) = spec.keygen()?;
    std::fs::write(dir.join("evaluation.key"), evaluation.to_bytes()?)?;
    Ok(client)
}

/// Client, step 2: encrypt one sample for the server (compressed: the masks travel as a seed).
fn client_encrypt(
    client: &ClientKey,
    sample: ndarray::ArrayView1<f64>,
    path: &Path,
) -> Result<(), Error> {
    std::fs::write(path, client.encrypt_compressed(sample)?.to_bytes()?)?;
    Ok(())
}

/// Server: reads the evaluation key and the encrypted inputs, writes encrypted outputs.
/// Nothing here can decrypt.
fn server_run(
    compiled: &CompiledModel,
    dir: &Path,
    requests: &[PathBuf],
) -> Result<(Vec<PathBuf>, Vec<f64>), Error> {
    // Uploads are bounded by what this model can need before they are decoded.
    let key = compiled.read_evaluation_key(&std::fs::read(dir.join("evaluation.key"))?)?;
    let server = compiled.server(key)?;
    let mut responses = Vec::new();
    let mut seconds = Vec::new();
    for request in requests {
        let input = server.read_compressed(&std::fs::read(request)?)?;
        let start = Instant::now();
        let output = server.run(&input)?;
        let path = request.with_extension("out");
        std::fs::write(&path, output.to_bytes()?)?;
        seconds.push(start.elapsed().as_secs_f64());
        eprintln!(
            "server: {} in {:.2} s",
            request.display(),
            seconds[seconds.len() - 1]
        );
        responses.push(path);
    }
    Ok((responses, seconds))
}

fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    let samples = cli.samples as usize;
    let p_error = cli.p_error;
    let dir = cli.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("fhe-nn-client-server-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let test = digits()?.test;

    let compiled = server_compile(&dir, p_error)?;
    println!(
        "server: compiled, client spec published ({} bytes, fingerprint {})",
        std::fs::metadata(dir.join("client.spec"))?.len(),
        compiled.fingerprint()
    );

    let start = Instant::now();
    let client = client_setup(&dir)?;
    let keygen = start.elapsed().as_secs_f64();
    let key_bytes = std::fs::metadata(dir.join("evaluation.key"))?.len();
    println!(
        "client: keys generated from the spec in {keygen:.2} s, evaluation key written ({:.1} MB)",
        key_bytes as f64 / 1e6
    );
    let mut requests = Vec::new();
    for i in 0..samples.min(test.images.nrows()) {
        let path = dir.join(format!("sample-{i}.ct"));
        client_encrypt(&client, test.images.row(i), &path)?;
        requests.push(path);
    }
    println!(
        "client: {} encrypted samples written ({:.1} kB each, compressed)",
        requests.len(),
        std::fs::metadata(&requests[0])?.len() as f64 / 1e3
    );

    let (responses, mut seconds) = server_run(&compiled, &dir, &requests)?;

    // A check outside both roles: Clear on the plaintext images, for comparison.
    let clear = compiled.classify(test.images.view(), Mode::Clear)?;
    let mut agree = 0;
    for (i, path) in responses.iter().enumerate() {
        let output = EncryptedSample::from_bytes(&std::fs::read(path)?)?;
        let scores = client.decrypt(&output)?;
        let predicted = argmax(&scores);
        agree += usize::from(predicted == clear[i]);
        println!(
            "client: sample {i}: predicted {predicted} (clear {}), label {}",
            clear[i], test.labels[i]
        );
    }
    seconds.sort_by(|a, b| a.total_cmp(b));
    let plan = compiled.plan();
    if let Some(path) = cli.json {
        let figures = Figures {
            example: "client_server",
            fhe: FheFigures {
                samples: responses.len(),
                seconds_per_inference: seconds[seconds.len() / 2],
                agreement_with_clear: agree as f64 / responses.len() as f64,
            },
            keygen_seconds: keygen,
            evaluation_key_bytes: key_bytes,
            lookups_per_inference: plan.lookups_per_inference(),
            p_error,
            parameters: Parameters {
                name: plan.set.name().to_string(),
                precision: plan.set.precision(),
            },
        };
        std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
        println!("figures written to {}", path.display());
    }
    println!("exchanged files are in {}", dir.display());
    Ok(())
}
