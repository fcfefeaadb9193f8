//! Logs, metrics and request ids: the cross-cutting concerns.
//!
//! Metric names are constants here; labels are bounded (configured site ids, interaction
//! names, status codes), never a patient identifier or anything a client chose.

use std::sync::Once;

use actix_web::HttpMessage;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderName, HeaderValue};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::config::{LogConfig, LogFormat};

pub const REQUESTS_TOTAL: &str = "assent_requests_total";
pub const UPSTREAM_LATENCY: &str = "assent_upstream_latency_seconds";
pub const REQUEST_LOG_DROPPED: &str = "assent_request_log_dropped_total";
pub const CACHE_FANOUT_SUBSCRIBED: &str = "assent_cache_fanout_subscribed";
pub const CACHE_FANOUT_ERRORS: &str = "assent_cache_fanout_errors_total";
pub const CACHE_FANOUT_RECEIVED: &str = "assent_cache_fanout_received_total";
pub const BREAK_GLASS_TOTAL: &str = "assent_break_glass_total";
pub const BREAK_GLASS_WEBHOOK_FAILURES: &str = "assent_break_glass_webhook_failures_total";
pub const BREAK_GLASS_WEBHOOK_DELIVERED: &str = "assent_break_glass_webhook_delivered_total";

/// The header that carries the request id both ways.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub upstream_latency: HistogramVec,
    pub request_log_dropped: IntCounter,
    pub break_glass: crate::break_glass::BreakGlassMetrics,
    pub cache_fanout: crate::cache_fanout::FanoutMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                REQUESTS_TOTAL,
                "FHIR requests by site, interaction and status",
            ),
            &["site", "interaction", "status"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(UPSTREAM_LATENCY, "Time to the upstream's response headers")
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            &["site"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let request_log_dropped = IntCounter::new(
            REQUEST_LOG_DROPPED,
            "Request log rows dropped because the writer fell behind",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let static_metric =
            |e: prometheus::Error| -> ! { unreachable!("static metric definition: {e}") };
        let break_glass = crate::break_glass::BreakGlassMetrics {
            used: IntCounterVec::new(
                Opts::new(
                    BREAK_GLASS_TOTAL,
                    "Accesses resting on break-glass, by site",
                ),
                &["site"],
            )
            .unwrap_or_else(|e| static_metric(e)),
            webhook_failures: IntCounterVec::new(
                Opts::new(
                    BREAK_GLASS_WEBHOOK_FAILURES,
                    "Break-glass webhook events not delivered (queue-full, gave-up)",
                ),
                &["reason"],
            )
            .unwrap_or_else(|e| static_metric(e)),
            webhook_delivered: IntCounter::new(
                BREAK_GLASS_WEBHOOK_DELIVERED,
                "Break-glass webhook events delivered",
            )
            .unwrap_or_else(|e| static_metric(e)),
        };
        let cache_fanout = crate::cache_fanout::FanoutMetrics {
            subscribed: IntGauge::new(
                CACHE_FANOUT_SUBSCRIBED,
                "1 while the cross-replica cache fan-out is subscribed (else the cache is bypassed)",
            )
            .unwrap_or_else(|e| static_metric(e)),
            errors: IntCounterVec::new(
                Opts::new(
                    CACHE_FANOUT_ERRORS,
                    "Cache fan-out failures (connect, subscription-lost, publish, refresh)",
                ),
                &["kind"],
            )
            .unwrap_or_else(|e| static_metric(e)),
            received: IntCounter::new(
                CACHE_FANOUT_RECEIVED,
                "Consent changes of other replicas received through the cache fan-out",
            )
            .unwrap_or_else(|e| static_metric(e)),
        };
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_latency.clone()),
            Box::new(request_log_dropped.clone()),
            Box::new(break_glass.used.clone()),
            Box::new(break_glass.webhook_failures.clone()),
            Box::new(break_glass.webhook_delivered.clone()),
            Box::new(cache_fanout.subscribed.clone()),
            Box::new(cache_fanout.errors.clone()),
            Box::new(cache_fanout.received.clone()),
        ] {
            registry
                .register(collector)
                .unwrap_or_else(|e| unreachable!("each metric is registered once: {e}"));
        }
        Metrics {
            registry,
            requests,
            upstream_latency,
            request_log_dropped,
            break_glass,
            cache_fanout,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Installs the global `tracing` subscriber once per process (later calls do nothing).
pub fn init_tracing(config: &LogConfig) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_new(&config.level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match config.format {
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
            LogFormat::Text => builder.try_init(),
        };
    });
}

/// The request's id, as put in its extensions by [`assign_request_id`].
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Takes a well-formed `X-Request-ID` from the client or makes one, and stores it in the
/// request's extensions. A client-chosen id is kept only if it is short and plain.
pub fn assign_request_id(req: &ServiceRequest) -> String {
    let given = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    let id = match given {
        Some(v) => v.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    id
}

/// The header value of a request id (always valid: ids are checked or generated).
pub fn request_id_header(id: &str) -> HeaderValue {
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
