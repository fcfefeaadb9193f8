//! Logs, metrics and request ids: the cross-cutting concerns.
//!
//! Metric names are constants here; labels are bounded (configured site ids, interaction
//! names, status codes), never a patient identifier or anything a client chose.
//!
//! Log lines cannot be forged: values logged may come from callers (a token's `sub` in a
//! caller id, a scope, an error quoting a request), so the text format escapes control
//! characters in every field and message at one point ([`EscapedFields`]), and the JSON format
//! writes every value as a JSON string (escaped by serde). [`Escaped`] does the same for other
//! text the gateway prints.

use std::fmt::{self, Write as _};
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
pub const NETWORK_LEARN_DROPPED: &str = "assent_network_learn_dropped_total";
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
    /// Released Patients not learnt because the network learner's queue was full.
    pub network_learn_dropped: IntCounter,
    pub break_glass: crate::services::break_glass::BreakGlassMetrics,
    pub cache_fanout: crate::services::cache_fanout::FanoutMetrics,
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
        let network_learn_dropped = IntCounter::new(
            NETWORK_LEARN_DROPPED,
            "Released Patients not learnt by the network index because its queue was full",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let static_metric =
            |e: prometheus::Error| -> ! { unreachable!("static metric definition: {e}") };
        let break_glass = crate::services::break_glass::BreakGlassMetrics {
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
        let cache_fanout = crate::services::cache_fanout::FanoutMetrics {
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
            Box::new(network_learn_dropped.clone()),
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
            network_learn_dropped,
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
        let ansi = colours(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        let _ = tracing::subscriber::set_global_default(subscriber(config, std::io::stderr, ansi));
    });
}

/// Whether the text log is coloured: only on a terminal, and never with `NO_COLOR` set to
/// anything but empty (<https://no-color.org>). A log redirected to a file carries no escape
/// codes.
pub fn colours(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The gateway's `tracing` subscriber for `config`, writing to `writer`: JSON, or text with
/// every field escaped ([`EscapedFields`]), coloured when `ansi` ([`colours`]).
pub fn subscriber<W>(
    config: &LogConfig,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(&config.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match config.format {
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        LogFormat::Text => Box::new(builder.fmt_fields(EscapedFields).finish()),
    }
}

/// `text` with its control characters escaped (`\n`, `\r`, `\t`, `\u{1b}`, …, and the Unicode
/// line and paragraph separators), so that it cannot start a line of its own or drive a
/// terminal. Everything else is shown as it is.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    write!(f, "\\u{{{:x}}}", u32::from(c))?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The text log's field formatter: like `tracing-subscriber`'s default (`name=value`, the
/// message bare, strings quoted), with every value and the message passed through
/// [`Escaped`]. Whatever a field holds, an event is one line.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: tracing_subscriber::fmt::format::Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &tracing::field::Field, text: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let name = field.name();
        self.result = match name {
            "message" => write!(self.writer, "{separator}{}", Escaped(text)),
            name => write!(
                self.writer,
                "{separator}{}={}",
                name.strip_prefix("r#").unwrap_or(name),
                Escaped(text)
            ),
        };
    }
}

impl tracing::field::Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log sink shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;

        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    fn capture(format: LogFormat, emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let config = LogConfig {
            format,
            level: "info".into(),
            access_log: true,
        };
        tracing::subscriber::with_default(subscriber(&config, captured.clone(), false), emit);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    const FORGED: &str = "dr-x\n2030-01-01T00:00:00.000000Z  INFO assent_gateway::routes: admin granted caller=root\r\u{1b}[2K\u{2028}";

    #[test]
    fn a_caller_chosen_value_cannot_forge_a_log_line() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let log = capture(format, || {
                let error = std::io::Error::other(FORGED);
                tracing::info!(caller = %FORGED, scope = ?FORGED, plain = FORGED, error = &error as &dyn std::error::Error, "refused {}", FORGED);
                tracing::warn!(r#type = %FORGED, "second event");
            });
            let lines: Vec<&str> = log.lines().collect();
            assert_eq!(lines.len(), 2, "{format:?}: {log}");
            assert!(
                lines[0].contains("refused dr-x") && lines[1].contains("second event"),
                "{log}"
            );
            assert!(!log.contains('\r'), "{log:?}");
            if format == LogFormat::Text {
                assert!(!log.contains('\u{2028}'), "{log:?}");
                assert!(lines[0].contains("caller=dr-x\\n2030-01-01"), "{log}");
                assert!(lines[0].contains("\\r\\u{1b}[2K\\u{2028}"), "{log}");
                assert!(lines[1].contains(" type=dr-x\\n"), "{log}");
            } else {
                // JSON keeps the value exact, escaped by the encoding.
                let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
                assert_eq!(event["caller"], FORGED);
            }
        }
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colours(true, None));
        assert!(colours(true, Some(OsStr::new(""))));
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None), "a file or a pipe");
        let log = capture(LogFormat::Text, || tracing::warn!(site = "x", "an event"));
        assert!(log.contains("WARN") && !log.contains('\u{1b}'), "{log:?}");
    }

    #[test]
    fn escaped_shows_plain_text_as_it_is() {
        assert_eq!(
            Escaped("dr-alice@https://idp/ é \"x\" \\").to_string(),
            "dr-alice@https://idp/ é \"x\" \\"
        );
        assert_eq!(
            Escaped("a\nb\tc\u{7f}\u{85}").to_string(),
            "a\\nb\\tc\\u{7f}\\u{85}"
        );
    }
}
