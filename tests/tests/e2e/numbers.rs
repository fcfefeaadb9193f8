//! Exact numbers through the gateway: every number of an answer is the text the site wrote
//! (trailing zeros, 30+ digits, negative zero), whether passed through in the site's version
//! or translated into the client's, in reads, searches and the `$translate` dry run (also a
//! round trip STU3 → R4 → STU3), over a generated set of edge-case decimals and over the
//! official examples (`ASSENT_FHIR_EXAMPLES`). Also the housekeeping check that every crate
//! of the workspace reads JSON numbers as text (serde_json's `arbitrary_precision`).
//!
//! Numbers are compared as text read from the raw bytes (`numbers_of`, a scanner of its own,
//! so the comparison does not go through the representation under test), exactly: an
//! exponent too leaves as it was spelt (`1E3`, not serde_json's `1e+3`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use assent_e2e::*;
use serde_json::{Value, json};

const R5: &str = "application/fhir+json; fhirVersion=5.0";
const STU3: &str = "application/fhir+json; fhirVersion=3.0";
const R4: &str = "application/fhir+json; fhirVersion=4.0";

// ---- numbers read from the raw text ------------------------------------------------------

/// Every number of a JSON text with its path (`component[3].valueQuantity.value`), as the
/// text spells it, in document order. Panics on text that is not JSON.
fn numbers_of(text: &str) -> Vec<(String, String)> {
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        at: 0,
        out: Vec::new(),
    };
    scanner.value(String::new());
    scanner.space();
    assert_eq!(scanner.at, text.len(), "trailing text after JSON");
    scanner.out
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    out: Vec<(String, String)>,
}

impl Scanner<'_> {
    fn space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> u8 {
        self.space();
        *self.bytes.get(self.at).expect("JSON ends early")
    }

    fn expect(&mut self, byte: u8) {
        assert_eq!(self.peek(), byte, "at byte {}", self.at);
        self.at += 1;
    }

    fn string(&mut self) -> String {
        self.expect(b'"');
        let start = self.at;
        while self.bytes[self.at] != b'"' {
            self.at += if self.bytes[self.at] == b'\\' { 2 } else { 1 };
        }
        let raw = &self.bytes[start..self.at];
        self.at += 1;
        String::from_utf8_lossy(raw).into_owned()
    }

    fn value(&mut self, path: String) {
        match self.peek() {
            b'{' => {
                self.at += 1;
                if self.peek() == b'}' {
                    self.at += 1;
                    return;
                }
                loop {
                    let key = self.string();
                    self.expect(b':');
                    let inner = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    self.value(inner);
                    if self.peek() == b',' {
                        self.at += 1;
                    } else {
                        self.expect(b'}');
                        return;
                    }
                }
            }
            b'[' => {
                self.at += 1;
                if self.peek() == b']' {
                    self.at += 1;
                    return;
                }
                let mut i = 0;
                loop {
                    self.value(format!("{path}[{i}]"));
                    i += 1;
                    if self.peek() == b',' {
                        self.at += 1;
                    } else {
                        self.expect(b']');
                        return;
                    }
                }
            }
            b'"' => {
                self.string();
            }
            b't' | b'f' | b'n' => {
                while self.bytes.get(self.at).is_some_and(u8::is_ascii_alphabetic) {
                    self.at += 1;
                }
            }
            _ => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| b"0123456789+-.eE".contains(b))
                {
                    self.at += 1;
                }
                assert!(self.at > start, "not JSON at byte {start}");
                let number = String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned();
                self.out.push((path, number));
            }
        }
    }
}

/// The numbers of `text` as the gateway must answer them, by path.
fn expected_by_path(text: &str) -> BTreeMap<String, String> {
    numbers_of(text).into_iter().collect()
}

/// The numbers of `text` as a multiset of texts (for answers whose paths differ from the
/// input's: another version, a Bundle with entries withheld).
fn multiset(numbers: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, n) in numbers {
        *out.entry(n).or_insert(0) += 1;
    }
    out
}

/// What `got` has that `within` does not (counting repeats).
fn not_within(got: &BTreeMap<String, usize>, within: &BTreeMap<String, usize>) -> Vec<String> {
    got.iter()
        .filter(|(n, count)| within.get(*n).copied().unwrap_or(0) < **count)
        .map(|(n, count)| format!("{n} ×{count}"))
        .collect()
}

// ---- the generated edge cases ------------------------------------------------------------

