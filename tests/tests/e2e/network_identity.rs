//! The network patient index end to end (issue 17, "Patient identity"): three FAKE sites
//! holding the same patient under different local ids (one of them opt-in, so its patient is
//! denied), plus one that is down. Discovery by a network identifier links the sites' records
//! and answers the network Patient; learning from a plain read links too; `$match` grades
//! certain, probable and possible; the admin API confirms, rejects and unlinks, each with its
//! receipt. ADV: the admin API refuses non-admins; an identifier of a system that is not a
//! network system links nothing; an unlinked pair is not relinked; a denied patient appears in
//! no answer and is linked by nothing.

use std::time::Duration;

use assent_e2e::*;
use serde_json::{Value, json};

const NID: &str = "urn:oid:2.16.840.1.113883.4.1";
const MRN: &str = "urn:example:mrn";

fn patient(id: &str, family: &str, given: &str, birth: &str, ids: &[(&str, &str)]) -> Value {
    let identifier: Vec<Value> = ids
        .iter()
        .map(|(s, v)| json!({"system": s, "value": v}))
        .collect();
    json!({
        "resourceType": "Patient", "id": id, "meta": {"versionId": "1"},
        "identifier": identifier,
        "name": [{"family": family, "given": [given]}],
        "gender": "female", "birthDate": birth,
    })
}

/// A FAKE site holding `patients`: reads by id, and searches honouring `identifier`
/// (`system|value`), `family`, `given` and `birthdate` (case-insensitive, all must hold).
fn site(patients: Vec<Value>) -> FakeUpstream {
    FakeUpstream::start(move |req, base| {
        let path = req.path.trim_start_matches("/fhir/");
        if let Some(id) = path.strip_prefix("Patient/") {
            return match patients.iter().find(|p| p["id"] == id) {
                Some(p) => FakeResponse::json(200, p.clone()),
                None => FakeResponse::json(404, json!({"resourceType": "OperationOutcome"})),
            };
        }
        let params: Vec<(String, String)> = url::form_urlencoded::parse(req.query.as_bytes())
            .into_owned()
            .collect();
        let holds =
            |p: &Value| {
                params.iter().all(|(name, want)| {
                    let want = want.to_lowercase();
                    let text = |v: &Value| v.as_str().unwrap_or_default().to_lowercase();
                    match name.as_str() {
                        "identifier" => p["identifier"].as_array().unwrap().iter().any(|i| {
                            format!("{}|{}", text(&i["system"]), text(&i["value"])) == want
                        }),
                        "family" => text(&p["name"][0]["family"]) == want,
                        "given" => p["name"][0]["given"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|g| text(g) == want),
                        "birthdate" => text(&p["birthDate"]) == want,
                        _ => true,
                    }
                })
            };
        let entries: Vec<Value> = patients
            .iter()
            .filter(|p| holds(p))
            .map(|p| {
                json!({"fullUrl": format!("{base}/Patient/{}", p["id"].as_str().unwrap()),
                       "resource": p, "search": {"mode": "match"}})
            })
            .collect();
        FakeResponse::json(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "entry": entries}),
        )
    })
}

struct Network {
    gw: StartedGateway,
    _sites: Vec<FakeUpstream>,
}

