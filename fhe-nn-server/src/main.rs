//! `fhe-nn-server`: serves the shipped digits and MNIST models, or compiled models' files,
//! over HTTP.
//!
//!     cargo run --release -p fhe-nn-server -- --addr 127.0.0.1:8080 --tokens tokens.txt
//!     cargo run --release -p fhe-nn-server -- --allow-anonymous   # a local demo
//!     cargo run --release -p fhe-nn-server -- --models digits --write-compiled compiled
//!     cargo run --release -p fhe-nn-server -- --models digits=compiled/digits.fhenn

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use fhe_nn::FheOptions;
use fhe_nn_server::{
    shipped, Access, DiskStore, KeyStore, RedisStore, ServerConfig, Service, Tls, Tokens,
};

/// The environment variable that may hold the token list instead of a file.
const TOKENS_VAR: &str = "FHE_NN_TOKENS";

/// Encrypted inference over HTTP: keys in a directory or in Redis, bounded work queue,
/// Prometheus metrics.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Models to serve, comma-separated: shipped names (digits, mnist), compiled at start, or
    /// NAME=FILE, a compiled model's file (made by --write-compiled).
    #[arg(long, value_delimiter = ',', default_value = "digits,mnist")]
    models: Vec<String>,
    /// Write each model's compiled file to DIR/NAME.fhenn and exit instead of serving.
    #[arg(long, value_name = "DIR")]
    write_compiled: Option<PathBuf>,
    /// Directory that keeps uploaded evaluation keys across restarts.
    #[arg(long, default_value = "fhe-nn-keys")]
    store: PathBuf,
    /// Keep keys in Redis instead (shared by replicas), e.g. redis://127.0.0.1:6379/0.
    #[arg(long)]
    redis: Option<String>,
    /// Encrypted requests worked on at once [default: the number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Requests that may wait for a worker before `503 busy` [default: 4 per worker].
    #[arg(long)]
    queue: Option<usize>,
    /// Seconds a request may wait and run.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Seconds a client may take to send a request's headers (and a kept-alive connection
    /// may stay idle).
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a client may take to send a request's body.
    #[arg(long, default_value_t = 60)]
    body_timeout: u64,
    /// Key uploads read at once [default: the number of workers].
    #[arg(long)]
    key_uploads: Option<usize>,
    /// Hours an uploaded key is kept.
    #[arg(long, default_value_t = 24)]
    key_ttl_hours: u64,
    /// Megabytes of decompressed keys kept in memory.
    #[arg(long, default_value_t = 4096)]
    cache_mb: u64,
    /// Per-lookup error probability the models are compiled for.
    #[arg(long, default_value_t = fhe_nn::DEFAULT_P_ERROR)]
    p_error: f64,
    /// The tenants' bearer tokens: one `TENANT TOKEN [MODEL,MODEL…]` per line (or the
    /// environment variable FHE_NN_TOKENS, entries separated by `;`).
    #[arg(long, value_name = "FILE", conflicts_with = "allow_anonymous")]
    tokens: Option<PathBuf>,
    /// Serve everyone with no token, as one tenant (a local demo only).
    #[arg(long)]
    allow_anonymous: bool,
    /// Evaluation keys one tenant may hold.
    #[arg(long, default_value_t = 16)]
    tenant_keys: u64,
    /// Megabytes of evaluation keys one tenant may hold.
    #[arg(long, default_value_t = 4096)]
    tenant_mb: u64,
    /// Megabytes of evaluation keys the store may hold.
    #[arg(long, default_value_t = 65536)]
    store_mb: u64,
    /// Serve HTTPS: the certificate chain, PEM (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Who may call: the token file, else the environment's list, else anonymous only when
/// asked for explicitly.
fn access(args: &Args) -> Result<Access, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(path) = &args.tokens {
        return Ok(Access::Tokens(Arc::new(Tokens::read(path)?)));
    }
    if let Ok(list) = std::env::var(TOKENS_VAR) {
        return Ok(Access::Tokens(Arc::new(Tokens::parse(&list)?)));
    }
    if args.allow_anonymous {
        return Ok(Access::Anonymous);
    }
    Err(format!(
        "no access configured: pass --tokens FILE (one `TENANT TOKEN` per line), set \
         {TOKENS_VAR}, or --allow-anonymous for a local demo"
    )
    .into())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("fhe-nn-server: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let access = access(&args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::from_pem_files(cert, key)?),
        _ => None,
    };
    let mut config = ServerConfig {
        request_timeout: Duration::from_secs(args.timeout.max(1)),
        key_ttl: Duration::from_secs(args.key_ttl_hours.max(1) * 3600),
        cache_bytes: args.cache_mb << 20,
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout.max(1)),
        access,
        tenant_keys: args.tenant_keys,
        tenant_bytes: args.tenant_mb << 20,
        store_bytes: args.store_mb << 20,
        tls,
        ..ServerConfig::default()
    };
    if let Some(workers) = args.workers {
        config.workers = workers.max(1);
    }
    config.queue = args.queue.unwrap_or(4 * config.workers);
    config.key_uploads = args.key_uploads.unwrap_or(config.workers).max(1);
    let options = FheOptions {
        p_error: args.p_error,
        ..FheOptions::default()
    };
    let mut models = Vec::new();
    for entry in &args.models {
        let start = Instant::now();
        let (name, compiled) = shipped::load(entry, &options)?;
        eprintln!(
            "model `{name}` ready in {:.1} s: {} lookups, parameters {}, fingerprint {}",
            start.elapsed().as_secs_f64(),
            compiled.lookups(),
            compiled.parameters().name(),
            compiled.fingerprint()
        );
        models.push((name, compiled));
    }
    if let Some(dir) = &args.write_compiled {
        std::fs::create_dir_all(dir)?;
        for (name, compiled) in &models {
            let path = dir.join(format!("{name}.fhenn"));
            std::fs::write(&path, compiled.to_bytes()?)?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    let store: Arc<dyn KeyStore> = match &args.redis {
        Some(url) => Arc::new(RedisStore::open(url)?),
        None => Arc::new(DiskStore::open(&args.store)?),
    };
    eprintln!("keys in {}", store.describe());
    match &config.access {
        Access::Anonymous => eprintln!("anonymous access: every caller is one tenant"),
        Access::Tokens(tokens) => eprintln!("{} tenants' tokens", tokens.len()),
    }
    let mut service = Service::new(store, config.clone());
    for (name, compiled) in models {
        service.register(&name, compiled)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr).await?;
        eprintln!(
            "serving on {}://{} ({} workers, queue {})",
            if config.tls.is_some() {
                "https"
            } else {
                "http"
            },
            listener.local_addr()?,
            config.workers,
            config.queue
        );
        service.serve(listener, shutdown_signal()).await?;
        eprintln!("stopped after finishing in-flight requests");
        Ok(())
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    eprintln!("shutting down: finishing in-flight requests");
}
