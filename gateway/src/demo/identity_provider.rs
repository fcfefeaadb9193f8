//! DEMO PART: serves `assent-auth`'s development identity provider ([`DevIdentityProvider`])
//! over loopback HTTP inside the demo process, so that the gateway discovers and trusts it
//! through the same OpenID discovery and JWKS code as a real provider. It authenticates nobody:
//! anyone who reaches it gets a token for any sample caller. Only `assent demo` (and the
//! end-to-end tests) start it; `serve` never does.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use assent_auth::IssuerConfig;
use assent_auth::dev_idp::DevIdentityProvider;

use crate::http::loopback::ThreadServer;

/// A running development identity provider on 127.0.0.1.
pub struct DemoIdentityProvider {
    pub addr: SocketAddr,
    provider: Arc<DevIdentityProvider>,
    _server: ThreadServer,
}

/// The provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityProviderError {
    #[error("demo identity provider: {0}")]
    Io(#[from] std::io::Error),
    #[error("demo identity provider: {0}")]
    Provider(#[from] assent_auth::ConfigError),
}

impl DemoIdentityProvider {
    /// Starts a provider on 127.0.0.1 (any free port) minting tokens for `audience`.
    pub fn start(audience: &str) -> Result<DemoIdentityProvider, IdentityProviderError> {
        Self::start_on(0, audience)
    }

    /// Starts a provider on 127.0.0.1:`port` (0: any free port) minting tokens for `audience`.
    pub fn start_on(
        port: u16,
        audience: &str,
    ) -> Result<DemoIdentityProvider, IdentityProviderError> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let provider = Arc::new(DevIdentityProvider::new(
            format!("http://{addr}"),
            audience,
        )?);
        let data = web::Data::from(provider.clone());
        let server = ThreadServer::start("assent-demo-idp", listener, move |cfg| {
            cfg.app_data(data.clone())
                .default_service(web::route().to(answer));
        })?;
        Ok(DemoIdentityProvider {
            addr,
            provider,
            _server: server,
        })
    }

    /// The issuer URL (`http://127.0.0.1:PORT`).
    pub fn issuer(&self) -> &str {
        self.provider.issuer()
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// What the gateway's `[[auth.issuers]]` entry must say to trust this provider.
    pub fn issuer_config(&self) -> IssuerConfig {
        self.provider.issuer_config()
    }

    /// The provider itself (to mint tokens without HTTP, in tests).
    pub fn provider(&self) -> &DevIdentityProvider {
        &self.provider
    }
}

async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    provider: web::Data<DevIdentityProvider>,
) -> HttpResponse {
    // The browser sign-in (`GET /authorize`) takes its parameters in the query.
    let form = if req.method() == actix_web::http::Method::GET {
        req.query_string()
    } else {
        std::str::from_utf8(&body).unwrap_or_default()
    };
    let answer = provider.handle(req.method().as_str(), req.path(), form);
    let mut response = HttpResponse::build(
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    response.insert_header((CONTENT_TYPE, HeaderValue::from_static(answer.content_type)));
    if let Some(location) = answer.location.as_deref()
        && let Ok(value) = HeaderValue::from_str(location)
    {
        response.insert_header((actix_web::http::header::LOCATION, value));
    }
    if req.path() == "/token" {
        // Token responses are never cached (RFC 6749 §5.1).
        response.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
    }
    // The path only: a query or form may carry a patient id (`patient=`) or a code.
    tracing::info!(
        method = req.method().as_str(),
        path = req.path(),
        status = answer.status,
        "demo identity provider request"
    );
    response.body(answer.body)
}
