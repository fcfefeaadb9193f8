//! Break-glass as the gateway sees it: the justification header, what a request asks of the
//! decision, the facts the record phase reads from the request context, and the webhook
//! that is told of every access resting on break-glass.
//!
//! The rule itself (purpose `ETREAT` or below, the caller's break-glass grant and a
//! justification turn a deny into a permit marked break-glass) is the consent crate's
//! `decide`; the grant is the issuer's `break_glass_scope`, read by `assent-auth`.
//!
//! **Invariant:** the justification is free text that may name the patient or their
//! condition: it goes to the receipt and the webhook only, never to logs, metric labels or
//! the request log. The webhook gets the patient's keyed hash, never a clear identifier.
//!
//! Leaves out: the receipts (the record phase reads [`BreakGlass`] from the context).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use assent_consent::Timestamp;
use hmac::{Hmac, KeyInit, Mac};
use prometheus::IntCounterVec;
use serde_json::json;
use sha2::Sha256;

use crate::config::BreakGlassConfig;

/// The header that carries the justification of a break-glass request.
pub const REASON_HEADER: &str = "x-assent-break-glass-reason";
/// Longest justification accepted, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The header with the HMAC-SHA256 of a webhook body, when a secret is configured.
pub const SIGNATURE_HEADER: &str = "x-assent-signature";

/// Why a break-glass justification was refused (the error table answers
/// `break-glass-reason-invalid` with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the break-glass justification is {0}")]
pub struct ReasonInvalid(pub &'static str);

/// The justification in `headers`, if any: UTF-8 text of at most [`MAX_REASON_CHARS`]
/// characters without control characters, trimmed; an empty value counts as none.
pub fn justification(headers: &HeaderMap) -> Result<Option<String>, ReasonInvalid> {
    let mut values = headers.get_all(REASON_HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ReasonInvalid("given more than once"));
    }
    let text =
        std::str::from_utf8(value.as_bytes()).map_err(|_| ReasonInvalid("not UTF-8 text"))?;
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err(ReasonInvalid("holds control characters"));
    }
    if text.chars().count() > MAX_REASON_CHARS {
        return Err(ReasonInvalid("longer than 500 characters"));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// One deny that break-glass overrode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The patient's keyed hash (as the ledger knows them).
    pub patient_key: String,
    /// The basis of the deny that was overridden (`consent:c1@2:Consent.provision:deny`).
    pub overridden: String,
}

/// Break-glass facts of one request, on the request context for the record phase: set when
/// the caller asked for break-glass (a justification, or the grant with an emergency
/// purpose), whether or not it was needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakGlass {
    /// The caller's justification (free text, may hold PHI: receipt and webhook only).
    pub justification: Option<String>,
    /// The denies overridden for this request (one per patient at most); empty when
    /// break-glass was asked for but every decision was a permit anyway.
    pub overrides: Vec<Override>,
}

impl BreakGlass {
    /// Whether some data of this request was released on break-glass alone.
    pub fn used(&self) -> bool {
        !self.overrides.is_empty()
    }

    /// Adds overrides, once per patient.
    pub fn note(&mut self, overrides: impl IntoIterator<Item = Override>) {
        for o in overrides {
            if !self
                .overrides
                .iter()
                .any(|e| e.patient_key == o.patient_key)
            {
                self.overrides.push(o);
            }
        }
    }
}

/// What the webhook is told of one access resting on break-glass.
#[derive(Debug, Clone)]
pub struct Event {
    pub request_id: String,
    pub at_ms: i64,
    pub gateway_id: String,
    pub site: String,
    /// The stable, non-PHI caller id (`subject@issuer`).
    pub caller: String,
    pub purpose: Option<&'static str>,
    /// The status answered to the caller.
    pub status: u16,
    pub justification: Option<String>,
    pub overrides: Vec<Override>,
}

