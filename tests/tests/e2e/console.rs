//! The compliance console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, with `fantoccini`). The test signs in at the test identity provider
//! (authorization code with PKCE), filters the access log (a practitioner by plain id), sees
//! names beside ids (the practitioner's from their token, the patient's from their consent),
//! reads
//! readable timestamps, sees the table fit a 900 px window, opens a receipt and sees that it
//! verifies, downloads the CSV and NDJSON exports of the filter and checks their rows, and keeps a
//! screenshot of the log and of the receipt (`target/tmp/console-screenshot.png`,
//! `target/tmp/console-receipt-screenshot.png`). Plus the console's refusals without a
//! browser: no session, a forged session, a callback without the sign-in cookie.
//!
//! chromedriver is started by the test on a free loopback port and killed when the test
//! ends. Without chromedriver (Debian packages `chromium`, `chromium-driver`) the browser
//! test fails under CI and is skipped, loudly, elsewhere.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assent_e2e::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A FAKE upstream: Patient/p1 exists, everything else is 404.
fn hospital() -> FakeUpstream {
    FakeUpstream::one_resource(
        json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"}}),
    )
}

fn gateway(upstream: &FakeUpstream) -> StartedGateway {
    TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .set("receipts", json!({"batch_max_receipts": 1, "batch_max_wait_ms": 20}))
        .set("audit", json!({"console": {"client_id": "assent-console"}}))
        .start()
}

/// chromedriver on a free loopback port, killed on drop.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub(crate) fn start(binary: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session with headless Chromium at `window` (`1400,1000`), downloading into
/// `downloads` when given.
pub(crate) async fn chromium(driver: &Driver, window: &str, downloads: Option<&Path>) -> Client {
    let mut chrome = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 format!("--window-size={window}")],
    });
    if let Some(downloads) = downloads {
        chrome["prefs"] = json!({
            "download.default_directory": downloads.display().to_string(),
            "download.prompt_for_download": false,
        });
    }
    if let Some(binary) = find_binary(&["chromium", "chromium-browser", "google-chrome"]) {
        chrome["binary"] = json!(binary.display().to_string());
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), chrome);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with headless Chromium")
}

pub(crate) fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

