//! Shared helpers for the end-to-end tests: builder-style FAKE upstream FHIR servers on
//! 127.0.0.1 port 0, a raw-TCP fake for connection failures, a test gateway builder (with its
//! key file in its temporary directory), and the test identity provider (the demo's development provider on 127.0.0.1 port 0, shared by
//! every test) with tokens for sample callers.
//!
//! The fakes are not FHIR servers: each answers with whatever its handler returns, and
//! records what it received so tests can check what crossed the gateway. Two upstreams serve
//! a whole data set (`dataset.rs`): the realistic one (`realistic.rs`, a real FHIR server
//! implementation run as a Node child process) and the HOSTILE FAKE (`hostile.rs`), which
//! lies. For the Fabric
//! backend, [`FakeFabricNetwork`] runs the fabric crate's FAKE Fabric gateway peer in front of
//! the real consent chaincode server, on a runtime of its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
pub use assent_auth::dev_idp::PatientLaunch;
use assent_fabric::testing::fake::{self, FakeFabric};
use assent_fabric::testing::support;
use assent_gateway::app::{self, RunningGateway};
use assent_gateway::config::Config;
use assent_gateway::config::keys::{self, KeySpec, Secret};
use assent_gateway::demo::identity_provider::DemoIdentityProvider;
use assent_gateway::http::loopback::ThreadServer;
use serde_json::{Value, json};

pub mod dataset;
pub mod hostile;
pub mod realistic;

pub use hostile::{HostileUpstream, Lie, Lies};
pub use realistic::RealisticUpstream;

/// A request as a fake upstream saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a fake upstream answers.
#[derive(Debug, Clone)]
pub struct FakeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Option<Duration>,
}

impl FakeResponse {
    pub fn json(status: u16, body: Value) -> Self {
        FakeResponse {
            status,
            headers: vec![("content-type".into(), "application/fhir+json".into())],
            body: body.to_string().into_bytes(),
            delay: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

type Handler = dyn Fn(&SeenRequest, &str) -> FakeResponse + Send + Sync;

/// A FAKE upstream FHIR server: answers every request with its handler, given the request and
/// its own base URL (`http://127.0.0.1:PORT/fhir`).
pub struct FakeUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    _server: ThreadServer,
}

struct FakeState {
    handler: Box<Handler>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    base: String,
}

impl FakeUpstream {
    pub fn start(
        handler: impl Fn(&SeenRequest, &str) -> FakeResponse + Send + Sync + 'static,
    ) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake upstream");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(FakeState {
            handler: Box::new(handler),
            seen: seen.clone(),
            base: format!("http://{addr}/fhir"),
        });
        let server = ThreadServer::start("fake-upstream", listener, move |cfg| {
            cfg.app_data(state.clone())
                .default_service(web::route().to(fake_handle));
        })
        .expect("fake upstream starts");
        FakeUpstream {
            addr,
            seen,
            _server: server,
        }
    }

    /// Answers every request with `body` (status 200).
    pub fn always(body: Value) -> FakeUpstream {
        FakeUpstream::start(move |_, _| FakeResponse::json(200, body.clone()))
    }

    /// Serves one resource at `/{type}/{id}`; everything else is 404.
    pub fn one_resource(resource: Value) -> FakeUpstream {
        let path = format!(
            "/{}/{}",
            resource["resourceType"].as_str().unwrap_or_default(),
            resource["id"].as_str().unwrap_or_default()
        );
        FakeUpstream::start(move |req, _| {
            if req.path.ends_with(&path) {
                FakeResponse::json(200, resource.clone())
            } else {
                FakeResponse::json(404, json!({"resourceType": "OperationOutcome"}))
            }
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/fhir", self.addr)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn fake_handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<FakeState>,
) -> HttpResponse {
    let seen = SeenRequest {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.to_vec(),
    };
    let response = (state.handler)(&seen, &state.base);
    state.seen.lock().expect("lock").push(seen);
    if let Some(delay) = response.delay {
        actix_web::rt::time::sleep(delay).await;
    }
    let mut out = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(response.status).expect("valid status"),
    );
    for (n, v) in &response.headers {
        out.insert_header((n.as_str(), v.as_str()));
    }
    out.body(response.body)
}

/// A FAKE upstream at the TCP level: the first `n_drops` connections are closed as soon as a
/// request arrives, without an answer; later ones get a fixed FHIR answer. Counts connections.
pub struct DroppingUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl DroppingUpstream {
    pub fn start(n_drops: usize, body: Value) -> DroppingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let body = body.to_string();
        std::thread::spawn(move || {
            // Stops by itself: after a bounded number of connections, or when the test process ends.
            for stream in listener.incoming().take(64) {
                let Ok(mut stream) = stream else { continue };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                if n < n_drops {
                    drop(stream);
                    continue;
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        DroppingUpstream { addr, connections }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/fhir", self.addr)
    }
}

/// An address on loopback where nothing listens.
pub fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/fhir")
}

/// The audience test tokens are minted for and test gateways accept.
pub const TEST_AUDIENCE: &str = "https://assent.test/fhir";
/// The sample caller whose subject test gateways list in `admin_subjects`.
pub const ADMIN_SUBJECT: &str = "billing-service";

/// The test identity provider, started once per test process.
pub fn identity_provider() -> &'static DemoIdentityProvider {
    static PROVIDER: OnceLock<DemoIdentityProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        DemoIdentityProvider::start(TEST_AUDIENCE).expect("test identity provider starts")
    })
}

