//! What the HTTP layer refuses before any handler sees a request (a malformed request line or
//! header, a head over the limits, a head that never completes) is a FHIR OperationOutcome
//! with a stable code, and the connection still closes; and HEAD on the gateway's own API is
//! served like GET. Raw TCP: an HTTP client library would not send these.

use std::time::{Duration, Instant};

use assent_e2e::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the gateway writes on a connection after `request`, until it closes it.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A refused head may be answered before all of it is read: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut got))
        .await
        .expect("the gateway closes the connection")
        .ok();
    got
}

/// A raw response: its status, its head's lines and its body.
struct Raw {
    status: u16,
    head: Vec<String>,
    body: Vec<u8>,
}

impl Raw {
    fn parse(bytes: &[u8]) -> Raw {
        let text = String::from_utf8_lossy(bytes);
        let (head, _) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head: {text:?}"));
        let body = bytes[head.len() + 4..].to_vec();
        let mut lines = head.split("\r\n").map(str::to_owned);
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        Raw {
            status,
            head: lines.collect(),
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Asserts `bytes` are one OperationOutcome answer with `status` and `code`, closing the
/// connection, and gives its `details.text`.
fn assert_outcome(bytes: &[u8], status: u16, code: &str, what: &str) -> String {
    let raw = Raw::parse(bytes);
    assert_eq!(
        raw.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(
        raw.header("content-type"),
        Some("application/fhir+json"),
        "{what}"
    );
    assert_eq!(raw.header("connection"), Some("close"), "{what}");
    assert_eq!(
        raw.header("content-length"),
        Some(raw.body.len().to_string().as_str()),
        "{what}: exactly one body, nothing after it"
    );
    let outcome: serde_json::Value = serde_json::from_slice(&raw.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", raw.body));
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{what}");
    assert_eq!(
        outcome["issue"][0]["details"]["coding"][0]["code"], code,
        "{what}: {outcome}"
    );
    let text = outcome["issue"][0]["details"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!text.is_empty(), "{what}: a sentence");
    text
}

#[actix_web::test]
async fn requests_the_http_layer_cannot_read_are_answered_with_operation_outcomes() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "p1"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let addr = gw.gateway.addr;

    let many_headers: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_header = format!("X-Big: {}\r\n", "a".repeat(140 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a malformed request line",
            b"GET /fhir/st-mary/Patient/p1 HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "request-unreadable",
        ),
        (
            "a request line that is not HTTP",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
            "request-unreadable",
        ),
        (
            "a header name with a space",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n".to_vec(),
            400,
            "request-unreadable",
        ),
        (
            "a header block over the size limit",
            format!("GET /livez HTTP/1.1\r\nHost: x\r\n{big_header}\r\n").into_bytes(),
            431,
            "request-head-too-large",
        ),
        (
            "too many header fields",
            format!("GET /livez HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
            "request-head-too-large",
        ),
    ];
    for (what, request, status, code) in cases {
        let got = exchange(addr, &request).await;
        assert_outcome(&got, status, code, what);
    }
    // Nothing of these reached the pipeline: no receipt, no upstream request.
    assert!(upstream.requests().is_empty());
}

#[actix_web::test]
async fn a_request_head_that_never_completes_is_answered_408_with_an_operation_outcome() {
    let gw = TestGateway::new().start();
    let started = Instant::now();
    let got = exchange(gw.gateway.addr, b"GET /livez HTTP/1.1\r\nHost: x\r\n").await;
    let waited = started.elapsed();
    let text = assert_outcome(&got, 408, "request-head-timeout", "a slow head");
    assert!(text.contains("in time"), "{text}");
    // The configured client request timeout, not earlier.
    assert!(
        waited >= assent_gateway::app::CLIENT_REQUEST_TIMEOUT - Duration::from_millis(200),
        "{waited:?}"
    );
}

/// ADV: a response is never rewritten because it holds the bytes of a refusal: neither a
/// legal request whose body is a refusal's head (answered by the application), nor a resource
/// whose text holds one, nor a second request on a connection the application answered.
#[actix_web::test]
async fn a_legal_exchange_holding_a_refusals_bytes_passes_unchanged() {
    let refusal = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let upstream = FakeUpstream::always(json!({
        "resourceType": "Patient", "id": "p1",
        "name": [{"text": refusal}],
    }));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let addr = gw.gateway.addr;

    // A legal POST whose JSON body starts with a refusal's bytes: the application's answer
    // (no token: 401), with its request id, as it was written.
    let body = serde_json::to_vec(&json!(refusal)).unwrap();
    let request = [
        format!(
            "POST /consent/$check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body,
    ]
    .concat();
    let raw = Raw::parse(&exchange(addr, &request).await);
    assert_eq!(raw.status, 401);
    assert!(raw.header("x-request-id").is_some());
    let outcome: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(
        outcome["issue"][0]["details"]["coding"][0]["code"],
        "token-missing"
    );

    // A resource holding a refusal's text: released as the site gave it.
    let got = get(&gw.url("/fhir/st-mary/Patient/p1")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["name"][0]["text"], refusal);

    // The same through raw TCP: the whole answer is the application's, its body whole.
    let request = format!(
        "GET /fhir/st-mary/Patient/p1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        clinician_token()
    );
    let raw = Raw::parse(&exchange(addr, request.as_bytes()).await);
    assert_eq!(raw.status, 200);
    assert!(raw.header("x-assent-receipt").is_some());
    let patient: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(patient["name"][0]["text"], refusal);
}

/// HEAD on the gateway's own API is served like GET without a body (the audit log and the
/// consent API included); a path that takes no GET answers HEAD 405 naming what it takes.
#[actix_web::test]
async fn head_on_the_gateways_own_api_is_served_like_get() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "p1"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .set("audit", json!({"subjects": [caller_id("privacy-officer")]}))
        .start();
    let officer = token("privacy-officer", None, None, None);
    for (path, token) in [
        ("/livez", None),
        ("/openapi.json", None),
        ("/.well-known/smart-configuration", None),
        ("/audit/AuditEvent", Some(officer.as_str())),
        (
            "/consent/Consent?patient=st-mary/Patient/p1",
            Some(officer.as_str()),
        ),
        ("/console/", None),
    ] {
        let head = send("HEAD", &gw.url(path), token, &[], None).await;
        let get = send("GET", &gw.url(path), token, &[], None).await;
        assert_eq!(head.status, get.status, "{path}");
        assert_ne!(head.status, 405, "{path}");
        assert!(head.body.is_empty(), "{path}: HEAD has no body");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
    }
    let head = send("HEAD", &gw.url("/consent/$check"), None, &[], None).await;
    assert_eq!(head.status, 405);
    assert_eq!(head.header("allow"), Some("POST"));
    let delete = send("DELETE", &gw.url("/audit/AuditEvent"), None, &[], None).await;
    assert_eq!(delete.status, 405);
    assert_eq!(delete.header("allow"), Some("GET, HEAD"));
}
