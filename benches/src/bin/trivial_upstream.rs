//! A trivial upstream FHIR server for benchmarks. Answers `GET …/Observation?…` (any search
//! parameters) with a searchset of [`SEARCH_ENTRIES`] Observations of `Patient/bench-1`,
//! `GET …/Patient/bench-1/$everything` with a searchset of that Patient and as many of its
//! Observations as make [`EVERYTHING_BYTES`] of JSON, and every other GET with the same ~1 KB
//! Patient. The large bodies are generated once at start (`assent_benches::observation`).
//! Usage: `trivial_upstream ADDR` (e.g. 127.0.0.1:0); prints `listening http://ADDR` and the
//! large bodies' sizes (`searchset_bytes=…`, `everything_bytes=…`), then serves until it is
//! killed.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// Entries of the searchset answered to an Observation search.
const SEARCH_ENTRIES: usize = 1_000;
/// The least size of the `$everything` answer (20 MB).
const EVERYTHING_BYTES: usize = 20_000_000;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = std::net::TcpListener::bind(addr)?;
    let base = format!("http://{}/fhir", listener.local_addr()?);
    let patient = web::Bytes::from(assent_benches::sample_patient());
    let search = web::Bytes::from(assent_benches::observation_searchset(&base, SEARCH_ENTRIES));
    let everything = web::Bytes::from(assent_benches::everything(&base, EVERYTHING_BYTES));
    let sizes = format!(
        "searchset_bytes={} searchset_entries={SEARCH_ENTRIES} everything_bytes={}",
        search.len(),
        everything.len()
    );
    let server = HttpServer::new(move || {
        let (patient, search, everything) = (patient.clone(), search.clone(), everything.clone());
        App::new().default_service(web::to(move |req: HttpRequest| {
            let path = req.path();
            let body = if path.ends_with("/Patient/bench-1/$everything")
                || path.ends_with("/Patient/bench-1/%24everything")
            {
                everything.clone()
            } else if path.ends_with("/Observation") {
                search.clone()
            } else {
                patient.clone()
            };
            async move {
                HttpResponse::Ok()
                    .content_type("application/fhir+json")
                    .body(body)
            }
        }))
    })
    .workers(1)
    .listen(listener)?;
    for a in server.addrs() {
        println!("listening http://{a}");
    }
    println!("{sizes}");
    server.run().await
}
