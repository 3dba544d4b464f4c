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

use fhe_nn::fhe::{ClientKey, ClientSpec, EncryptedSample};
use fhe_nn::{fhe_net, CompiledModel, FheOptions, Mode, QuantModel};
use fhe_nn_suite::data;

fhe_net! {
    /// Concrete ML's seed network.
    pub struct Seed<QuantIdentity(3), QuantLinear(64, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 30, w = 3), ReLU,
                    QuantIdentity(3), QuantLinear(30, 10, w = 3)>
}

type Error = Box<dyn std::error::Error>;

/// Server, step 0: load the weights, compile, publish the client spec.
fn server_compile(dir: &Path, p_error: f64) -> Result<CompiledModel, Error> {
    let model = QuantModel::load(
        Seed::architecture(),
        data::models_dir().join("digits_seed.safetensors"),
    )?
    // Pixels are never negative.
    .restrict_inputs(0, 3)?;
    let calibration = data::digits()?.train.images;
    let compiled = model.compile(
        calibration.view(),
        &FheOptions {
            p_error,
            ..FheOptions::default()
        },
    )?;
    std::fs::write(dir.join("client.spec"), compiled.client_spec().to_bytes()?)?;
    Ok(compiled)
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

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |b, (j, &x)| if x > v[b] { j } else { b })
}

fn main() -> Result<(), Error> {
    let mut samples = 3usize;
    let mut p_error = fhe_nn::DEFAULT_P_ERROR;
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
    if samples == 0 {
        return Err("--samples must be at least 1".into());
    }
    std::fs::create_dir_all(&dir)?;
    let test = data::digits()?.test;

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
        let predicted = argmax(&client.decrypt(&output)?);
        agree += usize::from(predicted == clear[i]);
        println!(
            "client: sample {i}: predicted {predicted} (clear {}), label {}",
            clear[i], test.labels[i]
        );
    }
    seconds.sort_by(|a, b| a.total_cmp(b));
    let plan = compiled.plan();
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
