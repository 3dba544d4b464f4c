//! Client and server as separate roles that exchange only bytes: the client generates keys
//! and sends the compressed evaluation key and encrypted inputs; the server, which holds the
//! model but never the client key, computes and sends back encrypted outputs.
//!
//!     cargo run --release --example client_server -- [--samples N] [--dir DIR] [--p-error P] [--json FILE]
//!
//! The exchanged files are written under DIR (default: a temporary folder), so the two roles
//! could as well be two processes on two machines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fhe_nn::fhe::{
    generate_keys, ClientKey, CompressedSample, EncryptedSample, EvaluationKey, FheOptions,
    FhePlan, FheServer,
};
use fhe_nn::{fhe_net, QuantModel};
use fhe_nn_suite::data;

fhe_net! {
    /// Concrete ML's seed network.
    pub struct Seed<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 10, w = 3)>
}

type Error = Box<dyn std::error::Error>;

/// Both roles agree on the model and on the parameters it is planned with.
fn planned_model(p_error: f64) -> Result<(QuantModel, FhePlan), Error> {
    let mut model = QuantModel::load(
        Seed::architecture(),
        data::models_dir().join("digits_seed.safetensors"),
    )?;
    let plan = model.plan(&FheOptions {
        p_error,
        ..FheOptions::default()
    })?;
    Ok((model, plan))
}

/// Client, step 1: keys. The client key stays here; the evaluation key goes to the server.
fn client_setup(dir: &Path, p_error: f64) -> Result<ClientKey, Error> {
    let (model, plan) = planned_model(p_error)?;
    let (client, evaluation) = generate_keys(&model, &plan);
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
fn server(
    dir: &Path,
    requests: &[PathBuf],
    p_error: f64,
) -> Result<(Vec<PathBuf>, Vec<f64>), Error> {
    let (model, plan) = planned_model(p_error)?;
    let key = EvaluationKey::from_bytes(&std::fs::read(dir.join("evaluation.key"))?)?;
    let server = FheServer::new(&model, &plan, key)?;
    let mut responses = Vec::new();
    let mut seconds = Vec::new();
    for request in requests {
        let input = server.decompress(&CompressedSample::from_bytes(&std::fs::read(request)?)?)?;
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
    let mut samples = 3usize;
    let mut p_error = fhe_nn::fhe::DEFAULT_P_ERROR;
    let mut json: Option<PathBuf> = None;
    let mut dir = std::env::temp_dir().join(format!("fhe-nn-client-server-{}", std::process::id()));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--samples", Some(n)) => samples = n.parse().map_err(|_| format!("--samples: cannot parse `{n}`"))?,
            ("--dir", Some(d)) => dir = d.into(),
            ("--p-error", Some(p)) => p_error = p.parse().map_err(|_| format!("--p-error: cannot parse `{p}`"))?,
            ("--json", Some(f)) => json = Some(f.into()),
            _ => return Err(format!("usage: client_server [--samples N] [--dir DIR] [--p-error P] [--json FILE] (got `{a}`)").into()),
        }
    }
    std::fs::create_dir_all(&dir)?;
    let test = data::digits()?.test;

    let start = Instant::now();
    let client = client_setup(&dir, p_error)?;
    let keygen = start.elapsed().as_secs_f64();
    let key_bytes = std::fs::metadata(dir.join("evaluation.key"))?.len();
    println!(
        "client: evaluation key written ({:.1} MB)",
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

    if requests.is_empty() {
        return Err("--samples must be at least 1".into());
    }
    let (responses, mut seconds) = server(&dir, &requests, p_error)?;

    let (model, plan) = planned_model(p_error)?;
    let mut agree = 0;
    for (i, path) in responses.iter().enumerate() {
        let output = EncryptedSample::from_bytes(&std::fs::read(path)?)?;
        let scores = client.decrypt(&output)?;
        let predicted = scores
            .iter()
            .enumerate()
            .fold(0, |b, (j, &v)| if v > scores[b] { j } else { b });
        let clear =
            model.dequantize_outputs(&model.clear_int(&client.quantize(test.images.row(i))?)?)?;
        let clear_predicted = clear
            .iter()
            .enumerate()
            .fold(0, |b, (j, &v)| if v > clear[b] { j } else { b });
        agree += usize::from(predicted == clear_predicted);
        println!(
            "client: sample {i}: predicted {predicted} (clear {clear_predicted}), label {}",
            test.labels[i]
        );
    }
    seconds.sort_by(|a, b| a.total_cmp(b));
    if let Some(path) = json {
        let figures = serde_json::json!({
            "example": "client_server",
            "fhe": { "samples": responses.len(), "seconds_per_inference": seconds[seconds.len() / 2],
                     "agreement_with_clear": agree as f64 / responses.len() as f64 },
            "keygen_seconds": keygen,
            "evaluation_key_bytes": key_bytes,
            "lookups_per_inference": plan.lookups_per_inference(),
            "p_error": p_error,
            "parameters": { "name": plan.set.name, "precision": plan.set.precision },
        });
        std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
        println!("figures written to {}", path.display());
    }
    println!("exchanged files are in {}", dir.display());
    Ok(())
}
