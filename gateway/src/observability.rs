//! Logs, metrics and request ids: the cross-cutting concerns.
//!
//! Metric names are constants here; labels are bounded (configured site ids, interaction
//! names, status codes), never a patient identifier or anything a client chose.

use std::sync::Once;

use actix_web::HttpMessage;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderName, HeaderValue};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::config::{LogConfig, LogFormat};

pub const REQUESTS_TOTAL: &str = "assent_requests_total";
pub const UPSTREAM_LATENCY: &str = "assent_upstream_latency_seconds";
pub const REQUEST_LOG_DROPPED: &str = "assent_request_log_dropped_total";

/// The header that carries the request id both ways.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub upstream_latency: HistogramVec,
    pub request_log_dropped: IntCounter,
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
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_latency.clone()),
            Box::new(request_log_dropped.clone()),
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