/// A token for sample caller `caller` (`dr-alice`, `dr-bob`, `nurse-carol`, `researcher-dan`,
/// `billing-service`) with `scope` (else the sample's default), `purpose` and the patient
/// launch context `patient` (a site's patient, `PatientLaunch::at(site, id)`: its `aud` is
/// that site's base; or a network patient, `PatientLaunch::network(id)`).
pub fn token(
    caller: &str,
    scope: Option<&str>,
    purpose: Option<&str>,
    patient: Option<PatientLaunch<'_>>,
) -> String {
    identity_provider()
        .provider()
        .mint(caller, scope, purpose, patient)
        .unwrap_or_else(|e| panic!("token for {caller}: {e:?}"))
}

fn cached(slot: &'static OnceLock<String>, make: impl FnOnce() -> String) -> &'static str {
    slot.get_or_init(make).as_str()
}

/// A clinician (`dr-alice`, `user/*.rs`, purpose TREAT).
pub fn clinician_token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    cached(&T, || {
        token("dr-alice", Some("openid fhirUser user/*.rs"), None, None)
    })
}

/// Another clinician (`dr-bob`, `user/*.rs`).
pub fn other_clinician_token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    cached(&T, || {
        token("dr-bob", Some("openid fhirUser user/*.rs"), None, None)
    })
}

/// An administrator with no FHIR scopes (`billing-service`, listed in `admin_subjects`).
pub fn admin_token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    cached(&T, || token(ADMIN_SUBJECT, Some("openid"), None, None))
}

/// The request log's caller id of a sample caller of the test identity provider.
pub fn caller_id(subject: &str) -> String {
    format!("{subject}@{}", identity_provider().issuer())
}

/// Builds a test gateway configuration.
pub struct TestGateway {
    config: Value,
    database_url: Option<String>,
    /// The keys written to the gateway's key file at start.
    keys: Vec<(KeySpec, Secret)>,
    _dir: tempfile::TempDir,
}

impl Default for TestGateway {
    fn default() -> Self {
        Self::new()
    }
}

