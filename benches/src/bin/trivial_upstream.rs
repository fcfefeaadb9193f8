//! A trivial upstream FHIR server for benchmarks: answers every GET with the same ~1 KB Patient.
//! Usage: `trivial_upstream ADDR` (e.g. 127.0.0.1:0); prints `listening http://ADDR` and serves
//! until it is killed.

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let body = web::Bytes::from(assent_benches::sample_patient());
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().default_service(web::to(move || {
            let body = body.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/fhir+json")
                    .body(body)
            }
        }))
    })
    .workers(1)
    .bind(addr)?;
    for a in server.addrs() {
        println!("listening http://{a}");
    }
    server.run().await
}
