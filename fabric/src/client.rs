//! The Fabric Gateway service client: Evaluate, Endorse, Submit, CommitStatus and
//! ChaincodeEvents over one tonic channel (TLS with a CA file and an optional client
//! certificate), with per-call deadlines, retries with backoff for calls that are safe to
//! repeat, and the gateway's `ErrorDetail`s read out of failed calls.
//!
//! Owns transport and the error shape. Leaves out what is sent (`proposal`) and what it means
//! for the ledger (`ledger`).

use std::time::Duration;

use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::grpc::path;
use crate::protos::common::Envelope;
use crate::protos::gateway::{
    ChaincodeEventsResponse, CommitStatusResponse, ERROR_DETAIL_TYPE_URL, EndorseRequest,
    EndorseResponse, ErrorDetail, EvaluateRequest, EvaluateResponse, SignedChaincodeEventsRequest,
    SignedCommitStatusRequest, SubmitRequest, SubmitResponse,
};
use crate::protos::google::RpcStatus;
use crate::protos::paths;
use crate::protos::peer::Response;

/// TLS to the gateway peer, as PEM texts.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// The CA that signed the peer's TLS certificate.
    pub ca_pem: Vec<u8>,
    /// For mutual TLS: the client's certificate and key.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the peer's certificate must carry, when it differs from the endpoint's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("mutual", &self.client_identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Deadlines and retries of gateway calls.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub connect_timeout: Duration,
    pub evaluate_timeout: Duration,
    pub endorse_timeout: Duration,
    pub submit_timeout: Duration,
    pub commit_status_timeout: Duration,
    /// Attempts for a call that failed because the peer could not be reached.
    pub reconnect_attempts: u32,
    /// The first wait between attempts; doubled each time, capped at 5 s.
    pub reconnect_backoff: Duration,
    /// HTTP/2 keepalive pings to the peer. Must be at least the peer's
    /// `peer.keepalive.minInterval` ([`FABRIC_MIN_PING_INTERVAL`] by default): a Fabric peer
    /// answers more frequent pings with GOAWAY (`too_many_pings`), which ends every stream
    /// on the connection, so an idle ChaincodeEvents subscription would break every minute
    /// or two.
    pub keepalive_interval: Duration,
}

/// The default of a Fabric peer's `peer.keepalive.minInterval`: the shortest interval
/// between a client's pings that it tolerates.
pub const FABRIC_MIN_PING_INTERVAL: Duration = Duration::from_secs(60);

impl Default for CallOptions {
    fn default() -> CallOptions {
        CallOptions {
            connect_timeout: Duration::from_secs(5),
            evaluate_timeout: Duration::from_secs(5),
            endorse_timeout: Duration::from_secs(15),
            submit_timeout: Duration::from_secs(5),
            commit_status_timeout: Duration::from_secs(60),
            reconnect_attempts: 5,
            reconnect_backoff: Duration::from_millis(100),
            keepalive_interval: Duration::from_secs(90),
        }
    }
}

/// A failed gateway call: the gRPC status and the peers' details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method}: {code:?}: {message}{}", describe_details(.details))]
pub struct GatewayError {
    pub method: &'static str,
    pub code: Code,
    pub message: String,
    /// Which peers (address, MSP id) said what.
    pub details: Vec<ErrorDetail>,
}

fn describe_details(details: &[ErrorDetail]) -> String {
    details
        .iter()
        .map(|d| format!("; peer {} (MSP {}): {}", d.address, d.msp_id, d.message))
        .collect()
}

impl GatewayError {
    /// Reads the gateway's `ErrorDetail`s out of a status.
    pub fn from_status(method: &'static str, status: &Status) -> GatewayError {
        let details = RpcStatus::decode(status.details())
            .map(|s| {
                s.details
                    .into_iter()
                    .filter(|any| any.type_url == ERROR_DETAIL_TYPE_URL)
                    .filter_map(|any| ErrorDetail::decode(any.value.as_slice()).ok())
                    .collect()
            })
            .unwrap_or_default();
        GatewayError {
            method,
            code: status.code(),
            message: status.message().to_owned(),
            details,
        }
    }

    /// Whether the peer could not be reached or did not answer in time.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        )
    }

    /// Every message of the call: the status's and each peer's.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.message.as_str())
            .chain(self.details.iter().map(|d| d.message.as_str()))
    }
}

/// Builds a status with `ErrorDetail`s, as the Fabric gateway sends them (for fakes).
pub fn status_with_details(code: Code, message: &str, details: &[ErrorDetail]) -> Status {
    let rpc = RpcStatus {
        code: code as i32,
        message: message.to_owned(),
        details: details
            .iter()
            .map(|d| crate::protos::google::Any {
                type_url: ERROR_DETAIL_TYPE_URL.to_owned(),
                value: d.encode_to_vec(),
            })
            .collect(),
    };
    Status::with_details(code, message, rpc.encode_to_vec().into())
}

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad peer endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A client of one gateway peer. Cheap to clone; the channel reconnects by itself.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    channel: Channel,
    options: CallOptions,
}