impl TestGateway {
    pub fn new() -> TestGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = json!({
            "listen": "127.0.0.1:0",
            "database_url": dir.path().join("gw.db").display().to_string(),
            "gateway_id": "test-gw",
            "log": {"format": "text", "level": "warn", "access_log": false},
            "auth": {"issuers": [{
                "issuer": identity_provider().issuer(),
                "audience": [TEST_AUDIENCE],
                "algorithms": ["ES256"],
                "allow_purpose_header": true,
                "admin_subjects": [ADMIN_SUBJECT],
            }]},
            "sites": {},
        });
        TestGateway {
            config,
            database_url: None,
            keys: test_keys(),
            _dir: dir,
        }
    }

    /// Sets key `spec` (hex) in the gateway's key file.
    pub fn key(mut self, spec: KeySpec, hex_key: &str) -> TestGateway {
        self.keys.retain(|(s, _)| *s != spec);
        self.keys
            .push((spec, Secret::from_hex(hex_key).expect("hex key")));
        self
    }

    /// Leaves key `spec` out of the gateway's key file.
    pub fn without_key(mut self, spec: KeySpec) -> TestGateway {
        self.keys.retain(|(s, _)| *s != spec);
        self
    }

    /// Adds an R4 opt-out site.
    pub fn site(self, id: &str, upstream: &str) -> TestGateway {
        self.site_with(
            id,
            json!({"upstream": upstream, "fhir_version": "R4", "default_policy": "opt-out"}),
        )
    }

    /// Adds a site with the given configuration table.
    pub fn site_with(mut self, id: &str, site: Value) -> TestGateway {
        self.config["sites"][id] = site;
        self
    }

    /// Sets a key of the trusted issuer's table (`auth.issuers[0]`).
    pub fn issuer_setting(mut self, key: &str, value: Value) -> TestGateway {
        self.config["auth"]["issuers"][0][key] = value;
        self
    }

    /// Sets any top-level key.
    pub fn set(mut self, key: &str, value: Value) -> TestGateway {
        self.config[key] = value;
        self
    }

    /// Uses this database instead of a temporary SQLite file.
    pub fn database(mut self, url: &str) -> TestGateway {
        self.database_url = Some(url.to_owned());
        self
    }

    /// The configuration it starts with (the key file written), without starting it.
    pub fn config(&mut self) -> Config {
        if let Some(url) = &self.database_url {
            self.config["database_url"] = json!(url);
            // A receipt log per test database (PostgreSQL needs one named), the same for
            // every gateway a test starts on it, as a restarted gateway finds its own.
            if url.starts_with("postgres") && self.config["receipts"]["log_dir"].is_null() {
                let dir = assent_gateway::store::testing::receipt_log_dir(url);
                self.config["receipts"]["log_dir"] = json!(dir.display().to_string());
            }
        }
        let key_file = self._dir.path().join("keys.toml");
        let _ = std::fs::remove_file(&key_file);
        keys::write_key_file(&key_file, &self.keys).expect("write the test key file");
        self.config["keys"] = json!({"file": key_file.display().to_string()});
        Config::from_value(&self.config).expect("valid test configuration")
    }

    /// Starts the gateway; keep the returned value alive for as long as the test uses it.
    pub fn start(mut self) -> StartedGateway {
        let config = self.config();
        let gateway = app::spawn(config).expect("gateway starts");
        StartedGateway {
            gateway,
            _dir: self._dir,
        }
    }
}

/// A started test gateway.
pub struct StartedGateway {
    pub gateway: RunningGateway,
    _dir: tempfile::TempDir,
}

impl StartedGateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.base_url())
    }

    /// Waits (up to 20 s) until receipts 1..=`last_sequence` of gateway `gateway_id` are in
    /// batches anchored on the ledger.
    pub fn wait_for_anchors(&self, gateway_id: &str, last_sequence: i64) {
        let store = &self.gateway.state.store;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let covered = store
                .last_batch(gateway_id)
                .unwrap()
                .is_some_and(|b| b.last_sequence >= last_sequence);
            if covered && store.unanchored_batches(gateway_id).unwrap().is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "receipts were not anchored in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a test client got back.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The stable error code of an OperationOutcome answer.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
        v["issue"][0]["details"]["coding"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request with an optional bearer token, headers and body.
pub async fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Got {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish();
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.insert_header(("authorization", format!("Bearer {token}")));
    }
    for (n, v) in headers {
        request = request.insert_header((*n, *v));
    }
    let mut response = match body {
        Some(b) => request.send_body(b).await,
        None => request.send().await,
    }
    .expect("request reaches the gateway");
    let body = response
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .expect("response body");
    Got {
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.to_vec(),
    }
}

/// GET with the clinician's token.
pub async fn get(url: &str) -> Got {
    send("GET", url, Some(clinician_token()), &[], None).await
}

/// The consortium key of every test gateway (any 32 bytes, hex): gateways on one ledger or
/// one store must share it, as replicas and consortium members do.
pub const TEST_CONSORTIUM_KEY_HEX: &str =
    "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
/// The embedded ledger's node key of every test gateway: replicas sharing one store sign its
/// blocks with the same key.
pub const TEST_NODE_KEY_HEX: &str =
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// The paging secret of every test gateway.
pub const TEST_PAGING_SECRET_HEX: &str =
    "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
/// The console session secret of every test gateway.
pub const TEST_CONSOLE_SESSION_SECRET_HEX: &str =
    "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";

/// The keys of every test gateway (no webhook secret).
pub fn test_keys() -> Vec<(KeySpec, Secret)> {
    [
        (keys::CONSORTIUM, TEST_CONSORTIUM_KEY_HEX),
        (keys::NODE, TEST_NODE_KEY_HEX),
        (keys::PAGING, TEST_PAGING_SECRET_HEX),
        (keys::CONSOLE_SESSION, TEST_CONSOLE_SESSION_SECRET_HEX),
    ]
    .into_iter()
    .map(|(spec, hex_key)| (spec, Secret::from_hex(hex_key).expect("hex")))
    .collect()
}

/// Writes the test gateways' key file (mode 0600) into `dir`; its path, for a configuration
/// file's `[keys] file`.
pub fn write_test_key_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("keys.toml");
    keys::write_key_file(&path, &test_keys()).expect("write the test key file");
    path
}

