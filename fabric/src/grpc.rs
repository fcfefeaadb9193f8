//! gRPC plumbing without code generation: a service that routes hand-written method paths to
//! handlers (unary, server-streaming, bidirectional), each decoding and encoding prost
//! messages. Used by the chaincode server, and by the test fakes of Fabric's gateway and
//! peer.
//!
//! Owns the glue between `tonic::server::Grpc` and plain async closures. Leaves out what any
//! method does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::BoxStream;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{NamedService, ServerStreamingService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// One method: turns an HTTP/2 request into a response.
pub type Handler =
    Arc<dyn Fn(http::Request<Body>) -> BoxFuture<http::Response<Body>, Infallible> + Send + Sync>;

/// A gRPC service named `N` made of routed methods; add it to a `tonic::transport::Server`.
pub struct Routes<N> {
    routes: Arc<HashMap<&'static str, Handler>>,
    _name: std::marker::PhantomData<fn() -> N>,
}

impl<N> Clone for Routes<N> {
    fn clone(&self) -> Self {
        Routes {
            routes: self.routes.clone(),
            _name: std::marker::PhantomData,
        }
    }
}

/// The name of a service, as a type (tonic wants it as an associated constant).
pub trait ServiceName: Send + Sync + 'static {
    const NAME: &'static str;
}

impl<N: ServiceName> Routes<N> {
    pub fn new() -> Routes<N> {
        Routes {
            routes: Arc::new(HashMap::new()),
            _name: std::marker::PhantomData,
        }
    }

    /// Adds the method at `path` (`/package.Service/Method`).
    pub fn route(mut self, path: &'static str, handler: Handler) -> Routes<N> {
        // The map is only shared once the service is built: make_mut copies at most once.
        Arc::make_mut(&mut self.routes).insert(path, handler);
        self
    }
}

impl<N: ServiceName> Default for Routes<N> {
    fn default() -> Self {
        Routes::new()
    }
}

impl<N: ServiceName> NamedService for Routes<N> {
    const NAME: &'static str = N::NAME;
}

impl<N: ServiceName> Service<http::Request<Body>> for Routes<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.routes.get(request.uri().path()) {
            Some(handler) => handler(request),
            None => {
                let status = Status::unimplemented(format!(
                    "no method {} on this server",
                    request.uri().path()
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

struct Unary<F>(F);

impl<M1, M2, F, Fut> UnaryService<M1> for Unary<F>
where
    F: Fn(Request<M1>) -> Fut,
    Fut: Future<Output = Result<Response<M2>, Status>>,
{
    type Response = M2;
    type Future = Fut;

    fn call(&mut self, request: Request<M1>) -> Fut {
        (self.0)(request)
    }
}

struct ServerStreaming<F>(F);

impl<M1, M2, F, Fut> ServerStreamingService<M1> for ServerStreaming<F>
where
    F: Fn(Request<M1>) -> Fut,
    Fut: Future<Output = Result<Response<BoxStream<'static, Result<M2, Status>>>, Status>>,
{
    type Response = M2;
    type ResponseStream = BoxStream<'static, Result<M2, Status>>;
    type Future = Fut;

    fn call(&mut self, request: Request<M1>) -> Fut {
        (self.0)(request)
    }
}

struct Bidi<F>(F);

impl<M1, M2, F, Fut> StreamingService<M1> for Bidi<F>
where
    F: Fn(Request<Streaming<M1>>) -> Fut,
    Fut: Future<Output = Result<Response<BoxStream<'static, Result<M2, Status>>>, Status>>,
{
    type Response = M2;
    type ResponseStream = BoxStream<'static, Result<M2, Status>>;
    type Future = Fut;

    fn call(&mut self, request: Request<Streaming<M1>>) -> Fut {
        (self.0)(request)
    }
}

/// A unary method.
pub fn unary<M1, M2, F, Fut>(f: F) -> Handler
where
    M1: prost::Message + Default + Send + 'static,
    M2: prost::Message + Send + Sync + 'static,
    F: Fn(Request<M1>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<M2>, Status>> + Send + 'static,
{
    Arc::new(move |request| {
        let f = f.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<M2, M1>::default());
            Ok(grpc.unary(Unary(f), request).await)
        })
    })
}

/// A method answering one request with a stream.
pub fn server_streaming<M1, M2, F, Fut>(f: F) -> Handler
where
    M1: prost::Message + Default + Send + 'static,
    M2: prost::Message + Send + Sync + 'static,
    F: Fn(Request<M1>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<BoxStream<'static, Result<M2, Status>>>, Status>>
        + Send
        + 'static,
{
    Arc::new(move |request| {
        let f = f.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<M2, M1>::default());
            Ok(grpc.server_streaming(ServerStreaming(f), request).await)
        })
    })
}

/// A bidirectional streaming method.
pub fn bidi<M1, M2, F, Fut>(f: F) -> Handler
where
    M1: prost::Message + Default + Send + 'static,
    M2: prost::Message + Send + Sync + 'static,
    F: Fn(Request<Streaming<M1>>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<BoxStream<'static, Result<M2, Status>>>, Status>>
        + Send
        + 'static,
{
    Arc::new(move |request| {
        let f = f.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<M2, M1>::default());
            Ok(grpc.streaming(Bidi(f), request).await)
        })
    })
}

/// The path of a method, for a client call.
pub fn path(path: &'static str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::from_static(path)
}
