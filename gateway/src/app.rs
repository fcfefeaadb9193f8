//! The app facade: builds the gateway's shared state from a [`Config`], starts the HTTP
//! server, and hands back a [`RunningGateway`] that tests, the demo and `serve` use alike.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_service::{IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, web};

use crate::http::caller::{AuthSetupError, Authenticator};
use crate::services::anchoring::Anchoring;
use crate::services::break_glass::Notifier;

use crate::api::console::Console;
use crate::api::portal::Portal;
use crate::config::keys::MissingKeys;
use crate::config::{Config, LedgerBackend};
use crate::http::connection;
use crate::http::observability::{self, Metrics};
use crate::http::paging::PageSigner;
pub use crate::http::state::AppState;
use crate::routes;
use crate::services::adapters::{AdapterLoadError, Adapters};
use crate::services::consent::{Backend, ConsentService};
use crate::services::keys::{ConsortiumKeyCheckError, DatabaseKeysError};
use crate::services::receipts::ReceiptWriter;
use crate::services::request_log::Recorder;
use crate::services::upstream::WorkerClients;
use crate::services::upstream::{Site, SiteSetupError};
use crate::store::{SiteRow, Store, StoreError};

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Site(#[from] SiteSetupError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// A site adapter is broken: the gateway does not start with it.
    #[error(transparent)]
    Adapter(#[from] AdapterLoadError),
    #[error("openapi/openapi.yaml is not valid: {0}")]
    OpenApi(String),
    #[error("cannot listen on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("the consent ledger cannot open: {0}")]
    Consent(String),
    #[error("the server thread failed to start")]
    Thread,
    #[error(transparent)]
    SignIn(#[from] crate::api::signin::SignInSetupError),
    /// Keys the configuration needs are in neither the key file nor the environment.
    #[error(transparent)]
    Keys(#[from] MissingKeys),
    /// The database holds keys an older version kept there (they are not used).
    #[error(transparent)]
    KeysInDatabase(#[from] DatabaseKeysError),
    /// The consortium key is not the one the store was written with.
    #[error(transparent)]
    ConsortiumKey(#[from] ConsortiumKeyCheckError),
    /// The receipt log cannot open, or what it holds cannot be copied into the store.
    #[error(transparent)]
    Receipts(#[from] crate::services::receipts::StartError),
    /// PostgreSQL as the store and no `[receipts] log_dir`.
    #[error(
        "receipts.log_dir: required with a PostgreSQL store (a directory on this host's own disk)"
    )]
    NoReceiptLog,
}

impl StartError {
    /// Whether the operator's configuration (or key file) is at fault: `assent serve` exits
    /// 64 for these, as for any bad configuration.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            StartError::Adapter(_)
                | StartError::Keys(_)
                | StartError::KeysInDatabase(DatabaseKeysError::Present { .. })
                | StartError::ConsortiumKey(ConsortiumKeyCheckError::Mismatch { .. })
                | StartError::NoReceiptLog
        )
    }
}

/// The browser sign-ins: the console's, when `audit.console` is configured, and the patient
/// portal's, when `[portal]` is.
#[derive(Clone, Default)]
pub struct SignIns {
    console: Option<web::Data<Console>>,
    portal: Option<web::Data<Portal>>,
}

/// Builds the state every handler is given: opens the store, checks the keys (none in the store, every one the configuration needs
/// in the key file or the environment), discovers the trusted issuers, mirrors the sites
/// into the store, and prepares every site. `bound` is the address the server listens on:
/// the public base when no `public_url` is configured. An issuer that cannot be discovered
/// stops the start.
pub async fn build_state(
    config: Config,
    bound: SocketAddr,
) -> Result<(AppState, SignIns), StartError> {
    let adapters = Adapters::load(&config)?;
    // The whose-data tables of every FHIR version, read now rather than on a first request.
    assent_fhir::compartment::preload();
    let store = Store::open(&config.database_url)?;
    crate::services::keys::check_database_holds_no_keys(&store)?;
    let keys = config.key_material.require(&config)?;
    log_key_sources(&config);
    let site_ids: Vec<&str> = config.sites.keys().map(String::as_str).collect();
    let mut callers = Authenticator::discover(&config.auth, &site_ids).await?;
    callers.keep_names(store.clone());
    let public_base = config.public_base_for(bound);
    let mut sites = HashMap::new();
    for (id, site_config) in &config.sites {
        let site = Site::new(id, site_config.clone(), &public_base, &site_ids)?;
        sites.insert(id.clone(), Arc::new(site));
    }
    let clock: Arc<dyn assent_ledger::Clock> = Arc::new(assent_ledger::SystemClock);
    let now_ms = clock.now_millis();
    let rows: Vec<SiteRow> = config
        .sites
        .iter()
        .map(|(id, s)| SiteRow {
            id: id.clone(),
            upstream_base_url: s.upstream.to_string(),
            fhir_version: s.fhir_version.name().to_owned(),
            default_policy: s.default_policy.as_str().to_owned(),
            config_json: site_config_json(s),
            updated_at_ms: now_ms,
        })
        .collect();
    store.replace_sites(&rows)?;
    let ttl = Duration::from_secs(config.paging.ttl_secs);
    let signer = PageSigner::new(keys.paging.bytes().to_vec(), ttl);
    let metrics = Metrics::new();
    let recorder = Recorder::start(
        store.clone(),
        config.gateway_id.clone(),
        metrics.request_log_dropped.clone(),
    );
    let openapi_json = routes::openapi_json().map_err(StartError::OpenApi)?;
    let console = match &config.audit.console {
        Some(c) => Some(web::Data::new(
            Console::start(
                c,
                config.auth.issuers.first().map(|i| &i.issuer),
                &public_base,
                keys.console_session.clone(),
            )
            .await?,
        )),
        None => None,
    };
    let portal = match &config.portal {
        Some(p) => Some(web::Data::new(
            Portal::start(
                p,
                config.auth.issuers.first().map(|i| &i.issuer),
                &public_base,
                keys.console_session.clone(),
            )
            .await?,
        )),
        None => None,
    };
    let consents = open_consents(&config, &store)?;
    metrics
        .registry
        .register(Box::new(consents.documents_unverified_counter()))
        .unwrap_or_else(|e| unreachable!("each metric is registered once: {e}"));
    let ledger = consents.ledger();
    let log_dir = config
        .receipts
        .log_dir_for(&config.database_url, &config.gateway_id)
        .ok_or(StartError::NoReceiptLog)?;
    let receipts = ReceiptWriter::start(&store, &config.gateway_id, &log_dir)?;
    Anchoring {
        store: store.clone(),
        ledger: ledger.clone(),
        gateway_id: config.gateway_id.clone(),
        gateway_key: consents.key().gateway(&config.gateway_id),
        config: config.receipts.batch_config(),
        committed: receipts.committed(),
        feed: receipts.feed(),
    }
    .spawn()
    .map_err(|_| StartError::Thread)?;
    crate::services::cache_fanout::start(&consents, &config.cache, metrics.cache_fanout.clone())
        .map_err(|e| StartError::Consent(e.to_string()))?;
    let break_glass = Notifier::start(
        &config.break_glass,
        keys.webhook.clone(),
        metrics.break_glass.clone(),
    );
    let network = Arc::new(crate::services::network::NetworkIndex::new(
        store.clone(),
        consents.key().clone(),
        &config,
    ));
    network.start_learning(crate::services::network_learner::Learner::start(
        network.detached(),
        crate::services::network_learner::LinkEffects {
            receipts: receipts.sender(),
            consents: consents.clone(),
            gateway_id: config.gateway_id.clone(),
        },
        metrics.network_learn_dropped.clone(),
    ));
    let state = AppState {
        network,
        receipts,
        adapters,
        consents,
        ledger,
        break_glass,
        identities: Default::default(),
        statements: Default::default(),
        clock,
        callers,
        public_base,
        sites,
        store,
        signer,
        metrics,
        recorder,
        openapi_json,
        config,
    };
    Ok((state, SignIns { console, portal }))
}

/// Says where each key came from (never the key).
fn log_key_sources(config: &Config) {
    let material = &config.key_material;
    let sources: Vec<String> = crate::config::keys::ALL
        .iter()
        .filter_map(|spec| {
            material
                .source(*spec)
                .map(|source| format!("{} from {source}", spec.name))
        })
        .collect();
    tracing::info!(keys = %sources.join(", "), "keys loaded");
}

/// Opens the consent service on the configured ledger: the embedded ledger over the store,
/// signed with the node key; or the Fabric channel of `[ledger.fabric]`. The keys come from the
/// key file or the environment (`keys.rs`); a store holding keys of an older version, or
/// written under another consortium key, is refused.
pub fn open_consents(config: &Config, store: &Store) -> Result<Arc<ConsentService>, StartError> {
    crate::services::keys::check_database_holds_no_keys(store)?;
    let keys = config.key_material.require_ledger(config)?;
    crate::services::keys::check_consortium_key(
        store,
        &keys.consortium,
        config.key_material.source(crate::config::keys::CONSORTIUM),
    )?;
    let backend = match (config.ledger.backend, &config.ledger.fabric_connection) {
        // Loaded with the configuration (`config/ledger.rs`).
        (LedgerBackend::Fabric, Some(connection)) => Backend::Fabric(Box::new(connection.clone())),
        (LedgerBackend::Fabric, None) => {
            return Err(StartError::Consent(
                "backend = \"fabric\" without [ledger.fabric]".into(),
            ));
        }
        (LedgerBackend::Embedded, _) => {
            // `require_ledger` gives the embedded backend its node seed.
            let Some(node_seed) = keys.node_seed else {
                return Err(StartError::Consent("no node key".into()));
            };
            Backend::Embedded { node_seed }
        }
    };
    let embedded = config.ledger.backend == LedgerBackend::Embedded;
    ConsentService::open(store.clone(), keys.consortium.bytes(), backend).map_err(|e| {
        let hint = if embedded && e.to_string().contains("signature") {
            " (is `node_key_hex` the key this ledger's blocks were signed with?)"
        } else {
            ""
        };
        StartError::Consent(format!("{e}{hint}"))
    })
}

/// The site configuration as stored, without secrets.
fn site_config_json(site: &crate::config::SiteConfig) -> String {
    let mut value = serde_json::to_value(site).unwrap_or_default();
    if let Some(auth) = value
        .get_mut("upstream_auth")
        .and_then(|a| a.as_object_mut())
    {
        for secret in ["token", "client_secret"] {
            if auth.contains_key(secret) {
                auth.insert(secret.into(), "<redacted>".into());
            }
        }
    }
    value.to_string()
}

/// A gateway serving on its own thread.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub state: web::Data<AppState>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningGateway {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until every request log row queued so far is in the store.
    pub fn flush_records(&self) {
        self.state.recorder.flush();
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(thread) = self.thread.take() {
            let handle = self.handle.clone();
            // The handle's future completes once the server has stopped.
            let _ = std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(handle.stop(true));
            })
            .join();
            let _ = thread.join();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Binds `addr` (port 0 picks a free port).
fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |e: std::io::Error| StartError::Bind {
        addr,
        message: e.to_string(),
    };
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Builds the HTTP server over `state` on `listener`.
///
/// Assembled as actix-web's `HttpServer` assembles it (actix-server's workers and shutdown,
/// actix-http's HTTP/1 service with the same keep-alive and timeouts, the graceful-shutdown
/// signal), with one difference: every connection is served through
/// [`connection::Connection`], which answers actix-http's own refusals (unreadable request,
/// head too large, head too slow) with OperationOutcomes.
fn server(
    state: web::Data<AppState>,
    console: SignIns,
    listener: TcpListener,
    workers: usize,
) -> Result<actix_web::dev::Server, StartError> {
    let addr = listener.local_addr().map_err(|e| StartError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        message: e.to_string(),
    })?;
    let builder = actix_server::Server::build()
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(5);
    let graceful = builder.graceful_shutdown_signal();
    let host = addr.to_string();
    let builder = builder
        .listen("assent-http", listener, move || {
            let app = app(state.clone(), console.clone())
                .into_factory()
                .map_err(|e| e.error_response());
            let host = host.clone();
            let app = actix_service::map_config(app, move |_| {
                // What HttpServer gives the app: not secure, the bound address as host.
                actix_web::dev::AppConfig::__priv_test_new(false, host.clone(), addr)
            });
            let graceful = graceful.clone();
            let http = actix_http::HttpService::build()
                .graceful_shutdown_signal(move || {
                    let graceful = graceful.clone();
                    async move { graceful.notified().await }
                })
                .keep_alive(actix_http::KeepAlive::default())
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .on_connect_ext(connection::on_connect)
                .h1(app);
            actix_service::fn_service(|io: actix_web::rt::net::TcpStream| {
                let connection = connection::Connection::new(io);
                let peer = connection.peer_addr();
                std::future::ready(Ok::<_, actix_http::error::DispatchError>((
                    connection, peer,
                )))
            })
            .and_then(http)
        })
        .map_err(|e| StartError::Bind {
            addr,
            message: e.to_string(),
        })?;
    Ok(builder.run())
}

/// How long a client has to send a whole request head (actix-http's default, as
/// `HttpServer` sets it); a slower head is answered 408 `request-head-timeout`.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The application one worker serves.
fn app(
    state: web::Data<AppState>,
    signins: SignIns,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let clients = web::Data::new(WorkerClients::new(&state.sites));
    let mut app = App::new().app_data(state).app_data(clients);
    if let Some(console) = &signins.console {
        app = app.app_data(console.clone());
    }
    if let Some(portal) = &signins.portal {
        app = app.app_data(portal.clone());
    }
    app.wrap_fn(|mut req, srv| {
        connection::mark_reached_app(&req);
        routes::head_as_get(&mut req);
        let id = observability::assign_request_id(&req);
        let fut = srv.call(req);
        async move {
            let mut res = fut.await?;
            res.headers_mut().insert(
                observability::REQUEST_ID.clone(),
                observability::request_id_header(&id),
            );
            Ok(res)
        }
    })
    .configure(routes::configure)
}

/// Starts a gateway for `config` on its own thread, listening on `config.listen`.
pub fn spawn(config: Config) -> Result<RunningGateway, StartError> {
    spawn_with_workers(config, 1)
}

/// Like [`spawn`] with `workers` worker threads.
pub fn spawn_with_workers(config: Config, workers: usize) -> Result<RunningGateway, StartError> {
    let (listener, _) = bind(config.listen)?;
    spawn_on(config, listener, workers)
}

/// Like [`spawn_with_workers`] on a listener bound beforehand (the demo binds first so that its
/// identity provider knows the gateway's address).
pub fn spawn_on(
    config: Config,
    listener: TcpListener,
    workers: usize,
) -> Result<RunningGateway, StartError> {
    let bound = listener.local_addr().map_err(|e| StartError::Bind {
        addr: config.listen,
        message: e.to_string(),
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The state is built on the server's own runtime: issuer discovery is async, and the
    // HTTP client it leaves behind lives as long as the server.
    let thread = std::thread::Builder::new()
        .name("assent-http".into())
        .spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let (state, console) = match build_state(config, bound).await {
                    Ok((state, console)) => (web::Data::new(state), console),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                match server(state.clone(), console, listener, workers) {
                    Ok(server) => {
                        let _ = tx.send(Ok((server.handle(), state)));
                        let _ = server.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|_| StartError::Thread)?;
    let (handle, state) = rx.recv().map_err(|_| StartError::Thread)??;
    Ok(RunningGateway {
        addr: bound,
        state,
        handle,
        thread: Some(thread),
    })
}

/// Runs the gateway in the foreground until SIGINT/SIGTERM (for `assent serve`).
pub async fn serve(config: Config, workers: usize) -> Result<(), StartError> {
    let (listener, bound) = bind(config.listen)?;
    let (state, console) = build_state(config, bound).await?;
    let state = web::Data::new(state);
    let server = server(state.clone(), console, listener, workers)?;
    // The signal handlers are installed before the gateway says it listens: from then on a
    // hangup reloads adapters, and SIGTERM or SIGINT stops the gateway in order, instead of
    // ending the process where it stands.
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup());
    let stops = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    tracing::info!(addr = %bound, sites = state.sites.len(), "assent gateway listening");
    let handle = server.handle();
    let serving = actix_web::rt::spawn(server);
    let reloads = actix_web::rt::spawn(reload_on_hangup(state.clone(), hangups));
    shutdown_signal(stops).await;
    reloads.abort();
    tracing::info!("shutting down");
    handle.stop(true).await;
    let _ = serving.await;
    state.recorder.flush();
    Ok(())
}

/// Reloads every site adapter on SIGHUP; a broken file keeps the adapter in use.
async fn reload_on_hangup(
    state: web::Data<AppState>,
    hangups: std::io::Result<tokio::signal::unix::Signal>,
) {
    let Ok(mut hangups) = hangups else {
        tracing::warn!("SIGHUP cannot be handled: site adapters reload only through the admin API");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading site adapters");
        let reloading = state.clone();
        let _ = web::block(move || reloading.adapters.reload_all()).await;
    }
}

/// Waits for SIGTERM or SIGINT (whichever handler could be installed).
async fn shutdown_signal(
    (terminate, interrupt): (
        std::io::Result<tokio::signal::unix::Signal>,
        std::io::Result<tokio::signal::unix::Signal>,
    ),
) {
    match (terminate, interrupt) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
            one.recv().await;
        }
        (Err(_), Err(_)) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
