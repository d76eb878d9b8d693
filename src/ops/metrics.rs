//! Every metric, registered once in pushgate's own registry. Labels are bounded: route names
//! and fixed outcome words, never ids, DNs or anything a sender chooses.

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label used for requests that matched no route.
pub const NO_ROUTE: &str = "unmatched";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub events: IntCounterVec,
    pub ack_seconds: HistogramVec,
    pub forward: IntCounterVec,
    pub forward_seconds: HistogramVec,
    pub spool_pending: IntGaugeVec,
    pub spool_oldest_pending_seconds: GaugeVec,
    pub dead_letters: IntGaugeVec,
    pub dedupe_keys: IntGauge,
    pub sender_attempt: HistogramVec,
    pub cert_expiry: GaugeVec,
    pub crl_next_update: GaugeVec,
    pub tls_failures: IntCounterVec,
    pub reloads: IntCounterVec,
    pub storage_errors: IntCounterVec,
    pub dedupe_unavailable: IntCounterVec,
    pub dedupe_backend_up: IntGauge,
    pub dedupe_pending_writes: IntGauge,
    pub dedupe_pending_dropped: IntCounter,
    pub store_commits: prometheus::IntCounter,
    pub store_damaged_records: prometheus::IntCounter,
    pub connections_open: IntGauge,
    pub connections_refused: IntCounter,
    pub connections_timed_out: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // Registration only fails on a duplicate or malformed name: all are constant here
        // and covered by the `every_metric_registers` test.
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
            let _ = r.register(Box::new(m.clone()));
            m
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("constant metric"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            reg(
                &registry,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("constant metric"),
            )
        };
        let latency = exponential_buckets(0.0005, 2.0, 15).expect("constant buckets");
        Metrics {
            requests: counter(
                "pushgate_requests_total",
                "Requests by route and outcome.",
                &["route", "outcome"],
            ),
            events: counter(
                "pushgate_events_total",
                "Events by route and outcome.",
                &["route", "outcome"],
            ),
            ack_seconds: histogram(
                "pushgate_ack_seconds",
                "Time from request to answer.",
                &["route"],
                latency.clone(),
            ),
            forward: counter(
                "pushgate_forward_total",
                "Deliveries to the app by result.",
                &["route", "result"],
            ),
            forward_seconds: histogram(
                "pushgate_forward_seconds",
                "Duration of one delivery attempt.",
                &["route"],
                latency,
            ),
            spool_pending: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("pushgate_spool_pending", "Events waiting for delivery."),
                    &["route"],
                )
                .expect("constant metric"),
            ),
            spool_oldest_pending_seconds: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "pushgate_spool_oldest_pending_seconds",
                        "Age of the oldest undelivered event.",
                    ),
                    &["route"],
                )
                .expect("constant metric"),
            ),
            dead_letters: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("pushgate_dead_letters", "Events given up on, kept for replay."),
                    &["route"],
                )
                .expect("constant metric"),
            ),
            dedupe_keys: reg(
                &registry,
                IntGauge::new("pushgate_dedupe_keys", "Ids in the duplicate memory.").expect("constant metric"),
            ),
            sender_attempt: histogram(
                "pushgate_sender_attempt",
                "The sender's own attempt number (X-Notification-Attempt).",
                &["route"],
                vec![1.0, 2.0, 3.0, 5.0, 10.0, 20.0],
            ),
            cert_expiry: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "pushgate_cert_expiry_timestamp_seconds",
                        "notAfter of the server certificate and each CA.",
                    ),
                    &["cert"],
                )
                .expect("constant metric"),
            ),
            crl_next_update: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "pushgate_crl_next_update_timestamp_seconds",
                        "nextUpdate of each client CRL, by issuer.",
                    ),
                    &["issuer"],
                )
                .expect("constant metric"),
            ),
            tls_failures: counter(
                "pushgate_tls_handshake_failures_total",
                "Client certificates refused during the handshake, by reason.",
                &["reason"],
            ),
            reloads: counter("pushgate_reloads_total", "Config reloads by result.", &["result"]),
            storage_errors: counter(
                "pushgate_storage_errors_total",
                "Failed storage writes by operation.",
                &["op"],
            ),
            dedupe_unavailable: counter(
                "pushgate_dedupe_unavailable_total",
                "Events whose duplicate check could not be made (shared memory unavailable), by policy.",
                &["policy"],
            ),
            dedupe_backend_up: reg(
                &registry,
                IntGauge::new(
                    "pushgate_dedupe_backend_up",
                    "1 if the shared duplicate memory (Redis) answered its last call, else 0; always 1 for the memory backend.",
                )
                .expect("constant metric"),
            ),
            dedupe_pending_writes: reg(
                &registry,
                IntGauge::new(
                    "pushgate_dedupe_pending_writes",
                    "Seen ids taken while Redis was away, waiting to be written to it.",
                )
                .expect("constant metric"),
            ),
            dedupe_pending_dropped: reg(
                &registry,
                IntCounter::new(
                    "pushgate_dedupe_pending_dropped_total",
                    "Seen ids never written to Redis because the waiting queue was full.",
                )
                .expect("constant metric"),
            ),
            store_commits: reg(
                &registry,
                prometheus::IntCounter::new(
                    "pushgate_store_commits_total",
                    "Write transactions committed by the store (appends share one: group commit).",
                )
                .expect("constant metric"),
            ),
            store_damaged_records: reg(
                &registry,
                prometheus::IntCounter::new(
                    "pushgate_store_damaged_records_total",
                    "Damaged or torn records the store found (and skipped) when it was opened.",
                )
                .expect("constant metric"),
            ),
            connections_open: reg(
                &registry,
                IntGauge::new(
                    "pushgate_connections_open",
                    "Listener connections past the TLS handshake, now.",
                )
                .expect("constant metric"),
            ),
            connections_refused: reg(
                &registry,
                IntCounter::new(
                    "pushgate_connections_refused_total",
                    "Connections answered 503 and closed because listen.max_connections were open.",
                )
                .expect("constant metric"),
            ),
            connections_timed_out: counter(
                "pushgate_connections_timed_out_total",
                "Connections closed for not sending a request header in time, by phase (header, idle).",
                &["phase"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