impl GatewayClient {
    /// A client of the peer at `endpoint` (`https://host:port`, or `http://` without TLS).
    /// Connects lazily: an unreachable peer shows as unavailable calls, not here. Call it
    /// inside a Tokio runtime.
    pub fn new(
        endpoint: &str,
        tls: Option<&TlsMaterial>,
        options: CallOptions,
    ) -> Result<GatewayClient, ConnectError> {
        let bad = |reason: String| ConnectError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let mut builder = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(options.keepalive_interval)
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            crate::ensure_crypto_provider();
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.client_identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &tls.server_name {
                config = config.domain_name(name.clone());
            }
            builder = builder
                .tls_config(config)
                .map_err(|e| ConnectError::Tls(e.to_string()))?;
        } else if endpoint.starts_with("https:") {
            return Err(ConnectError::Tls(
                "an https endpoint needs a TLS CA certificate".into(),
            ));
        }
        Ok(GatewayClient {
            channel: builder.connect_lazy(),
            options,
        })
    }

    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// Evaluate: runs a proposal on one peer without ordering; the chaincode's response.
    pub async fn evaluate(&self, request: EvaluateRequest) -> Result<Response, GatewayError> {
        let timeout = self.options.evaluate_timeout;
        let response: EvaluateResponse = self
            .with_retries(|| self.unary(paths::EVALUATE, request.clone(), timeout))
            .await?;
        Ok(response.result.unwrap_or_default())
    }

    /// Endorse: collects endorsements; the prepared transaction to sign and submit.
    pub async fn endorse(&self, request: EndorseRequest) -> Result<Envelope, GatewayError> {
        let timeout = self.options.endorse_timeout;
        let response: EndorseResponse = self
            .with_retries(|| self.unary(paths::ENDORSE, request.clone(), timeout))
            .await?;
        response.prepared_transaction.ok_or_else(|| GatewayError {
            method: paths::ENDORSE,
            code: Code::Internal,
            message: "the gateway returned no prepared transaction".into(),
            details: Vec::new(),
        })
    }

    /// Submit: sends the signed transaction to the orderers. Not retried: a second submit of
    /// the same transaction is a duplicate; the caller asks for its commit status instead.
    pub async fn submit(&self, request: SubmitRequest) -> Result<(), GatewayError> {
        let _: SubmitResponse = self
            .unary(paths::SUBMIT, request, self.options.submit_timeout)
            .await?;
        Ok(())
    }

    /// CommitStatus: waits for the transaction's commit; its validation code and block.
    pub async fn commit_status(
        &self,
        request: SignedCommitStatusRequest,
    ) -> Result<CommitStatusResponse, GatewayError> {
        let timeout = self.options.commit_status_timeout;
        self.with_retries(|| self.unary(paths::COMMIT_STATUS, request.clone(), timeout))
            .await
    }

    /// ChaincodeEvents: a stream of one chaincode's events, one response per block holding
    /// any.
    pub async fn chaincode_events(
        &self,
        request: SignedChaincodeEventsRequest,
    ) -> Result<Streaming<ChaincodeEventsResponse>, GatewayError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| GatewayError {
            method: paths::CHAINCODE_EVENTS,
            code: Code::Unavailable,
            message: e.to_string(),
            details: Vec::new(),
        })?;
        let codec = ProstCodec::<SignedChaincodeEventsRequest, ChaincodeEventsResponse>::default();
        grpc.server_streaming(Request::new(request), path(paths::CHAINCODE_EVENTS), codec)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| GatewayError::from_status(paths::CHAINCODE_EVENTS, &s))
    }

    async fn unary<M1, M2>(
        &self,
        method: &'static str,
        message: M1,
        timeout: Duration,
    ) -> Result<M2, GatewayError>
    where
        M1: Message + Send + Sync + 'static,
        M2: Message + Default + Send + Sync + 'static,
    {
        let unavailable = |message: String| GatewayError {
            method,
            code: Code::Unavailable,
            message,
            details: Vec::new(),
        };
        let call = async {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            grpc.ready().await.map_err(|e| unavailable(e.to_string()))?;
            let mut request = Request::new(message);
            request.set_timeout(timeout);
            grpc.unary(request, path(method), ProstCodec::<M1, M2>::default())
                .await
                .map(|r| r.into_inner())
                .map_err(|s| GatewayError::from_status(method, &s))
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError {
                method,
                code: Code::DeadlineExceeded,
                message: format!("no answer within {timeout:?}"),
                details: Vec::new(),
            }),
        }
    }

    /// Runs `call` again, with a doubling wait, while it fails as unavailable.
    async fn with_retries<T, F, Fut>(&self, call: F) -> Result<T, GatewayError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, GatewayError>>,
    {
        let mut wait = self.options.reconnect_backoff;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_unavailable() && attempt < self.options.reconnect_attempts => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_pings_respect_the_peers_ping_policy() {
        // Every 30 s (the old setting) made Fabric 2.5.12's peer, whose minInterval is 60 s,
        // close an idle event stream with "transport error" after 121 s.
        let options = CallOptions::default();
        // Strictly above: the peer measures the interval on its own clock.
        assert!(options.keepalive_interval > FABRIC_MIN_PING_INTERVAL);
    }
}