pub(crate) async fn text_of(client: &Client, css: &str) -> String {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_compliance_officer_signs_in_filters_verifies_and_exports_in_chromium() {
    let Some(chromedriver) = find_binary(&["chromedriver"]) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is missing under CI (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: no chromedriver on PATH (apt-get install chromium chromium-driver)");
        return;
    };
    let upstream = hospital();
    let gw = gateway(&upstream);
    // p1's consent at St Mary's names the patient (`patient.display`): the console shows the
    // name beside the id. It permits everyone but a practitioner of no access below.
    let mut named = crate::consent::consent("c-p1", "p1", "dr-nobody", false);
    named["patient"]["display"] = json!("Jane Doe");
    let stored = crate::consent::put_consent(&gw, "st-mary", &named).await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    let mut ids = Vec::new();
    for (path, token) in [
        ("/fhir/st-mary/Patient/p1", clinician_token()),
        ("/fhir/north-general/Patient/p1", clinician_token()),
        ("/fhir/st-mary/Patient/p1", other_clinician_token()),
        ("/fhir/st-mary/Patient/p2", clinician_token()),
    ] {
        let got = send("GET", &gw.url(path), Some(token), &[], None).await;
        ids.push(got.header("x-assent-receipt").unwrap().to_owned());
    }
    // Anchored (batches of one), so that the receipt verifies against the ledger.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw
        .gateway
        .state
        .store
        .unanchored_batches("test-gw")
        .unwrap()
        .is_empty()
        || gw
            .gateway
            .state
            .store
            .last_batch("test-gw")
            .unwrap()
            .is_none_or(|b| b.last_sequence < 5)
    {
        assert!(Instant::now() < deadline, "not anchored in time");
        std::thread::sleep(Duration::from_millis(20));
    }

    let downloads = tempfile::tempdir().unwrap();
    let driver = Driver::start(&chromedriver);
    let client = chromium(&driver, "1400,1000", Some(downloads.path())).await;

    let outcome = drive(&client, &gw, &ids, downloads.path()).await;
    let _ = client.close().await;
    drop(driver);
    outcome.unwrap();
}

async fn drive(
    client: &Client,
    gw: &StartedGateway,
    ids: &[String],
    downloads: &Path,
) -> Result<(), String> {
    let base = gw.gateway.base_url();
    // Signed out: the sign-in page.
    client
        .goto(&format!("{base}/console/"))
        .await
        .map_err(|e| e.to_string())?;
    client
        .find(Locator::Id("sign-in"))
        .await
        .map_err(|e| format!("sign-in link: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    // The identity provider's page: pick the privacy officer.
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("as-privacy-officer"))
        .await
        .map_err(|e| format!("identity provider page: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let who = text_of(client, "#signed-in-as").await;
    assert_eq!(who, caller_id("privacy-officer"));
    // The four reads and the consent's storing.
    assert_eq!(text_of(client, "#result-count").await, "5");
    assert_eq!(text_of(client, "#result-total").await, "5");

    // Filter: dr-alice's accesses at St Mary's.
    let field = client
        .find(Locator::Id("f-practitioner"))
        .await
        .map_err(|e| e.to_string())?;
    // A plain id: the console reads it as Practitioner/dr-alice.
    field
        .send_keys("dr-alice")
        .await
        .map_err(|e| e.to_string())?;
    client
        .find(Locator::Id("f-site"))
        .await
        .map_err(|e| e.to_string())?
        .select_by_value("st-mary")
        .await
        .map_err(|e| e.to_string())?;
    client
        .find(Locator::Id("apply"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = client.current_url().await.map_err(|e| e.to_string())?;
        if url
            .query()
            .is_some_and(|q| q.contains("practitioner=dr-alice"))
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the filter was not applied: {url}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(text_of(client, "#result-count").await, "2");
    assert_eq!(text_of(client, "#result-total").await, "2");
    let table = text_of(client, "#results").await;
    assert!(
        !table.contains("north-general") && !table.contains("dr-bob"),
        "{table}"
    );

    // Names beside ids: dr-alice's from her token, p1's from the consent; p2 has none.
    let rows = client
        .find_all(Locator::Css("#results tbody tr"))
        .await
        .map_err(|e| e.to_string())?;
    let mut cells = Vec::new();
    for row in &rows {
        let who = row
            .find(Locator::Css("td:nth-child(2)"))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let patient = row
            .find(Locator::Css("td:nth-child(3)"))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        cells.push((who, patient));
    }
    // Newest first: p2, then p1.
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        cells
            .iter()
            .map(|(w, p)| (flat(w), flat(p)))
            .collect::<Vec<_>>(),
        [
            (
                "Alice Adams Practitioner/dr-alice".to_owned(),
                "st-mary/Patient/p2".to_owned()
            ),
            (
                "Alice Adams Practitioner/dr-alice".to_owned(),
                "Jane Doe st-mary/Patient/p1".to_owned()
            ),
        ]
    );

    // Readable timestamps, the exact instant kept in the `time` element.
    let shown = client
        .find(Locator::Css("#results tbody time"))
        .await
        .map_err(|e| e.to_string())?;
    let exact = shown
        .attr("datetime")
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let readable = shown.text().await.map_err(|e| e.to_string())?;
    assert!(exact.ends_with('Z') && exact.contains('T'), "{exact}");
    assert!(
        readable.ends_with(" UTC")
            && readable.contains(", ")
            && readable.contains(&exact[11..19])
            && !readable.contains(&exact[..10]),
        "{readable} for {exact}"
    );
    // The table fits a 900 px window: nothing scrolls sideways.
    client
        .set_window_size(900, 1000)
        .await
        .map_err(|e| e.to_string())?;
    let widths = client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth, \
             document.getElementById('results').getBoundingClientRect().right];",
            vec![],
        )
        .await
        .map_err(|e| e.to_string())?;
    let widths: Vec<f64> = widths
        .as_array()
        .ok_or("widths")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    assert!(widths[1] <= 900.0, "{widths:?}");
    assert!(
        widths[0] <= widths[1] && widths[2] <= widths[1],
        "the page or the table is wider than the window: {widths:?}"
    );

    // The screenshot of the filtered log.
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshot.png");
    std::fs::write(&shot, &png).map_err(|e| e.to_string())?;
    println!("console screenshot: {}", shot.display());
    assert!(png.starts_with(b"\x89PNG"), "a PNG");

    // Download the filter as CSV.
    client
        .find(Locator::Id("export-csv"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let file = downloads.join("receipts.csv");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !file.is_file() {
        if Instant::now() > deadline {
            return Err(format!("no download in {}", downloads.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let csv = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("receipt_id,"), "{csv}");
    assert_eq!(
        rows.len(),
        3,
        "the header and dr-alice's two accesses at St Mary's: {csv}"
    );
    assert!(
        rows[1].starts_with(&ids[0]) && rows[2].starts_with(&ids[3]),
        "{csv}"
    );
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.contains("Practitioner/dr-alice"))
    );

    // Download the filter as NDJSON (what `assent verify` checks).
    client
        .find(Locator::Id("export-ndjson"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let file = downloads.join("receipts.ndjson");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !file.is_file() {
        if Instant::now() > deadline {
            return Err(format!("no NDJSON download in {}", downloads.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ndjson = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    let lines: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        lines.len(),
        2,
        "dr-alice's two accesses at St Mary's: {ndjson}"
    );
    assert!(
        ndjson.contains(&ids[0]) && ndjson.contains(&ids[3]) && !ndjson.contains(&ids[2]),
        "{ndjson}"
    );

    // Open the oldest shown receipt: it verifies.
    let links = client
        .find_all(Locator::Css("a.receipt-link"))
        .await
        .map_err(|e| e.to_string())?;
    links
        .last()
        .ok_or("no receipt link")?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let verdict = text_of(client, "#verification").await;
    assert!(verdict.contains("This receipt verifies"), "{verdict}");
    assert_eq!(
        text_of(client, "#practitioner").await,
        "Alice Adams Practitioner/dr-alice"
    );
    assert_eq!(
        text_of(client, "#patients").await,
        "Jane Doe st-mary/Patient/p1"
    );
    let checks = text_of(client, "#checks").await;
    assert_eq!(checks.matches("holds").count(), 4, "{checks}");
    let anchor = text_of(client, "#anchor").await;
    assert!(anchor.contains("Ledger transaction"), "{anchor}");
    let url = client.current_url().await.map_err(|e| e.to_string())?;
    assert!(url.path().ends_with(&ids[0]), "{url}");
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-receipt-screenshot.png");
    std::fs::write(&shot, &png).map_err(|e| e.to_string())?;
    println!("console receipt screenshot: {}", shot.display());

    // "Verify this export" for the filter: checked on the server, every receipt holds.
    client.back().await.map_err(|e| e.to_string())?;
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("verify-export"))
        .await
        .map_err(|e| format!("verify link: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let verdict = text_of(client, "#export-verdict").await;
    assert!(
        verdict.contains("Every receipt of this export verifies"),
        "{verdict}"
    );
    assert_eq!(text_of(client, "#export-receipts").await, "2");
    Ok(())
}

/// Without a browser: what the console refuses.
#[actix_web::test]
async fn the_console_refuses_without_a_valid_session() {
    let upstream = hospital();
    let gw = gateway(&upstream);
    let page = send("GET", &gw.url("/console/"), None, &[], None).await;
    assert_eq!(page.status, 401);
    assert!(page.text().contains("Sign in"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let forged = send(
        "GET",
        &gw.url("/console/export.csv"),
        None,
        &[(
            "cookie",
            "assent_console=cHJpdmFjeS1vZmZpY2Vy.OTk5OTk5OTk5OQ.AAAA",
        )],
        None,
    )
    .await;
    assert_eq!(forged.status, 401, "a forged session cookie opens nothing");
    assert!(!forged.text().contains("receipt_id"));
    let callback = send(
        "GET",
        &gw.url("/console/callback?code=x&state=y"),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(callback.status, 403, "no sign-in cookie, no session");
    assert_eq!(callback.header("set-cookie"), None);
    // The sign-in redirect carries PKCE (S256), state and nonce, and sets the sign-in cookie.
    let login = send("GET", &gw.url("/console/login"), None, &[], None).await;
    assert_eq!(login.status, 302);
    let location = url::Url::parse(login.header("location").unwrap()).unwrap();
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["client_id"], "assent-console");
    assert!(params.contains_key("state") && params.contains_key("nonce"));
    assert_eq!(params["redirect_uri"], gw.url("/console/callback"));
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    // Not configured: 404, as a page.
    let plain = TestGateway::new().start();
    let absent = send("GET", &plain.url("/console/"), None, &[], None).await;
    assert_eq!(absent.status, 404);
    assert!(
        absent
            .header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        absent.header("content-type")
    );
    assert!(absent.text().contains("Not found"), "{}", absent.text());
}

/// Adversarial, without a browser: at the identity provider's sign-in page a clinician picks
/// itself while the console asks for the audit role. The provider grants dr-alice only her own
/// scopes, so the console refuses her (403, a page); the privacy officer is let in.
#[actix_web::test]
async fn a_clinician_signing_in_to_the_console_is_not_granted_the_audit_role() {
    let upstream = hospital();
    let gw = gateway(&upstream);
    let alice = console_sign_in(&gw, "dr-alice").await;
    assert_eq!(alice.status, 403, "{}", alice.text());
    assert!(
        alice.text().contains("does not have the audit role"),
        "{}",
        alice.text()
    );
    assert!(
        alice
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        alice
            .header("set-cookie")
            .is_none_or(|c| !c.starts_with("assent_console=")),
        "no session for dr-alice"
    );
    let officer = console_sign_in(&gw, "privacy-officer").await;
    assert_eq!(officer.status, 200, "{}", officer.text());
    assert!(
        officer.text().contains(&caller_id("privacy-officer")),
        "{}",
        officer.text()
    );

    // Signed in, the console's own errors are pages, not OperationOutcomes.
    let session = session_cookie(&officer);
    let page = |path: &'static str| {
        let url = gw.url(path);
        let session = session.clone();
        async move { send("GET", &url, None, &[("cookie", &session)], None).await }
    };
    let unknown = page("/console/receipts/no-such-receipt").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert!(
        unknown
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        unknown.text().contains("Not found") && unknown.text().contains("id=\"error-code\""),
        "{}",
        unknown.text()
    );
    assert!(!unknown.text().contains("resourceType"));
    // A patient's plain id without a site: the page says to choose one.
    let bare = page("/console/?patient=p1").await;
    assert_eq!(bare.status, 400, "{}", bare.text());
    assert!(bare.text().contains("needs a site"), "{}", bare.text());
    let bad_export = page("/console/export.ndjson?patient=p1").await;
    assert_eq!(bad_export.status, 400);
    assert!(
        bad_export
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    // "Verify this export" of the whole log (the console's own reads so far): all hold.
    let verified = page("/console/verify").await;
    assert_eq!(verified.status, 200, "{}", verified.text());
    assert!(
        verified
            .text()
            .contains("Every receipt of this export verifies"),
        "{}",
        verified.text()
    );
}

/// Signs in to the console at the test identity provider as sample caller `who`: the
/// answer to the sign-in callback.
async fn console_sign_in(gw: &StartedGateway, who: &str) -> Got {
    let login = send("GET", &gw.url("/console/login"), None, &[], None).await;
    assert_eq!(login.status, 302);
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let authorize = format!("{}&login_as={who}", login.header("location").unwrap());
    let picked = send("GET", &authorize, None, &[], None).await;
    assert_eq!(picked.status, 302, "{}", picked.text());
    let callback = picked.header("location").unwrap().to_owned();
    send("GET", &callback, None, &[("cookie", &cookie)], None).await
}

/// Signs in to the console as sample caller `who`; its session cookie.
async fn console_session(gw: &StartedGateway, who: &str) -> String {
    let signed_in = console_sign_in(gw, who).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    session_cookie(&signed_in)
}

/// The console session cookie a signed-in answer sets.
fn session_cookie(signed_in: &Got) -> String {
    signed_in
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("assent_console="))
        .expect("a session cookie")
}

/// A network patient in the console's patient filter (its id, or `network/Patient/{id}`)
/// shows the accesses to every site patient linked to it, at every site, and nobody else's;
/// the export of that filter holds the same rows.
#[actix_web::test]
async fn the_console_shows_a_network_patients_accesses_across_sites() {
    let upstream = hospital();
    let site = |policy: &str| {
        json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": policy,
            "patient_identifier_systems": ["urn:test:nid"], "network_identifier_systems": ["urn:test:nid"]})
    };
    let gw = TestGateway::new()
        .site_with("st-mary", site("opt-out"))
        .site_with("north-general", site("opt-out"))
        .set("audit", json!({"console": {"client_id": "assent-console"}}))
        .start();
    let network = &gw.gateway.state.network;
    let now = gw.gateway.state.clock.now_millis();
    let nid = network
        .learn("st-mary", "p1", [("urn:test:nid", "42")], now)
        .unwrap()
        .network_id
        .unwrap();
    network
        .learn("north-general", "p1", [("urn:test:nid", "42")], now)
        .unwrap();
    for path in [
        "/fhir/st-mary/Patient/p1",
        "/fhir/north-general/Patient/p1",
        "/fhir/st-mary/Patient/p2",
    ] {
        send("GET", &gw.url(path), Some(clinician_token()), &[], None).await;
    }
    let session = console_session(&gw, "privacy-officer").await;
    for filter in [nid.clone(), format!("network%2FPatient%2F{nid}")] {
        let page = send(
            "GET",
            &gw.url(&format!("/console/?patient={filter}")),
            None,
            &[("cookie", &session)],
            None,
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        assert!(text.contains("st-mary/Patient/p1"), "{text}");
        assert!(text.contains("north-general/Patient/p1"), "{text}");
        assert!(!text.contains("st-mary/Patient/p2"), "{text}");
        let export = send(
            "GET",
            &gw.url(&format!("/console/export.csv?patient={filter}")),
            None,
            &[("cookie", &session)],
            None,
        )
        .await;
        assert_eq!(export.status, 200, "{}", export.text());
        let csv = export.text();
        assert!(
            csv.contains("north-general") && csv.contains("st-mary"),
            "{csv}"
        );
        assert!(!csv.contains("Patient/p2"), "{csv}");
    }
    // An id of the network form that names no network patient is refused, not widened.
    let unknown = send(
        "GET",
        &gw.url(&format!("/console/?patient=n-{}", "0".repeat(40))),
        None,
        &[("cookie", &session)],
        None,
    )
    .await;
    assert_eq!(unknown.status, 400, "{}", unknown.text());
}