/// Decimals whose text a binary float would change, generated: trailing zeros at every
/// scale, exponents in every spelling, 30 to 40 digits, negative zero, and the values the
/// issue found changed (`112.41600000000001`).
fn edge_case_numbers() -> Vec<String> {
    let mut numbers: Vec<String> = [
        "1.50",
        "0.010",
        "1.00",
        "100.0",
        "0.0",
        "-0",
        "-0.0",
        "-0.000",
        "-1.250",
        "1e3",
        "1E3",
        "1e+3",
        "1E+3",
        "1.5E-7",
        "7.25E-05",
        "6e0",
        "2.50e+10",
        "-3.0E-0",
        "112.41600000000001",
        "125.29690705292417",
        "0.1",
        "0.30000000000000004",
        "9007199254740993",
        "18446744073709551616",
        "-9223372036854775809",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for zeros in 1..=12 {
        numbers.push(format!("2.5{}", "0".repeat(zeros)));
        numbers.push(format!("0.{}1", "0".repeat(zeros)));
    }
    for digits in [30, 31, 35, 40] {
        let long: String = (0..digits)
            .map(|i| char::from(b'1' + (i % 9) as u8))
            .collect();
        numbers.push(long.clone());
        numbers.push(format!("{}.{}", &long[..digits / 2], &long[digits / 2..]));
        numbers.push(format!("-0.{long}0"));
    }
    numbers
}

/// An R4 Observation holding every edge-case number (value, components, reference range),
/// as raw text: the numbers stay as written here, not as any JSON library would write them.
fn observation_text(id: &str) -> String {
    let numbers = edge_case_numbers();
    let components: Vec<String> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                r#"{{"code": {{"text": "c{i}"}}, "valueQuantity": {{"value": {n}, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"resourceType": "Observation", "id": "{id}", "status": "final",
  "code": {{"coding": [{{"system": "http://loinc.org", "code": "2345-7"}}]}},
  "subject": {{"reference": "Patient/p1"}},
  "valueQuantity": {{"value": 1.50, "unit": "mmol/L"}},
  "referenceRange": [{{"low": {{"value": 0.010}}, "high": {{"value": 123456789012345678901234567890.123}}}}],
  "component": [{}]}}"#,
        components.join(",\n    ")
    )
}

fn raw(status: u16, text: String) -> FakeResponse {
    FakeResponse {
        status,
        headers: vec![("content-type".into(), "application/fhir+json".into())],
        body: text.into_bytes(),
        delay: None,
    }
}