impl Event {
    /// The JSON body posted to the webhook.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "type": "assent.break-glass",
            "request_id": self.request_id,
            "time": Timestamp::from_unix_seconds(self.at_ms.div_euclid(1000)).to_string(),
            "at_ms": self.at_ms,
            "gateway_id": self.gateway_id,
            "site": self.site,
            "caller": self.caller,
            "purpose_of_use": self.purpose,
            "status": self.status,
            "justification": self.justification,
            "overridden": self.overrides.iter().map(|o| json!({
                "patient_key": o.patient_key,
                "basis": o.overridden,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The metrics of break-glass (labels: configured site ids and fixed words).
#[derive(Clone)]
pub struct BreakGlassMetrics {
    /// Accesses resting on break-glass, by site.
    pub used: IntCounterVec,
    /// Webhook events not delivered, by reason (`queue-full`, `gave-up`).
    pub webhook_failures: IntCounterVec,
    /// Webhook events delivered.
    pub webhook_delivered: prometheus::IntCounter,
}

/// Sends [`Event`]s to the configured webhook from a thread of its own, through a bounded
/// queue: the request path never waits for it.
pub struct Notifier {
    sender: Option<tokio::sync::mpsc::Sender<Event>>,
    metrics: BreakGlassMetrics,
}

impl Notifier {
    /// Starts the delivery thread when a webhook is configured; bodies are signed with
    /// `secret` (`webhook_secret_hex` of the key file or the environment) when there is one.
    pub fn start(
        config: &BreakGlassConfig,
        secret: Option<crate::config::keys::Secret>,
        metrics: BreakGlassMetrics,
    ) -> Notifier {
        let Some(url) = config.webhook_url.clone() else {
            return Notifier {
                sender: None,
                metrics,
            };
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(config.webhook_queue);
        let delivery = Delivery {
            url: url.to_string(),
            bearer: config.webhook_bearer.clone(),
            secret: secret.map(|s| s.bytes().to_vec()),
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            attempts: config.webhook_attempts,
            metrics: metrics.clone(),
        };
        let started = std::thread::Builder::new()
            .name("assent-break-glass".into())
            .spawn(move || {
                // Stops when the notifier (and so the queue's sender) is dropped.
                actix_web::rt::System::new().block_on(delivery.run(receiver));
            });
        if started.is_err() {
            tracing::error!("the break-glass webhook thread could not start");
        }
        Notifier {
            sender: started.is_ok().then_some(sender),
            metrics,
        }
    }

    /// Counts an access resting on break-glass and queues its event for the webhook.
    pub fn notify(&self, event: Event) {
        self.metrics.used.with_label_values(&[&event.site]).inc();
        let Some(sender) = &self.sender else {
            return;
        };
        let request_id = event.request_id.clone();
        if sender.try_send(event).is_err() {
            self.metrics
                .webhook_failures
                .with_label_values(&["queue-full"])
                .inc();
            tracing::warn!(request_id = %request_id, "break-glass webhook queue full: event dropped");
        }
    }
}

struct Delivery {
    url: String,
    bearer: Option<String>,
    secret: Option<Vec<u8>>,
    timeout: Duration,
    attempts: u32,
    metrics: BreakGlassMetrics,
}

impl Delivery {
    async fn run(self, mut receiver: tokio::sync::mpsc::Receiver<Event>) {
        let tls = crate::services::upstream::tls_config(&crate::config::UpstreamAuth::None).ok();
        let mut connector = awc::Connector::new().timeout(self.timeout);
        if let Some(tls) = tls {
            connector = connector.rustls_0_23(Arc::new(tls));
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(self.timeout)
            .disable_redirects()
            .finish();
        while let Some(event) = receiver.recv().await {
            self.deliver(&client, &event).await;
        }
    }

    async fn deliver(&self, client: &awc::Client, event: &Event) {
        let body = event.to_json().to_string();
        let signature = self.secret.as_ref().map(|key| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(body.as_bytes());
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        });
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=self.attempts {
            let mut request = client
                .post(&self.url)
                .insert_header(("content-type", "application/json"))
                .insert_header(("x-request-id", event.request_id.as_str()));
            if let Some(bearer) = &self.bearer {
                request = request.insert_header(("authorization", format!("Bearer {bearer}")));
            }
            if let Some(signature) = &signature {
                request = request.insert_header((SIGNATURE_HEADER, signature.as_str()));
            }
            // Only the status or the kind of failure is logged: never the body.
            let failure = match request.send_body(body.clone()).await {
                Ok(response) if response.status().is_success() => {
                    self.metrics.webhook_delivered.inc();
                    return;
                }
                Ok(response) => format!("status {}", response.status().as_u16()),
                Err(e) => send_error_kind(&e).to_owned(),
            };
            tracing::warn!(request_id = %event.request_id, attempt, failure = %failure, "break-glass webhook call failed");
            if attempt < self.attempts {
                actix_web::rt::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        self.metrics
            .webhook_failures
            .with_label_values(&["gave-up"])
            .inc();
        tracing::error!(request_id = %event.request_id, attempts = self.attempts, "break-glass webhook event given up");
    }
}

fn send_error_kind(e: &awc::error::SendRequestError) -> &'static str {
    use awc::error::SendRequestError as E;
    match e {
        E::Timeout => "timeout",
        E::Connect(_) => "connect error",
        E::Send(_) => "send error",
        E::Response(_) => "bad response",
        _ => "request error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_static(REASON_HEADER),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_justification_is_bounded_printable_text() {
        assert_eq!(justification(&headers(&[])).unwrap(), None);
        assert_eq!(justification(&headers(&[b"   "])).unwrap(), None);
        assert_eq!(
            justification(&headers(&[b" unconscious in ER, bed 3 "])).unwrap(),
            Some("unconscious in ER, bed 3".to_owned())
        );
        assert_eq!(
            justification(&headers(&["Bewusstlos, Notaufnahme – Bett 3".as_bytes()]))
                .unwrap()
                .as_deref(),
            Some("Bewusstlos, Notaufnahme – Bett 3")
        );
        let long = "x".repeat(MAX_REASON_CHARS);
        assert!(justification(&headers(&[long.as_bytes()])).is_ok());
        let too_long = "x".repeat(MAX_REASON_CHARS + 1);
        for bad in [
            too_long.as_bytes(),
            b"tab\there".as_slice(),
            b"\xff\xfe".as_slice(),
        ] {
            assert!(justification(&headers(&[bad])).is_err());
        }
        assert_eq!(
            justification(&headers(&[b"a", b"b"])).unwrap_err(),
            ReasonInvalid("given more than once")
        );
    }

    #[test]
    fn overrides_are_noted_once_per_patient() {
        let mut bg = BreakGlass::default();
        assert!(!bg.used());
        let o = |p: &str| Override {
            patient_key: p.into(),
            overridden: "site-default:opt-in".into(),
        };
        bg.note([o("k1"), o("k1"), o("k2")]);
        bg.note([o("k2")]);
        assert!(bg.used());
        assert_eq!(bg.overrides.len(), 2);
    }

    #[test]
    fn the_event_names_the_patient_only_by_keyed_hash() {
        let event = Event {
            request_id: "r1".into(),
            at_ms: 1_700_000_000_123,
            gateway_id: "gw".into(),
            site: "st-mary".into(),
            caller: "dr-bob@https://idp".into(),
            purpose: Some("ETREAT"),
            status: 200,
            justification: Some("unconscious".into()),
            overrides: vec![Override {
                patient_key: "hmac:abc".into(),
                overridden: "consent:c1@1:Consent.provision:deny".into(),
            }],
        };
        let v = event.to_json();
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["overridden"][0]["patient_key"], "hmac:abc");
        assert_eq!(
            v["overridden"][0]["basis"],
            "consent:c1@1:Consent.provision:deny"
        );
        assert_eq!(v["justification"], "unconscious");
        assert_eq!(v["purpose_of_use"], "ETREAT");
    }
}
