//! Counters and histograms of the service, rendered in Prometheus's text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the request latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The service's figures since start.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Figures>,
}

#[derive(Default)]
struct Figures {
    /// Requests by (route, status).
    requests: BTreeMap<(String, u16), u64>,
    /// Latency histograms by route: bucket counts, sum, count.
    latency: BTreeMap<String, Histogram>,
    inferences: u64,
    lookups: u64,
    inference_seconds: f64,
    keys_decompressed: u64,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Gauges read when the metrics are rendered.
pub struct Gauges {
    pub keys_cached: usize,
    pub key_cache_bytes: u64,
    /// Admitted requests waiting for a worker.
    pub queue_depth: usize,
    /// Requests being worked on.
    pub running: usize,
}

impl Metrics {
    fn figures(&self) -> std::sync::MutexGuard<'_, Figures> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a finished request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let mut f = self.figures();
        *f.requests.entry((route.to_string(), status)).or_default() += 1;
        let h = f.latency.entry(route.to_string()).or_default();
        for (bucket, bound) in h.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Records one encrypted inference.
    pub fn inference(&self, lookups: usize, seconds: f64) {
        let mut f = self.figures();
        f.inferences += 1;
        f.lookups += lookups as u64;
        f.inference_seconds += seconds;
    }

    /// Records an evaluation key decompressed into the cache.
    pub fn key_decompressed(&self) {
        self.figures().keys_decompressed += 1;
    }

    /// Mean seconds of one inference so far (None before the first).
    pub fn mean_inference_seconds(&self) -> Option<f64> {
        let f = self.figures();
        (f.inferences > 0).then(|| f.inference_seconds / f.inferences as f64)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let f = self.figures();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP fhe_nn_requests_total HTTP requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE fhe_nn_requests_total counter");
        for ((route, status), n) in &f.requests {
            let _ = writeln!(
                out,
                "fhe_nn_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP fhe_nn_request_duration_seconds Request latency, by route."
        );
        let _ = writeln!(out, "# TYPE fhe_nn_request_duration_seconds histogram");
        for (route, h) in &f.latency {
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(out, "fhe_nn_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "fhe_nn_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "fhe_nn_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "fhe_nn_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let lookups_per_second = if f.inference_seconds > 0.0 {
            f.lookups as f64 / f.inference_seconds
        } else {
            0.0
        };
        let figures: [(&str, &str, &str, String); 9] = [
            (
                "fhe_nn_inferences_total",
                "counter",
                "Encrypted inferences run.",
                f.inferences.to_string(),
            ),
            (
                "fhe_nn_lookups_total",
                "counter",
                "Programmable bootstraps run.",
                f.lookups.to_string(),
            ),
            (
                "fhe_nn_inference_seconds_total",
                "counter",
                "Seconds spent in encrypted inference.",
                f.inference_seconds.to_string(),
            ),
            (
                "fhe_nn_lookups_per_second",
                "gauge",
                "Lookups per second of inference time, since start.",
                lookups_per_second.to_string(),
            ),
            (
                "fhe_nn_keys_decompressed_total",
                "counter",
                "Evaluation keys decompressed into the cache.",
                f.keys_decompressed.to_string(),
            ),
            (
                "fhe_nn_keys_cached",
                "gauge",
                "Decompressed evaluation keys in memory.",
                gauges.keys_cached.to_string(),
            ),
            (
                "fhe_nn_key_cache_bytes",
                "gauge",
                "Bytes of decompressed evaluation keys in memory.",
                gauges.key_cache_bytes.to_string(),
            ),
            (
                "fhe_nn_queue_depth",
                "gauge",
                "Admitted requests waiting for a worker.",
                gauges.queue_depth.to_string(),
            ),
            (
                "fhe_nn_running",
                "gauge",
                "Requests being worked on.",
                gauges.running.to_string(),
            ),
        ];
        for (name, kind, help, value) in figures {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