/// north and south (opt-out) and east (opt-in: its patients are denied without a consent)
/// hold Ada under `a1`, `s77` and `e5`, sharing national id 111; south also holds `s78`, Ada
/// without the national id (probable), north `a2`, Augusta Lovelace born the same day
/// (possible); Grace is `a3` and `s3` (national id 222); `a4` and `s4` share only an MRN.
/// west is down.
fn network() -> Network {
    let ada = |id: &str, ids: &[(&str, &str)]| patient(id, "Lovelace", "Ada", "1815-12-10", ids);
    let north = site(vec![
        ada("a1", &[(NID, "111"), (MRN, "m-a1")]),
        patient("a2", "Lovelace", "Augusta", "1815-12-10", &[]),
        patient("a3", "Hopper", "Grace", "1906-12-09", &[(NID, "222")]),
        patient("a4", "Curie", "Marie", "1867-11-07", &[(MRN, "shared")]),
    ]);
    let south = site(vec![
        ada("s77", &[(NID, "111")]),
        ada("s78", &[]),
        patient("s3", "Hopper", "Grace", "1906-12-09", &[(NID, "222")]),
        patient("s4", "Curie", "Marie", "1867-11-07", &[(MRN, "shared")]),
    ]);
    let east = site(vec![ada("e5", &[(NID, "111")])]);
    let table = |upstream: String, policy: &str| {
        json!({"upstream": upstream, "fhir_version": "R4", "default_policy": policy,
               "patient_identifier_systems": [NID, MRN],
               "network_identifier_systems": [NID]})
    };
    let gw = TestGateway::new()
        .site_with("north", table(north.base_url(), "opt-out"))
        .site_with("south", table(south.base_url(), "opt-out"))
        .site_with("east", table(east.base_url(), "opt-in"))
        .site_with("west", table(closed_port_url(), "opt-out"))
        .start();
    Network {
        gw,
        _sites: vec![north, south, east],
    }
}

