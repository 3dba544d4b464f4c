//! Throughput and latency of one server under 1, 2 and 8 concurrent clients, against the
//! in-process Fhe time of the same model on the same machine.
//!
//!     cargo run --release -p fhe-nn-server --example service_bench -- [--model digits] [--requests 8] [--json FILE]

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use clap::Parser;
use serde::Serialize;

use fhe_nn::fhe::CompressedSample;
use fhe_nn::FheOptions;
use fhe_nn_client::Client;
use fhe_nn_server::{shipped, MemoryStore, ServerConfig, Service};

/// Service benchmark.
#[derive(Parser, Debug)]
#[command()]
struct Args {
    /// Shipped model (digits or mnist).
    #[arg(long, default_value = "digits")]
    model: String,
    /// Requests per client at each concurrency.
    #[arg(long, default_value_t = 8)]
    requests: usize,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,8")]
    clients: Vec<usize>,
    /// Write the figures to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Figures {
    model: String,
    parameters: String,
    lookups: usize,
    cores: usize,
    workers: usize,
    in_process_seconds: f64,
    runs: Vec<Run>,
}

#[derive(Serialize)]
struct Run {
    clients: usize,
    requests: usize,
    inferences_per_second: f64,
    p50_seconds: f64,
    p99_seconds: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    if args.requests == 0 || args.clients.contains(&0) {
        return Err("--requests and every --clients value must be at least 1".into());
    }
    let compiled = shipped::compile(&args.model, &FheOptions::default())?;
    let images = match args.model.as_str() {
        "mnist" => fhe_nn::datasets::mnist_5k()?.test.images,
        _ => fhe_nn::datasets::digits()?.test.images,
    };
    let config = ServerConfig {
        queue: 64,
        ..ServerConfig::default()
    };
    let (cores, workers) = (config.workers, config.workers);
    let (client_key, evaluation_key) = compiled.keygen()?;

    // In-process: the same key, the same samples, no HTTP.
    let local = compiled.server(evaluation_key.clone())?;
    let samples: Vec<CompressedSample> = (0..args.requests.max(8))
        .map(|i| client_key.encrypt_compressed(images.row(i % images.nrows())))
        .collect::<Result<_, _>>()?;
    let mut local_times = Vec::new();
    for sample in samples.iter().take(5) {
        let input = local.decompress(sample)?;
        let start = Instant::now();
        local.run(&input)?;
        local_times.push(start.elapsed().as_secs_f64());
    }
    local_times.sort_by(f64::total_cmp);
    let in_process = local_times[local_times.len() / 2];
    drop(local);

    let mut service = Service::new(Arc::new(MemoryStore::default()), config);
    service.register(&args.model, compiled.clone())?;
    let server = service.spawn("127.0.0.1:0")?;
    let client = Client::new(&server.url())?;
    let key_id = client.upload_key(&evaluation_key)?.key_id;
    let samples = Arc::new(samples);

    println!(
        "{}: {} lookups, parameters {}, {cores} cores, {workers} workers; in-process Fhe {:.3} s per inference",
        args.model,
        compiled.lookups(),
        compiled.parameters().name(),
        in_process
    );
    println!("| clients | requests | inferences/s | p50 s | p99 s | p50 / in-process |");
    println!("|---|---|---|---|---|---|");
    let mut runs = Vec::new();
    for &clients in &args.clients {
        let start = Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let (client, key_id, samples, model) = (
                    client.clone(),
                    key_id.clone(),
                    samples.clone(),
                    args.model.clone(),
                );
                let requests = args.requests;
                thread::spawn(move || -> Result<Vec<f64>, String> {
                    let mut latencies = Vec::new();
                    for r in 0..requests {
                        let sample = &samples[(c * requests + r) % samples.len()];
                        let t = Instant::now();
                        client
                            .predict(&model, &key_id, sample)
                            .map_err(|e| e.to_string())?;
                        latencies.push(t.elapsed().as_secs_f64());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for t in threads {
            latencies.extend(t.join().map_err(|_| "client thread panicked")??);
        }
        let wall = start.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let run = Run {
            clients,
            requests: latencies.len(),
            inferences_per_second: latencies.len() as f64 / wall,
            p50_seconds: percentile(&latencies, 0.5),
            p99_seconds: percentile(&latencies, 0.99),
        };
        println!(
            "| {} | {} | {:.2} | {:.3} | {:.3} | {:.2} |",
            run.clients,
            run.requests,
            run.inferences_per_second,
            run.p50_seconds,
            run.p99_seconds,
            run.p50_seconds / in_process
        );
        runs.push(run);
    }
    server.shutdown()?;
    let figures = Figures {
        model: args.model.clone(),
        parameters: compiled.parameters().name().to_string(),
        lookups: compiled.lookups(),
        cores,
        workers,
        in_process_seconds: in_process,
        runs,
    };
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
