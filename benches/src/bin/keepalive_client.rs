//! Sends N sequential GETs on one keep-alive connection, for instruction counting.
//! Usage: `keepalive_client N URL [BEARER_KEY]`; exits non-zero if any answer is not 200.

use std::time::Duration;

#[actix_web::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(100);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/".into());
    let key = args.next();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    for i in 0..n {
        let mut request = client.get(&url);
        if let Some(k) = &key {
            request = request.insert_header(("authorization", format!("Bearer {k}")));
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("request {i} failed: {e}");
                std::process::exit(1);
            }
        };
        let _ = response.body().await;
        if response.status() != 200 {
            eprintln!("request {i}: status {}", response.status());
            std::process::exit(1);
        }
    }
}
