//! `fhe-nn-client`: generates keys for a served model, uploads the evaluation key, and
//! predicts on encrypted samples. The client key stays in the key directory.
//!
//!     fhe-nn-client keygen --model digits --dir keys --upload
//!     fhe-nn-client predict --dir keys --digits 0

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args as ClapArgs, Parser, Subcommand};

use fhe_nn::fhe::ClientKey;
use fhe_nn_client::api::KeyReceipt;
use fhe_nn_client::Client;

/// Client of an fhe-nn inference server.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The server's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A file holding the bearer token the server knows this tenant by (or the environment
    /// variable FHE_NN_TOKEN); none for a server run with --allow-anonymous.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// For an HTTPS server whose certificate a private authority signed (or a self-signed
    /// one): that authority's certificate, PEM.
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists the served models.
    Models,
    /// Generates a key pair for a served model into a directory (the client key never
    /// leaves it).
    Keygen {
        /// The served model's name.
        #[arg(long)]
        model: String,
        /// Directory for the keys.
        #[arg(long, default_value = "fhe-nn-client-keys")]
        dir: PathBuf,
        /// Also upload the evaluation key (as `upload-key` does).
        #[arg(long)]
        upload: bool,
    },
    /// Uploads the directory's evaluation key and records its id there.
    UploadKey {
        /// Directory with the keys.
        #[arg(long, default_value = "fhe-nn-client-keys")]
        dir: PathBuf,
    },
    /// Encrypts one sample, has the server run the model on it, decrypts the answer.
    Predict {
        /// Directory with the keys (uploaded).
        #[arg(long, default_value = "fhe-nn-client-keys")]
        dir: PathBuf,
        #[command(flatten)]
        sample: SampleSource,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the sample comes from: exactly one of these.
#[derive(ClapArgs, Debug)]
#[group(required = true, multiple = false)]
struct SampleSource {
    /// A CSV file of samples, one per line, values separated by commas (see `--row`).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Row of the 8×8 digits test split (64 values).
    #[arg(long)]
    digits: Option<usize>,
    /// Row of the MNIST-5k test split (784 values).
    #[arg(long)]
    mnist: Option<usize>,
    /// The line of `--csv` to use (0-based).
    #[arg(long, default_value_t = 0, requires = "csv")]
    row: usize,
}

type Error = Box<dyn std::error::Error>;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("fhe-nn-client: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let mut client = match &cli.ca_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read the CA certificate {}: {e}", path.display()))?;
            Client::with_ca_pem(&cli.server, &pem)?
        }
        None => Client::new(&cli.server)?,
    };
    let token = match &cli.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("FHE_NN_TOKEN").ok(),
    };
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        client = client.with_token(&token);
    }
    match cli.command {
        Command::Models => {
            for m in client.models()? {
                println!(
                    "{}: {} → {} values, {} lookups, parameters {} (N={}), fingerprint {}",
                    m.name,
                    m.input_features,
                    m.output_features,
                    m.lookups,
                    m.parameters.name,
                    m.parameters.polynomial_size,
                    &m.fingerprint[..16]
                );
            }
        }
        Command::Keygen { model, dir, upload } => {
            keygen(&client, &model, &dir)?;
            if upload {
                upload_key(&client, &dir)?;
            }
        }
        Command::UploadKey { dir } => upload_key(&client, &dir)?,
        Command::Predict { dir, sample, json } => predict(&client, &dir, &sample, json)?,
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// Writes a secret: readable and writable by the owner only (on Unix), replacing any file
/// there (whose permissions might be wider).
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let fail =
        |e: std::io::Error| -> Error { format!("cannot write {}: {e}", path.display()).into() };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

fn keygen(client: &Client, model: &str, dir: &Path) -> Result<(), Error> {
    let detail = client.model(model)?;
    let spec = detail.client_spec()?;
    let start = Instant::now();
    eprint!("generating keys for `{model}`… ");
    let (client_key, evaluation_key) = spec.keygen()?;
    let evaluation = evaluation_key.to_bytes()?;
    eprintln!(
        "done in {:.1} s (evaluation key {:.1} MB)",
        start.elapsed().as_secs_f64(),
        evaluation.len() as f64 / 1e6
    );
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_secret(&dir.join("client.key"), &client_key.to_bytes()?)?;
    write(&dir.join("evaluation.key"), &evaluation)?;
    write(&dir.join("model"), model.as_bytes())?;
    println!("keys for `{model}` written to {}", dir.display());
    Ok(())
}

fn upload_key(client: &Client, dir: &Path) -> Result<(), Error> {
    let bytes = read(&dir.join("evaluation.key"))?;
    let start = Instant::now();
    let receipt = client.upload_key_bytes(bytes)?;
    write(
        &dir.join("receipt.json"),
        serde_json::to_string_pretty(&receipt)?.as_bytes(),
    )?;
    println!(
        "evaluation key uploaded in {:.1} s: id {} for model `{}`",
        start.elapsed().as_secs_f64(),
        receipt.key_id,
        receipt.model
    );
    Ok(())
}

/// The sample's values.
fn sample_values(source: &SampleSource) -> Result<Vec<f64>, Error> {
    if let Some(n) = source.digits {
        let test = fhe_nn::datasets::digits()?.test;
        return row_of(&test.images, n, "digits test split");
    }
    if let Some(n) = source.mnist {
        let test = fhe_nn::datasets::mnist_5k()?.test;
        return row_of(&test.images, n, "MNIST-5k test split");
    }
    let path = source
        .csv
        .as_ref()
        .ok_or("give --csv, --digits or --mnist")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .nth(source.row)
        .ok_or_else(|| format!("{} has no row {}", path.display(), source.row))?;
    line.split(',')
        .enumerate()
        .map(|(i, v)| {
            v.trim().parse::<f64>().map_err(|_| {
                format!(
                    "{} row {}, value {}: `{}` is not a number",
                    path.display(),
                    source.row,
                    i + 1,
                    v.trim()
                )
                .into()
            })
        })
        .collect()
}

fn row_of(images: &fhe_nn::ndarray::Array2<f64>, n: usize, what: &str) -> Result<Vec<f64>, Error> {
    if n >= images.nrows() {
        return Err(format!("the {what} has {} rows, not {}", images.nrows(), n + 1).into());
    }
    Ok(images.row(n).to_vec())
}

fn predict(client: &Client, dir: &Path, source: &SampleSource, json: bool) -> Result<(), Error> {
    let client_key = ClientKey::from_bytes(&read(&dir.join("client.key"))?)?;
    let model = String::from_utf8(read(&dir.join("model"))?)?;
    let receipt: KeyReceipt =
        serde_json::from_slice(&read(&dir.join("receipt.json"))?).map_err(|e| {
            format!(
                "{}: {e} (run upload-key first)",
                dir.join("receipt.json").display()
            )
        })?;
    let values = sample_values(source)?;
    let sample = client_key.encrypt_compressed(fhe_nn::ndarray::ArrayView1::from(&values))?;
    let start = Instant::now();
    let output = client.predict(&model, &receipt.key_id, &sample)?;
    let seconds = start.elapsed().as_secs_f64();
    let scores = client_key.decrypt(&output)?;
    let class = fhe_nn::argmax(&scores);
    if json {
        let answer = serde_json::json!({
            "model": model, "class": class, "scores": scores, "seconds": seconds,
        });
        println!("{answer}");
    } else {
        let shown: Vec<String> = scores.iter().map(|s| format!("{s:.3}")).collect();
        println!(
            "class {class} (scores {}) in {seconds:.2} s",
            shown.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_secret_is_written_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fhe-nn-client-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.key");
        // A world-readable file already there is replaced, not reused.
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&path, b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
