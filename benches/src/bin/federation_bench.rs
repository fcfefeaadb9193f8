//! Federated `$everything` over three FAKE sites (issue 17), in process: the gateway (SQLite,
//! receipts on, the embedded ledger) in front of three FAKE R4 upstreams, one network patient
//! linked at all three.
//!
//! - **Added latency** (fixed site latencies 10, 20 and 30 ms, one client, requests in turn):
//!   p50 of the federated `$everything` minus p50 of the slowest site's `$everything` through
//!   the gateway, and minus p50 straight to that site's upstream.
//! - **Throughput** (the same sites with no latency, `CONNECTIONS` clients for `SECONDS`):
//!   federated requests per second ÷ sets of the three direct requests it stands for (each
//!   client asks the three sites in turn) per second.
//!
//! Usage: `federation_bench [N] [SECONDS] [CONNECTIONS]` (defaults 200, 5, 8). Prints one
//! `key=value` line per figure. The client runs in the same process as the gateway (2 cores:
//! it takes a share of them); leaves out translation (all sites R4).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use assent_e2e::{FakeResponse, FakeUpstream, StartedGateway, TestGateway, token};
use serde_json::{Value, json};

const SYSTEM: &str = "urn:oid:2.16.840.1.113883.4.1";
const SITES: [(&str, &str); 3] = [("north", "pn"), ("south", "ps"), ("east", "pe")];

/// A site's FAKE upstream: `$everything` of its patient (the Patient and four Observations),
/// answered after `latency`.
fn upstream(local: &'static str, latency: Duration) -> FakeUpstream {
    FakeUpstream::start(move |_, base| {
        let mut entries = vec![json!({"fullUrl": format!("{base}/Patient/{local}"),
            "resource": {"resourceType": "Patient", "id": local, "name": [{"family": "Bench"}]}})];
        for n in 0..4 {
            entries.push(json!({"fullUrl": format!("{base}/Observation/o{n}-{local}"),
                "resource": {"resourceType": "Observation", "id": format!("o{n}-{local}"), "status": "final",
                    "code": {"text": "weight"}, "valueQuantity": {"value": 70.5, "unit": "kg"},
                    "subject": {"reference": format!("Patient/{local}")}}}));
        }
        let answer = FakeResponse::json(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "total": 5, "entry": entries}),
        );
        if latency.is_zero() {
            answer
        } else {
            answer.delayed(latency)
        }
    })
}

/// The gateway over `upstreams` with the patients linked; returns it and the network id.
fn gateway(upstreams: &[FakeUpstream]) -> (StartedGateway, String) {
    let mut builder = TestGateway::new().set(
        "log",
        json!({"format": "text", "level": "error", "access_log": false}),
    );
    for ((site, _), up) in SITES.iter().zip(upstreams) {
        builder = builder.site_with(
            site,
            json!({"upstream": up.base_url(), "fhir_version": "R4", "default_policy": "opt-out",
                   "patient_identifier_systems": [SYSTEM], "network_identifier_systems": [SYSTEM]}),
        );
    }
    let gw = builder.start();
    let mut network_id = String::new();
    for (site, local) in SITES {
        let learned = gw
            .gateway
            .state
            .network
            .learn(site, local, [(SYSTEM, "bench-1")], 1_700_000_000_000)
            .expect("link");
        network_id = learned.network_id.expect("a network patient");
    }
    (gw, network_id)
}

async fn get(client: &awc::Client, url: &str, token: &str) -> Duration {
    let started = Instant::now();
    let mut response = client
        .get(url)
        .insert_header(("authorization", format!("Bearer {token}")))
        .send()
        .await
        .expect("request");
    let body = response.body().limit(16 << 20).await.expect("body");
    assert_eq!(response.status().as_u16(), 200, "{url}: {body:?}");
    started.elapsed()
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[at].as_secs_f64() * 1000.0
}