/// A FAKE R4 site serving `Observation/o1` and a search of it as raw text.
fn edge_case_site() -> FakeUpstream {
    FakeUpstream::start(|req, _| {
        if req.path.ends_with("/Observation/o1") {
            raw(200, observation_text("o1"))
        } else if req.path.ends_with("/Observation") {
            raw(
                200,
                format!(
                    r#"{{"resourceType": "Bundle", "type": "searchset", "entry": [{{"resource": {}, "search": {{"mode": "match", "score": 0.50}}}}]}}"#,
                    observation_text("o1")
                ),
            )
        } else {
            raw(404, r#"{"resourceType": "OperationOutcome"}"#.into())
        }
    })
}

async fn read(url: &str, accept: Option<&str>) -> Got {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    send("GET", url, Some(clinician_token()), &headers, None).await
}

/// Asserts that the numbers of `answer` at `prefix` are those of `input`, path by path
/// (paths of the answer with `prefix` taken off).
fn assert_same_numbers(input: &str, answer: &str, prefix: &str, what: &str) {
    let expected = expected_by_path(input);
    let got: BTreeMap<String, String> = numbers_of(answer)
        .into_iter()
        .filter_map(|(p, n)| Some((p.strip_prefix(prefix)?.to_owned(), n)))
        .collect();
    let mut differences = Vec::new();
    for (path, number) in &expected {
        match got.get(path) {
            Some(n) if n == number => {}
            other => differences.push(format!("{path}: sent {number}, got {other:?}")),
        }
    }
    for path in got.keys().filter(|p| !expected.contains_key(*p)) {
        differences.push(format!("{path}: added {}", got[path]));
    }
    assert!(
        differences.is_empty(),
        "{what}: {} numbers differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[actix_web::test]
async fn edge_case_numbers_pass_every_version_as_written() {
    let upstream = edge_case_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let input = observation_text("o1");
    let url = gw.url("/fhir/st-mary/Observation/o1");
    for (accept, what) in [
        (None, "pass-through"),
        (Some(R4), "R4 named"),
        (Some(R5), "R4 → R5"),
        (Some(STU3), "R4 → STU3"),
    ] {
        let got = read(&url, accept).await;
        assert_eq!(got.status, 200, "{what}: {}", got.text());
        assert_same_numbers(&input, &got.text(), "", what);
    }
    // The same in a search Bundle (its own number, the score, too).
    let search = gw.url("/fhir/st-mary/Observation?subject=Patient/p1");
    for (accept, what) in [(None, "search"), (Some(R5), "search as R5")] {
        let got = read(&search, accept).await;
        assert_eq!(got.status, 200, "{what}: {}", got.text());
        assert_same_numbers(&input, &got.text(), "entry[0].resource.", what);
        let score: Vec<String> = numbers_of(&got.text())
            .into_iter()
            .filter(|(p, _)| p == "entry[0].search.score")
            .map(|(_, n)| n)
            .collect();
        assert_eq!(score, ["0.50"], "{what}");
    }
    // The test would see a float: `1.50` read as a float is `1.5`.
    assert!(input.contains("\"value\": 1.50,"));
}

#[actix_web::test]
async fn the_receipt_hashes_numbers_as_their_text() {
    let upstream = edge_case_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = read(&gw.url("/fhir/st-mary/Observation/o1"), None).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let receipt_id = got
        .header("x-assent-receipt")
        .expect("a receipt id")
        .to_owned();
    let receipt = send(
        "GET",
        &gw.url(&format!("/audit/receipts/{receipt_id}")),
        Some(&token(
            "nurse-carol",
            Some("openid user/AuditEvent.rs"),
            None,
            None,
        )),
        &[],
        None,
    )
    .await;
    assert_eq!(receipt.status, 200, "{}", receipt.text());
    let text = receipt.text();
    // The content hash is SHA-256 over the canonical JSON (keys sorted, no whitespace: what
    // serde_json writes of a tree), every number as its text, an exponent in serde_json's one
    // spelling: the answer says `1E3` as the site wrote it, the canonical form `1e+3`.
    let canonical = got.json().to_string();
    assert!(canonical.contains(r#""value":1.50"#), "{canonical}");
    assert!(got.text().contains(r#""value":1E3}"#), "{}", got.text());
    assert!(!canonical.contains("1E3") && canonical.contains(r#""value":1e+3}"#));
    assert!(canonical.contains("123456789012345678901234567890.123"));
    let hash = assent_receipts::Digest::of(canonical.as_bytes()).to_hex();
    assert!(text.contains(&hash), "content hash {hash} not in {text}");
}

// ---- $translate: STU3 → R4 → STU3 ------------------------------------------------------

#[actix_web::test]
async fn translate_round_trip_stu3_r4_stu3_keeps_every_number() {
    let upstream = FakeUpstream::always(json!({"resourceType": "OperationOutcome"}));
    let gw = TestGateway::new()
        .site_with(
            "stu3-site",
            json!({"upstream": upstream.base_url(), "fhir_version": "STU3", "default_policy": "opt-out"}),
        )
        .start();
    let input = observation_text("o1");
    let post = |path: &'static str, body: String| {
        let url = gw.url(path);
        async move {
            send(
                "POST",
                &url,
                Some(admin_token()),
                &[("content-type", "application/fhir+json")],
                Some(body.into_bytes()),
            )
            .await
        }
    };
    let returned = |got: &Got| -> (usize, Value) {
        assert_eq!(got.status, 200, "{}", got.text());
        let parameters = got.json();
        let index = parameters["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .position(|p| p["name"] == "return")
            .expect("a return parameter");
        (index, parameters["parameter"][index]["resource"].clone())
    };
    // The site's STU3 resource as R4 (to the network).
    let there = post("/admin/sites/stu3-site/$translate?to=R4", input.clone()).await;
    let (index, _) = returned(&there);
    let there_text = there.text();
    assert_same_numbers(
        &input,
        &there_text,
        &format!("parameter[{index}].resource."),
        "STU3 → R4",
    );
    // The R4 resource back into the site's STU3 (to the site): the R4 text is taken from the
    // answer's bytes, so its numbers are the gateway's, not re-spelt by the test.
    let marker = r#""name":"return","resource":"#;
    let start = there_text.find(marker).expect("the returned resource") + marker.len();
    let r4_text = balanced(&there_text[start..]);
    let back = post(
        "/admin/sites/stu3-site/$translate?direction=to-site&from=R4",
        r4_text.to_owned(),
    )
    .await;
    let (index, _) = returned(&back);
    assert_same_numbers(
        &input,
        &back.text(),
        &format!("parameter[{index}].resource."),
        "STU3 → R4 → STU3",
    );
}

/// The JSON object at the start of `text` (balanced braces, strings skipped).
fn balanced(text: &str) -> &str {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in text.bytes().enumerate() {
        match (in_string, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (false, b'"') => in_string = true,
            (false, b'{') => depth += 1,
            (false, b'}') => {
                depth -= 1;
                if depth == 0 {
                    return &text[..=i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced JSON object")
}

// ---- the official examples ---------------------------------------------------------------

fn examples_dir(version: &str) -> Option<PathBuf> {
    let root = std::env::var_os("ASSENT_FHIR_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fhir-examples")
        });
    let dir = root.join(version);
    dir.is_dir().then_some(dir)
}

/// Every official R4 example, served as its file's bytes by a FAKE R4 site, read through
/// the gateway in R4 (passed through) and as R5 and STU3 (translated): every number of every
/// answer is a number of the example, as written; passed through, path for path, with none
/// lost.
#[actix_web::test]
async fn official_examples_keep_every_number() {
    let Some(dir) = examples_dir("r4") else {
        eprintln!("ASSENT_FHIR_EXAMPLES not found: skipped");
        return;
    };
    let mut examples: Vec<(String, String, String)> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let (Some(t), Some(id)) = (value["resourceType"].as_str(), value["id"].as_str()) else {
            continue;
        };
        examples.push((t.to_owned(), id.to_owned(), text));
    }
    examples.sort();
    assert!(examples.len() > 500, "{} examples", examples.len());
    let served: BTreeMap<String, String> = examples
        .iter()
        .map(|(t, id, text)| (format!("/fhir/{t}/{id}"), text.clone()))
        .collect();
    let upstream = FakeUpstream::start(move |req, _| match served.get(&req.path) {
        Some(text) => raw(200, text.clone()),
        None => raw(404, r#"{"resourceType": "OperationOutcome"}"#.into()),
    });
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();

    let (mut checked, mut with_numbers, mut not_released) = (0, 0, Vec::new());
    let mut problems = Vec::new();
    for (resource_type, id, text) in &examples {
        let input_numbers = numbers_of(text);
        let url = gw.url(&format!("/fhir/st-mary/{resource_type}/{id}"));
        let passed = read(&url, None).await;
        if passed.status != 200 {
            not_released.push(format!("{resource_type}/{id}: {}", passed.status));
            continue;
        }
        checked += 1;
        if !input_numbers.is_empty() {
            with_numbers += 1;
        }
        let answer = passed.text();
        if resource_type == "Bundle" {
            // Entries may be withheld; what is released is as written.
            let extra = not_within(
                &multiset(numbers_of(&answer)),
                &multiset(input_numbers.clone()),
            );
            if !extra.is_empty() {
                problems.push(format!("{resource_type}/{id} passed: {extra:?}"));
            }
        } else {
            let expected = expected_by_path(text);
            let got: BTreeMap<String, String> = numbers_of(&answer).into_iter().collect();
            if got != expected {
                problems.push(format!(
                    "{resource_type}/{id} passed: sent {expected:?}, got {got:?}"
                ));
            }
        }
        for (accept, what) in [(R5, "R5"), (STU3, "STU3")] {
            let got = read(&url, Some(accept)).await;
            if got.status != 200 {
                continue; // a type the version lacks: refused, tested in `dialects`
            }
            let extra = not_within(
                &multiset(numbers_of(&got.text())),
                &multiset(input_numbers.clone()),
            );
            if !extra.is_empty() {
                problems.push(format!("{resource_type}/{id} as {what}: {extra:?}"));
            }
        }
    }
    eprintln!(
        "official R4 examples: {checked} released and checked ({with_numbers} with numbers), {} not released",
        not_released.len()
    );
    assert!(
        problems.is_empty(),
        "{} answers with numbers not as written:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        checked * 10 >= examples.len() * 9,
        "only {checked} of {} examples released: {not_released:?}",
        examples.len()
    );
}

// ---- housekeeping ------------------------------------------------------------------------

/// Every crate of the workspace that uses serde_json takes it with `arbitrary_precision`
/// (from `[workspace.dependencies]`), read from `cargo metadata`: a crate built alone reads
/// numbers as text too, not only when feature unification happens to turn it on.
#[test]
fn every_crate_keeps_numbers_exact() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut users = Vec::new();
    let mut bad = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        for dep in package["dependencies"].as_array().unwrap() {
            if dep["name"] != "serde_json" {
                continue;
            }
            let name = package["name"].as_str().unwrap();
            users.push(name.to_owned());
            let exact = dep["features"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "arbitrary_precision"));
            if !exact {
                bad.push(format!("{name} ({})", dep["kind"]));
            }
        }
    }
    assert!(users.len() >= 8, "{users:?}");
    assert!(
        bad.is_empty(),
        "crates taking serde_json without arbitrary_precision: {bad:?}"
    );
    // And the representation itself: a number is its text.
    let value: Value =
        serde_json::from_str("[1.50, 0.010, -0, 123456789012345678901234567890.5]").unwrap();
    assert_eq!(
        value.to_string(),
        "[1.50,0.010,-0,123456789012345678901234567890.5]"
    );
}
