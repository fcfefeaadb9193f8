//! The state every handler is given (`web::Data<AppState>`): the configuration, the store,
//! the services and the sites. Built once at start by the facade (`app.rs`); handlers of every
//! wing read it and never build it. The compliance console's sign-in is registered beside it
//! (`web::Data<api::console::Console>`) when configured.

use std::collections::HashMap;
use std::sync::Arc;

use assent_ledger::Ledger;

use crate::config::Config;
use crate::http::caller::Authenticator;
use crate::http::observability::Metrics;
use crate::http::paging::PageSigner;
use crate::services::adapters::Adapters;
use crate::services::break_glass::Notifier;
use crate::services::consent::ConsentService;
use crate::services::receipts::ReceiptWriter;
use crate::services::request_log::Recorder;
use crate::services::upstream::Site;
use crate::store::Store;

/// What every worker shares.
pub struct AppState {
    pub config: Config,
    pub public_base: String,
    pub sites: HashMap<String, Arc<Site>>,
    pub store: Store,
    pub signer: PageSigner,
    pub metrics: Metrics,
    /// The trusted issuers: verifies bearer tokens.
    pub callers: Authenticator,
    pub recorder: Recorder,
    pub openapi_json: String,
    /// Consent state: the ledger, the stored documents and the decision cache.
    pub consents: Arc<ConsentService>,
    /// Makes every FHIR request's receipt durable before its response is released.
    pub receipts: ReceiptWriter,
    /// The configured ledger (`[ledger] backend`: embedded or Fabric), the one the consent
    /// service uses: receipt anchors go here too. Usable from any runtime.
    pub ledger: Arc<dyn Ledger>,
    /// Site adapters, by site; each swapped atomically on reload.
    pub adapters: Adapters,
    /// Tells the configured webhook of every access resting on break-glass.
    pub break_glass: Notifier,
    /// Patients named by identifier, placed at their site (`identity.rs`).
    pub identities: crate::services::identity::Identities,
    /// The network patient index: which site patients are one network patient.
    pub network: Arc<crate::services::network::NetworkIndex>,
    /// The wall clock every request reads (receipt times, request records, break-glass
    /// events): the system's, or one set by hand in tests.
    pub clock: Arc<dyn assent_ledger::Clock>,
    /// The sites' CapabilityStatements as the gateway serves them without authentication
    /// (`proxy/metadata.rs`), kept a while.
    pub statements: Statements,
}

/// The sites' CapabilityStatements as the gateway serves them (before translation into the
/// client's version), by site, each kept for [`Statements::TTL`]; a site's failure to give one
/// is kept for [`Statements::FAILURE_TTL`], so that anonymous callers cannot make the gateway
/// ask a failing site at their pace.
#[derive(Default)]
pub struct Statements {
    kept: std::sync::Mutex<HashMap<String, Kept>>,
}

type Kept = (
    std::time::Instant,
    Result<serde_json::Value, crate::http::error::GatewayError>,
);

impl Statements {
    /// How long a statement is kept before the site is asked again.
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(300);
    /// How long a site's failure to give one is answered without asking it again.
    pub const FAILURE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

    /// The statement (or failure) kept for `site`, unless it is older than its time to live.
    pub fn get(
        &self,
        site: &str,
    ) -> Option<Result<serde_json::Value, crate::http::error::GatewayError>> {
        let kept = self.kept.lock().ok()?;
        let (at, answer) = kept.get(site)?;
        let ttl = if answer.is_ok() {
            Self::TTL
        } else {
            Self::FAILURE_TTL
        };
        (at.elapsed() < ttl).then(|| answer.clone())
    }

    /// Keeps `answer` for `site`.
    pub fn put(
        &self,
        site: &str,
        answer: Result<serde_json::Value, crate::http::error::GatewayError>,
    ) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(site.to_owned(), (std::time::Instant::now(), answer));
        }
    }
}