#[actix_web::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let connections: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(8);
    let token = token(
        "dr-alice",
        Some("openid fhirUser user/*.rs"),
        Some("TREAT"),
        None,
    );
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();

    // Added latency, fixed site latencies.
    let latencies = [10, 20, 30].map(Duration::from_millis);
    let ups: Vec<FakeUpstream> = SITES
        .iter()
        .zip(latencies)
        .map(|((_, local), l)| upstream(local, l))
        .collect();
    let (gw, nid) = gateway(&ups);
    let federated = gw.url(&format!("/fhir/Patient/{nid}/$everything"));
    let (slow_site, slow_local) = SITES[2];
    let via_gateway = gw.url(&format!(
        "/fhir/{slow_site}/Patient/{slow_local}/$everything"
    ));
    let straight = format!("{}/Patient/{slow_local}/$everything", ups[2].base_url());
    let check = {
        let mut r = client
            .get(&federated)
            .insert_header(("authorization", format!("Bearer {token}")))
            .send()
            .await
            .expect("request");
        let body: Value = r.json().limit(16 << 20).await.expect("json");
        body["entry"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(check, 15, "every site's five entries");
    for _ in 0..20 {
        get(&client, &federated, &token).await;
        get(&client, &via_gateway, &token).await;
    }
    let (mut fed, mut gw_slow, mut up_slow) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        fed.push(get(&client, &federated, &token).await);
        gw_slow.push(get(&client, &via_gateway, &token).await);
        up_slow.push(get(&client, &straight, &token).await);
    }
    let (fed50, fed99) = (percentile(&mut fed, 0.5), percentile(&mut fed, 0.99));
    let gw50 = percentile(&mut gw_slow, 0.5);
    let up50 = percentile(&mut up_slow, 0.5);
    println!("site latencies 10, 20, 30 ms; {n} requests of each kind, in turn (p50, p99 in ms)");
    println!("federated_p50_ms={fed50:.2} federated_p99_ms={fed99:.2}");
    println!("slowest_site_via_gateway_p50_ms={gw50:.2} slowest_site_upstream_p50_ms={up50:.2}");
    println!(
        "added_over_slowest_via_gateway_p50_ms={:.2} added_over_slowest_upstream_p50_ms={:.2}",
        fed50 - gw50,
        fed50 - up50
    );
    drop(gw);
    drop(ups);

    // Throughput, no site latency.
    let ups: Vec<FakeUpstream> = SITES
        .iter()
        .map(|(_, local)| upstream(local, Duration::ZERO))
        .collect();
    let (gw, nid) = gateway(&ups);
    let federated = gw.url(&format!("/fhir/Patient/{nid}/$everything"));
    let directs: Vec<String> = SITES
        .iter()
        .map(|(site, local)| gw.url(&format!("/fhir/{site}/Patient/{local}/$everything")))
        .collect();
    for _ in 0..20 {
        get(&client, &federated, &token).await;
    }
    let run = |urls: Vec<String>| {
        let token = token.clone();
        async move {
            let done = Rc::new(Cell::new(0u64));
            let until = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for _ in 0..connections {
                let (urls, token, done) = (urls.clone(), token.clone(), done.clone());
                tasks.push(actix_web::rt::spawn(async move {
                    let client = awc::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .finish();
                    while Instant::now() < until {
                        for url in &urls {
                            get(&client, url, &token).await;
                        }
                        done.set(done.get() + 1);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("client task");
            }
            done.get() as f64 / seconds as f64
        }
    };
    let fed_rate = run(vec![federated.clone()]).await;
    let direct_rate = run(directs.clone()).await;
    let fed_rate2 = run(vec![federated]).await;
    let direct_rate2 = run(directs).await;
    let (fed_rate, direct_rate) = (
        (fed_rate + fed_rate2) / 2.0,
        (direct_rate + direct_rate2) / 2.0,
    );
    println!(
        "throughput ({connections} clients, 2 rounds of {seconds} s, no site latency): \
         federated {fed_rate:.1}/s, sets of three direct {direct_rate:.1}/s, ratio {:.3}",
        fed_rate / direct_rate
    );
}
