//! The floor of the prescribed stack, for P3 and P1: the least a proxy built on actix-web (the
//! server) and awc (the client to the site) does per request, with none of the gateway's work
//! (no authentication, consent, receipt or log). Each GET is forwarded to `UPSTREAM` + its path
//! and query on a kept-alive connection; the site's body is read whole and answered.
//!
//! Modes: `bytes` answers the site's bytes unchanged; `tree` parses them into a `serde_json`
//! tree and writes it again (the workspace's serde_json, numbers exact), which is what every
//! gateway answer costs at least while release decides on a tree.
//!
//! Usage: `floor_proxy ADDR UPSTREAM_BASE [bytes|tree]` (e.g. `127.0.0.1:0
//! http://127.0.0.1:9000`); prints `listening http://ADDR`, then serves until it is killed.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// The gateway's allocator (`gateway/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bytes,
    Tree,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let upstream = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let mode = match args.next().as_deref() {
        None | Some("bytes") => Mode::Bytes,
        Some("tree") => Mode::Tree,
        Some(other) => {
            eprintln!("floor_proxy: unknown mode {other} (bytes or tree)");
            std::process::exit(2);
        }
    };
    let listener = std::net::TcpListener::bind(addr)?;
    let server = HttpServer::new(move || {
        let upstream = upstream.clone();
        // One client per worker, as the gateway keeps one per site and worker.
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        App::new().default_service(web::to(move |req: HttpRequest| {
            let url = format!("{upstream}{}", req.uri());
            let request = client.get(url);
            async move { forward(request, mode).await }
        }))
    })
    .workers(1)
    .listen(listener)?;
    for a in server.addrs() {
        println!("listening http://{a}");
    }
    server.run().await
}

async fn forward(request: awc::ClientRequest, mode: Mode) -> HttpResponse {
    let Ok(mut response) = request.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    let Ok(body) = response.body().limit(64 << 20).await else {
        return HttpResponse::BadGateway().finish();
    };
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::OK);
    let body = match mode {
        Mode::Bytes => body,
        Mode::Tree => {
            let Ok(tree) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return HttpResponse::BadGateway().finish();
            };
            match serde_json::to_vec(&tree) {
                Ok(bytes) => web::Bytes::from(bytes),
                Err(_) => return HttpResponse::InternalServerError().finish(),
            }
        }
    };
    HttpResponse::build(status)
        .content_type("application/fhir+json")
        .body(body)
}
