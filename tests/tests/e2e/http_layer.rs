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

/// Reads one whole response from `stream` (its head, then a body of its `content-length`, none
/// for HEAD) and gives its status.
async fn one_response(stream: &mut TcpStream, head_request: bool) -> u16 {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte))
            .await
            .expect("the first response comes")
            .expect("read");
        assert_eq!(n, 1, "the connection closed inside a head: {got:?}");
        got.push(byte[0]);
    }
    let raw = Raw::parse(&got);
    let length: usize = raw
        .header("content-length")
        .unwrap_or_else(|| panic!("a sized first response: {:?}", raw.head))
        .parse()
        .unwrap();
    if !head_request {
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.expect("the first body");
    }
    raw.status
}

/// On a keep-alive connection, a request that cannot be read after one that was answered (a
/// GET, a HEAD, a proxied read) is an OperationOutcome too: the connection layer follows each
/// response's framing, so it knows where the next response starts.
#[actix_web::test]
async fn an_unreadable_request_after_an_answered_one_is_an_operation_outcome() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "p1"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let addr = gw.gateway.addr;
    let read = format!(
        "GET /fhir/st-mary/Patient/p1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        clinician_token()
    );
    let firsts: [(&str, Vec<u8>, bool, u16); 4] = [
        (
            "a GET of the gateway's own",
            b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
            200,
        ),
        (
            "a HEAD",
            b"HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            true,
            200,
        ),
        ("a proxied read", read.into_bytes(), false, 200),
        (
            "a refused read",
            b"GET /fhir/st-mary/Patient/p1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
            401,
        ),
    ];
    let seconds: [(&str, &[u8], u16, &str); 2] = [
        (
            "a malformed request line",
            b"GET /livez HTTP/9.9\r\nHost: x\r\n\r\n",
            400,
            "request-unreadable",
        ),
        (
            "a header name with a space",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
            400,
            "request-unreadable",
        ),
    ];
    for (first, request, head_request, status) in &firsts {
        for (second, bad, bad_status, code) in seconds {
            let what = format!("{second} after {first}");
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(request).await.unwrap();
            assert_eq!(
                one_response(&mut stream, *head_request).await,
                *status,
                "{what}"
            );
            let _ = stream.write_all(bad).await;
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest))
                .await
                .expect("the gateway closes the connection")
                .ok();
            assert_outcome(&rest, bad_status, code, &what);
        }
    }
}