impl Network {
    async fn get(&self, path: &str, token: &str) -> Got {
        send("GET", &self.gw.url(path), Some(token), &[], None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Got {
        send(
            "POST",
            &self.gw.url(path),
            Some(token),
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    fn network_of(&self, site: &str, id: &str) -> Option<String> {
        self.gw.gateway.state.network.network_of(site, id).unwrap()
    }

    /// The stored receipts of `kind` (waiting up to 10 s for the first): clear actor and
    /// patients.
    fn receipts(&self, kind: &str) -> Vec<(String, String, String)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rows: Vec<_> = self
                .gw
                .gateway
                .state
                .store
                .receipts_after("test-gw", 0, 10_000)
                .unwrap()
                .into_iter()
                .filter(|r| r.kind == kind)
                .map(|r| (r.receipt_id, r.actor, r.patients))
                .collect();
            if !rows.is_empty() || std::time::Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn links(patient: &Value) -> Vec<String> {
    let mut links: Vec<String> = patient["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "seealso");
            l["other"]["reference"].as_str().unwrap().to_owned()
        })
        .collect();
    links.sort();
    links
}

fn match_body(resource: Value, extra: &[Value]) -> Value {
    let mut parameter = vec![json!({"name": "resource", "resource": resource})];
    parameter.extend(extra.iter().cloned());
    json!({"resourceType": "Parameters", "parameter": parameter})
}

#[actix_web::test]
async fn discovery_by_identifier_links_the_sites_records_and_answers_the_network_patient() {
    let net = network();
    let alice = clinician_token();
    let got = net
        .get(&format!("/fhir/Patient?identifier={NID}%7C111"), alice)
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let bundle = got.json();
    assert_eq!(bundle["type"], "searchset");
    let entries = bundle["entry"].as_array().unwrap();
    let matches: Vec<&Value> = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .collect();
    assert_eq!(matches.len(), 1, "{bundle}");
    let network_patient = &matches[0]["resource"];
    let nid = network_patient["id"].as_str().unwrap().to_owned();
    assert!(nid.starts_with("n-") && nid.len() == 42, "{nid}");
    let base = net
        .gw
        .gateway
        .state
        .public_base
        .trim_end_matches('/')
        .to_owned();
    assert_eq!(
        matches[0]["fullUrl"],
        format!("{base}/fhir/Patient/{nid}").as_str()
    );
    assert_eq!(
        links(network_patient),
        [
            format!("{base}/fhir/north/Patient/a1"),
            format!("{base}/fhir/south/Patient/s77"),
        ]
    );
    // Nothing but id and links: no name, birth date or identifier of any site's record.
    let keys: Vec<&String> = network_patient.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "link", "resourceType"]);
    // The site that is down is named; the denied site is not (nor its patient).
    let outcome: Vec<&Value> = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "outcome")
        .collect();
    assert_eq!(outcome.len(), 1, "{bundle}");
    let text = got.text();
    assert!(text.contains("site west"), "{text}");
    assert!(!text.contains("east") && !text.contains("e5"), "{text}");
    // Linked in the store under one network patient; the denied record is linked by nothing.
    assert_eq!(net.network_of("north", "a1").as_deref(), Some(nid.as_str()));
    assert_eq!(
        net.network_of("south", "s77").as_deref(),
        Some(nid.as_str())
    );
    assert_eq!(net.network_of("east", "e5"), None);
    // The links are receipted, the gateway as actor, naming the records linked and the
    // network patient (keyed on the ledger like every receipt); never the denied record.
    let receipts = net.receipts("network-link");
    assert!(!receipts.is_empty());
    let mut named: Vec<String> = Vec::new();
    for (_, actor, patients) in &receipts {
        assert_eq!(actor, "gateway:test-gw");
        let patients: Vec<String> = serde_json::from_str(patients).unwrap();
        assert_eq!(patients.last().unwrap(), &format!("network/Patient/{nid}"));
        named.extend(patients);
    }
    named.sort();
    named.dedup();
    assert_eq!(
        named,
        [
            format!("network/Patient/{nid}"),
            "north/Patient/a1".to_owned(),
            "south/Patient/s77".to_owned(),
        ]
    );

    // The network Patient, read: each site's record read through the pipeline.
    let read = net.get(&format!("/fhir/Patient/{nid}"), alice).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let read = read.json();
    assert_eq!(read["id"], nid.as_str());
    assert_eq!(links(&read), links(network_patient));
    // Unknown ids, and ids that are not network ids, are not found.
    let unknown = format!("n-{}", "0".repeat(40));
    for id in [unknown.as_str(), "a1", "n-zz"] {
        let got = net.get(&format!("/fhir/Patient/{id}"), alice).await;
        assert_eq!(got.status, 404, "{id}: {}", got.text());
    }

    // The administrator sees how and when each link was made.
    let admin = net
        .get(&format!("/admin/network/patients/{nid}"), admin_token())
        .await;
    assert_eq!(admin.status, 200, "{}", admin.text());
    let admin = admin.json();
    let how: Vec<(&str, &str, &str)> = admin["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(l["learned_at_ms"].as_i64().unwrap() > 0);
            (
                l["site"].as_str().unwrap(),
                l["patient"].as_str().unwrap(),
                l["how"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        how,
        [
            ("north", "a1", "identifier"),
            ("south", "s77", "identifier")
        ]
    );
}

#[actix_web::test]
async fn learning_from_a_read_links_and_a_system_that_is_not_a_network_system_links_nothing() {
    let net = network();
    let alice = clinician_token();
    for path in [
        "/fhir/north/Patient/a3",
        "/fhir/south/Patient/s3",
        "/fhir/north/Patient/a4",
        "/fhir/south/Patient/s4",
    ] {
        let got = net.get(path, alice).await;
        assert_eq!(got.status, 200, "{path}: {}", got.text());
    }
    net.gw.gateway.state.network.flush_learning();
    let grace = net.network_of("north", "a3");
    assert!(grace.is_some());
    assert_eq!(net.network_of("south", "s3"), grace);
    let receipts = net.receipts("network-link");
    assert!(!receipts.is_empty());
    assert!(
        receipts
            .iter()
            .all(|(_, actor, _)| actor == "gateway:test-gw")
    );
    // ADV: a shared MRN (a patient identifier system, not a network one) links nothing, by
    // learning or by discovery.
    assert_eq!(net.network_of("north", "a4"), None);
    assert_eq!(net.network_of("south", "s4"), None);
    let got = net
        .get(&format!("/fhir/Patient?identifier={MRN}%7Cshared"), alice)
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let bundle = got.json();
    let matches = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .count();
    assert_eq!(matches, 0, "{bundle}");
    assert_eq!(net.network_of("north", "a4"), None);
    // A search form the network level does not take is refused.
    let other = net.get("/fhir/Patient?name=Curie", alice).await;
    assert_eq!(other.status, 400, "{}", other.text());
}

#[actix_web::test]
async fn match_grades_certain_probable_and_possible_and_the_admin_confirms_rejects_and_unlinks() {
    let net = network();
    let alice = clinician_token();
    let ada = patient("q", "Lovelace", "Ada", "1815-12-10", &[(NID, "111")]);
    let got = net
        .post("/fhir/Patient/$match", alice, match_body(ada.clone(), &[]))
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let bundle = got.json();
    let graded: Vec<(String, String, f64)> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            let ext = &e["search"]["extension"][0];
            assert_eq!(
                ext["url"],
                "http://hl7.org/fhir/StructureDefinition/match-grade"
            );
            (
                e["fullUrl"]
                    .as_str()
                    .unwrap()
                    .rsplit("/fhir/")
                    .next()
                    .unwrap()
                    .to_owned(),
                ext["valueCode"].as_str().unwrap().to_owned(),
                e["search"]["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let expect = |url: &str, grade: &str, score: f64| (url.to_owned(), grade.to_owned(), score);
    assert_eq!(
        graded,
        [
            expect("north/Patient/a1", "certain", 1.0),
            expect("south/Patient/s77", "certain", 1.0),
            expect("south/Patient/s78", "probable", 0.8),
            expect("north/Patient/a2", "possible", 0.5),
        ],
        "{bundle}"
    );
    // ADV: the denied record is in no entry.
    assert!(!got.text().contains("e5"), "{}", got.text());
    let nid = net.network_of("north", "a1").unwrap();
    assert_eq!(
        net.network_of("south", "s77").as_deref(),
        Some(nid.as_str())
    );
    assert_eq!(net.network_of("east", "e5"), None);
    // Only certain matches linked; probable and possible kept as candidates.
    assert_eq!(net.network_of("south", "s78"), None);
    assert_eq!(net.network_of("north", "a2"), None);

    // onlyCertainMatches and count.
    let only = net
        .post(
            "/fhir/Patient/$match",
            alice,
            match_body(
                ada.clone(),
                &[json!({"name": "onlyCertainMatches", "valueBoolean": true})],
            ),
        )
        .await
        .json();
    let grades: Vec<&str> = only["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["search"]["extension"][0]["valueCode"].as_str().unwrap())
        .collect();
    assert_eq!(grades, ["certain", "certain"]);
    let one = net
        .post(
            "/fhir/Patient/$match",
            alice,
            match_body(ada.clone(), &[json!({"name": "count", "valueInteger": 1})]),
        )
        .await
        .json();
    let matches = one["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .count();
    assert_eq!(matches, 1);
    let bad = net
        .post(
            "/fhir/Patient/$match",
            alice,
            json!({"resourceType": "Parameters", "parameter": []}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text());

    // The candidates, for the administrator.
    let admin = admin_token();
    let list = net.get("/admin/network/candidates", admin).await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert!(list.header("x-assent-receipt").is_some());
    let list = list.json();
    let candidates: Vec<(String, String, String, String)> = list["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["network_id"], nid.as_str());
            assert_eq!(c["status"], "open");
            (
                c["id"].as_str().unwrap().to_owned(),
                c["site"].as_str().unwrap().to_owned(),
                c["patient"].as_str().unwrap().to_owned(),
                c["grade"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut pairs: Vec<(&str, &str, &str)> = candidates
        .iter()
        .map(|(_, s, p, g)| (s.as_str(), p.as_str(), g.as_str()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [("north", "a2", "possible"), ("south", "s78", "probable")]
    );
    let id_of = |patient: &str| {
        candidates
            .iter()
            .find(|c| c.2 == patient)
            .map(|c| c.0.clone())
            .unwrap()
    };

    // Confirm the probable one: linked, as confirmed, with a receipt.
    let confirmed = net
        .post(
            &format!("/admin/network/candidates/{}/$confirm", id_of("s78")),
            admin,
            json!({}),
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());
    let receipt = confirmed.header("x-assent-receipt").unwrap().to_owned();
    assert_eq!(
        net.network_of("south", "s78").as_deref(),
        Some(nid.as_str())
    );
    let link = net
        .gw
        .gateway
        .state
        .network
        .link_of("south", "s78")
        .unwrap()
        .unwrap();
    assert_eq!(link.how.as_str(), "confirmed");
    assert_eq!(link.evidence, caller_id(ADMIN_SUBJECT));
    let confirms = net.receipts("network-confirm");
    assert_eq!(confirms.len(), 1);
    assert_eq!(confirms[0].0, receipt);
    let patients: Vec<String> = serde_json::from_str(&confirms[0].2).unwrap();
    assert_eq!(
        patients,
        [
            "south/Patient/s78".to_owned(),
            format!("network/Patient/{nid}")
        ]
    );
    // Decided once.
    let again = net
        .post(
            &format!("/admin/network/candidates/{}/$confirm", id_of("s78")),
            admin,
            json!({}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.error_code(), "network-link-conflict");

    // Once confirmed, a $match grades it certain (linked to the network patient matched).
    let after = net
        .post("/fhir/Patient/$match", alice, match_body(ada.clone(), &[]))
        .await
        .json();
    let s78 = after["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["id"] == "s78")
        .unwrap();
    assert_eq!(s78["search"]["extension"][0]["valueCode"], "certain");

    // Reject the possible one: receipted, and a later $match keeps no candidate of it.
    let rejected = net
        .post(
            &format!("/admin/network/candidates/{}/$reject", id_of("a2")),
            admin,
            json!({}),
        )
        .await;
    assert_eq!(rejected.status, 200, "{}", rejected.text());
    assert_eq!(net.receipts("network-reject").len(), 1);
    assert_eq!(net.network_of("north", "a2"), None);
    let _ = net
        .post("/fhir/Patient/$match", alice, match_body(ada.clone(), &[]))
        .await;
    let open = net.get("/admin/network/candidates", admin).await.json();
    assert_eq!(
        open["candidates"],
        json!([]),
        "a rejected pair proposed again"
    );
    let all = net
        .get("/admin/network/candidates?status=all", admin)
        .await
        .json();
    let statuses: Vec<&str> = all["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&"confirmed") && statuses.contains(&"rejected"));

    // Unlink south/s77: receipted; ADV: a later discovery does not link it again.
    let unlinked = net
        .post(
            "/admin/network/$unlink",
            admin,
            json!({"site": "south", "patient": "s77"}),
        )
        .await;
    assert_eq!(unlinked.status, 200, "{}", unlinked.text());
    assert_eq!(net.receipts("network-unlink").len(), 1);
    assert_eq!(net.network_of("south", "s77"), None);
    let again = net
        .get(&format!("/fhir/Patient?identifier={NID}%7C111"), alice)
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    net.gw.gateway.state.network.flush_learning();
    assert_eq!(
        net.network_of("south", "s77"),
        None,
        "an unlinked pair relinked"
    );
    let read = net.get(&format!("/fhir/Patient/{nid}"), alice).await.json();
    let base = net
        .gw
        .gateway
        .state
        .public_base
        .trim_end_matches('/')
        .to_owned();
    assert_eq!(
        links(&read),
        [
            format!("{base}/fhir/north/Patient/a1"),
            format!("{base}/fhir/south/Patient/s78"),
        ]
    );
    let missing = net
        .post(
            "/admin/network/$unlink",
            admin,
            json!({"site": "south", "patient": "s77"}),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
}

#[actix_web::test]
async fn adv_the_network_admin_api_refuses_non_admins() {
    let net = network();
    let alice = clinician_token();
    let got = net
        .get(&format!("/fhir/Patient?identifier={NID}%7C111"), alice)
        .await;
    assert_eq!(got.status, 200);
    let nid = net.network_of("north", "a1").unwrap();
    let calls: Vec<(&str, String, Value)> = vec![
        ("GET", "/admin/network/candidates".into(), Value::Null),
        (
            "GET",
            "/admin/network/candidates?status=all".into(),
            Value::Null,
        ),
        (
            "POST",
            "/admin/network/candidates/x/$confirm".into(),
            json!({}),
        ),
        (
            "POST",
            "/admin/network/candidates/x/$reject".into(),
            json!({}),
        ),
        (
            "POST",
            "/admin/network/$unlink".into(),
            json!({"site": "north", "patient": "a1"}),
        ),
        ("GET", format!("/admin/network/patients/{nid}"), Value::Null),
    ];
    for (method, path, body) in &calls {
        let body = (!body.is_null()).then(|| body.to_string().into_bytes());
        for token in [Some(alice), Some(other_clinician_token()), None] {
            let got = send(method, &net.gw.url(path), token, &[], body.clone()).await;
            let want = if token.is_some() { 403 } else { 401 };
            assert_eq!(got.status, want, "{method} {path}: {}", got.text());
            assert!(!got.text().contains("a1"), "{}", got.text());
        }
    }
    // Nothing changed; each refusal after authentication is receipted as a deny.
    assert_eq!(net.network_of("north", "a1").as_deref(), Some(nid.as_str()));
    assert!(!net.receipts("network-unlink").is_empty());
}

/// Against real FHIR servers (the realistic upstream, which honours `identifier`, `family`,
/// `given` and `birthdate` as a hospital's server would): the same patient at two sites under
/// different ids is discovered and linked, and `$match` grades it.
#[actix_web::test]
async fn discovery_and_match_against_real_fhir_servers() {
    let ada = |id: &str, ids: &[(&str, &str)]| patient(id, "Lovelace", "Ada", "1815-12-10", ids);
    let north = RealisticUpstream::start(&[
        ada("rn-1", &[(NID, "555")]),
        patient("rn-2", "Hopper", "Grace", "1906-12-09", &[]),
    ]);
    let south = RealisticUpstream::start(&[ada("rs-9", &[(NID, "555")]), ada("rs-10", &[])]);
    let table = |upstream: String| {
        json!({"upstream": upstream, "fhir_version": "R4", "default_policy": "opt-out",
               "patient_identifier_systems": [NID], "network_identifier_systems": [NID]})
    };
    let gw = TestGateway::new()
        .site_with("north", table(north.base_url()))
        .site_with("south", table(south.base_url()))
        .start();
    let alice = clinician_token();
    let got = send(
        "GET",
        &gw.url(&format!("/fhir/Patient?identifier={NID}%7C555")),
        Some(alice),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let bundle = got.json();
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{bundle}");
    let base = gw
        .gateway
        .state
        .public_base
        .trim_end_matches('/')
        .to_owned();
    assert_eq!(
        links(&entries[0]["resource"]),
        [
            format!("{base}/fhir/north/Patient/rn-1"),
            format!("{base}/fhir/south/Patient/rs-9"),
        ]
    );
    let body = match_body(ada("q", &[(NID, "555")]), &[]);
    let got = send(
        "POST",
        &gw.url("/fhir/Patient/$match"),
        Some(alice),
        &[("content-type", "application/fhir+json")],
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let graded: Vec<(String, String)> = got.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["resource"]["id"].as_str().unwrap().to_owned(),
                e["search"]["extension"][0]["valueCode"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let expect = |id: &str, grade: &str| (id.to_owned(), grade.to_owned());
    assert_eq!(
        graded,
        [
            expect("rn-1", "certain"),
            expect("rs-9", "certain"),
            expect("rs-10", "probable"),
        ]
    );
}

/// Federated reads against real FHIR servers (Medplum's, one per site): after discovery links
/// the patient's records, `$everything` and a search by network patient answer both sites'
/// data merged, each entry marked with its site; a site-level refusal at one site removes
/// that site's share without naming it; every leg leaves its receipt.
#[actix_web::test]
async fn federated_reads_against_real_fhir_servers() {
    let observation = |id: &str, patient: &str, code: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{patient}")}})
    };
    let ada = |id: &str| patient(id, "Lovelace", "Ada", "1815-12-10", &[(NID, "777")]);
    let north = RealisticUpstream::start(&[
        ada("rn-1"),
        observation("on-1", "rn-1", "8867-4"),
        observation("on-2", "rn-1", "29463-7"),
        patient("rn-2", "Hopper", "Grace", "1906-12-09", &[]),
        observation("on-3", "rn-2", "8867-4"),
    ]);
    let south = RealisticUpstream::start(&[ada("rs-9"), observation("os-1", "rs-9", "8310-5")]);
    let table = |upstream: String| {
        json!({"upstream": upstream, "fhir_version": "R4", "default_policy": "opt-out",
               "patient_identifier_systems": [NID], "network_identifier_systems": [NID]})
    };
    let gw = TestGateway::new()
        .site_with("north", table(north.base_url()))
        .site_with("south", table(south.base_url()))
        .start();
    let alice = clinician_token();
    let found = send(
        "GET",
        &gw.url(&format!("/fhir/Patient?identifier={NID}%7C777")),
        Some(alice),
        &[],
        None,
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.text());
    let nid = found.json()["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids_by_site = |bundle: &Value| {
        let mut ids: Vec<(String, String)> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] != "outcome")
            .map(|e| {
                let site = e["extension"]
                    .as_array()
                    .and_then(|x| x.iter().find(|x| x["url"] == "urn:assent:source-site"))
                    .and_then(|x| x["valueString"].as_str())
                    .unwrap_or("?")
                    .to_owned();
                (site, e["resource"]["id"].as_str().unwrap().to_owned())
            })
            .collect();
        ids.sort();
        ids
    };
    let pair = |s: &str, id: &str| (s.to_owned(), id.to_owned());
    let everything = send(
        "GET",
        &gw.url(&format!("/fhir/Patient/{nid}/$everything")),
        Some(alice),
        &[],
        None,
    )
    .await;
    assert_eq!(everything.status, 200, "{}", everything.text());
    let all = ids_by_site(&everything.json());
    for expected in [
        pair("north", "rn-1"),
        pair("north", "on-1"),
        pair("north", "on-2"),
        pair("south", "rs-9"),
        pair("south", "os-1"),
    ] {
        assert!(all.contains(&expected), "{expected:?} in {all:?}");
    }
    assert!(
        !all.iter().any(|(_, id)| id == "rn-2" || id == "on-3"),
        "{all:?}"
    );
    let search = send(
        "GET",
        &gw.url(&format!("/fhir/Observation?patient={nid}")),
        Some(alice),
        &[],
        None,
    )
    .await;
    assert_eq!(search.status, 200, "{}", search.text());
    assert_eq!(
        ids_by_site(&search.json()),
        [
            pair("north", "on-1"),
            pair("north", "on-2"),
            pair("south", "os-1")
        ]
    );

    // South's record refuses every disclosure (a site-level consent): south's share goes,
    // and nothing names south.
    let refusal = json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/rs-9"}, "provision": {"type": "deny"}});
    let stored = send(
        "POST",
        &gw.url("/consent/Consent?site=south"),
        Some(admin_token()),
        &[("content-type", "application/fhir+json")],
        Some(refusal.to_string().into_bytes()),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    let after = send(
        "GET",
        &gw.url(&format!("/fhir/Observation?patient={nid}")),
        Some(alice),
        &[],
        None,
    )
    .await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(
        ids_by_site(&after.json()),
        [pair("north", "on-1"), pair("north", "on-2")]
    );
    assert!(!after.text().contains("south"), "{}", after.text());
    assert!(!after.text().contains("os-1"), "{}", after.text());
}
