//! Counters and histograms of the service, in a `prometheus-client` registry, rendered in
//! the OpenMetrics text format.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the request latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The service's figures since start.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    inferences: Counter,
    lookups: Counter,
    inference_seconds: Counter<f64, AtomicU64>,
    keys_decompressed: Counter,
    lookups_per_second: Gauge<f64, AtomicU64>,
    keys_cached: Gauge,
    key_cache_bytes: Gauge,
    queue_depth: Gauge,
    running: Gauge,
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

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("fhe_nn"),
            requests: Family::default(),
            latency: LatencyFamily::new_with_constructor(latency_histogram),
            inferences: Counter::default(),
            lookups: Counter::default(),
            inference_seconds: Counter::default(),
            keys_decompressed: Counter::default(),
            lookups_per_second: Gauge::default(),
            keys_cached: Gauge::default(),
            key_cache_bytes: Gauge::default(),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "requests",
            "HTTP requests answered, by route and status",
            metrics.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request latency, by route",
            metrics.latency.clone(),
        );
        r.register(
            "inferences",
            "Encrypted inferences run",
            metrics.inferences.clone(),
        );
        r.register(
            "lookups",
            "Programmable bootstraps run",
            metrics.lookups.clone(),
        );
        r.register(
            "inference_seconds",
            "Seconds spent in encrypted inference",
            metrics.inference_seconds.clone(),
        );
        r.register(
            "keys_decompressed",
            "Evaluation keys decompressed into the cache",
            metrics.keys_decompressed.clone(),
        );
        r.register(
            "lookups_per_second",
            "Lookups per second of inference time, since start",
            metrics.lookups_per_second.clone(),
        );
        r.register(
            "keys_cached",
            "Decompressed evaluation keys in memory",
            metrics.keys_cached.clone(),
        );
        r.register(
            "key_cache_bytes",
            "Bytes of decompressed evaluation keys in memory",
            metrics.key_cache_bytes.clone(),
        );
        r.register(
            "queue_depth",
            "Admitted requests waiting for a worker",
            metrics.queue_depth.clone(),
        );
        r.register(
            "running",
            "Requests being worked on",
            metrics.running.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Records a finished request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Records one encrypted inference.
    pub fn inference(&self, lookups: usize, seconds: f64) {
        self.inferences.inc();
        self.lookups.inc_by(lookups as u64);
        self.inference_seconds.inc_by(seconds);
    }

    /// Records an evaluation key decompressed into the cache.
    pub fn key_decompressed(&self) {
        self.keys_decompressed.inc();
    }

    /// Mean seconds of one inference so far (None before the first).
    pub fn mean_inference_seconds(&self) -> Option<f64> {
        let n = self.inferences.get();
        (n > 0).then(|| self.inference_seconds.get() / n as f64)
    }

    /// The OpenMetrics text exposition (see [`CONTENT_TYPE`]), with `gauges` as they are now.
    pub fn render(&self, gauges: &Gauges) -> String {
        let seconds = self.inference_seconds.get();
        let rate = if seconds > 0.0 {
            self.lookups.get() as f64 / seconds
        } else {
            0.0
        };
        self.lookups_per_second.set(rate);
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.keys_cached.set(clamp(gauges.keys_cached as u64));
        self.key_cache_bytes.set(clamp(gauges.key_cache_bytes));
        self.queue_depth.set(clamp(gauges.queue_depth as u64));
        self.running.set(clamp(gauges.running as u64));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::default();
        metrics.request("/keys", 200, 0.3);
        metrics.request("/keys", 200, 7.0);
        metrics.request("/keys", 413, 0.001);
        metrics.inference(100, 2.0);
        metrics.key_decompressed();
        let text = metrics.render(&Gauges {
            keys_cached: 1,
            key_cache_bytes: 1234,
            queue_depth: 2,
            running: 1,
        });
        for line in [
            "fhe_nn_requests_total{route=\"/keys\",status=\"200\"} 2",
            "fhe_nn_requests_total{route=\"/keys\",status=\"413\"} 1",
            "fhe_nn_request_duration_seconds_count{route=\"/keys\"} 3",
            "fhe_nn_request_duration_seconds_bucket{le=\"0.5\",route=\"/keys\"} 2",
            "fhe_nn_inferences_total 1",
            "fhe_nn_lookups_total 100",
            "fhe_nn_keys_decompressed_total 1",
            "fhe_nn_lookups_per_second 50.0",
            "fhe_nn_key_cache_bytes 1234",
            "fhe_nn_queue_depth 2",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(metrics.mean_inference_seconds(), Some(2.0));
    }
}