/// A FAKE Fabric network on loopback: the consent chaincode server (the real one, speaking
/// the shim protocol) and the fabric crate's FAKE gateway peer in front of it, over TLS with
/// a throwaway CA, on a runtime of their own; and the files a gateway's `[ledger.fabric]`
/// names (TLS CA, an enrolment certificate and key per organization made for this run). Two
/// organizations, `Org1MSP` and `Org2MSP`, each with its own gateway peer. Stops when
/// dropped.
pub struct FakeFabricNetwork {
    fake: Option<FakeFabric>,
    chaincode: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    files: tempfile::TempDir,
}

impl FakeFabricNetwork {
    pub fn start() -> FakeFabricNetwork {
        // Its own thread: the caller may be on an async runtime, where blocking is refused.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("fake-fabric")
                .enable_all()
                .build()
                .expect("the fake Fabric's runtime");
            let (fake, chaincode, client_tls) = runtime.block_on(async {
                let (addr, stop) = support::start_chaincode().await;
                let (server_tls, client_tls) = support::tls_pair();
                let fake = FakeFabric::start(addr, Some(server_tls)).await;
                (fake, stop, client_tls)
            });
            let files = tempfile::tempdir().expect("tempdir");
            std::fs::write(files.path().join("tls-ca.pem"), &client_tls.ca_pem).expect("write");
            // An enrolment of each organization's gateway.
            for msp in [fake::MSP, fake::MSP2] {
                let (cert, key) = support::p256_pem(&format!("assent-gateway.{msp}"));
                std::fs::write(files.path().join(format!("{msp}-cert.pem")), cert).expect("write");
                std::fs::write(files.path().join(format!("{msp}-key.pem")), key).expect("write");
            }
            FakeFabricNetwork {
                fake: Some(fake),
                chaincode: Some(chaincode),
                runtime: Some(runtime),
                files,
            }
        })
        .join()
        .expect("the fake Fabric starts")
    }

    /// The fake gateway peer (what it saw; breaking its event streams).
    pub fn fake(&self) -> &FakeFabric {
        self.fake.as_ref().expect("running")
    }

    /// The `[ledger]` table of a gateway on this network (organization `Org1MSP`).
    pub fn ledger_config(&self) -> Value {
        self.ledger_config_of(fake::MSP)
    }

    /// The `[ledger]` table of a gateway of organization `msp` (`Org1MSP` or `Org2MSP`): its
    /// own organization's gateway peer and enrolment.
    pub fn ledger_config_of(&self, msp: &str) -> Value {
        let file = |name: &str| self.files.path().join(name).display().to_string();
        json!({
            "backend": "fabric",
            "fabric": {
                "peer_endpoint": self.fake().endpoint_of(msp),
                "tls_ca_file": file("tls-ca.pem"),
                "tls_server_name": "localhost",
                "msp_id": msp,
                "cert_file": file(&format!("{msp}-cert.pem")),
                "key_file": file(&format!("{msp}-key.pem")),
                "channel": fake::CHANNEL,
                "chaincode": fake::CHAINCODE,
            },
        })
    }

    /// The `node_settings` entry a gateway on this network keeps its events checkpoint in.
    pub fn checkpoint_setting(&self) -> String {
        format!(
            "ledger_events_checkpoint:fabric:{}:{}",
            fake::CHANNEL,
            fake::CHAINCODE
        )
    }
}

impl Drop for FakeFabricNetwork {
    fn drop(&mut self) {
        drop(self.fake.take());
        drop(self.chaincode.take());
        if let Some(runtime) = self.runtime.take() {
            // Allowed on an async runtime, unlike dropping it.
            runtime.shutdown_background();
        }
    }
}
