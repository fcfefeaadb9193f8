//! The demo answers a read, a search with paging and an unknown-site error, from two sample
//! sites of at least 20 patients each, to a token got from its identity provider as its
//! instructions say; its printed `assent verify` command verifies an export; its identity
//! provider grants each sample caller only its own scopes, on the port asked for.

use assent_e2e::*;
use assent_gateway::demo;

#[actix_web::test]
async fn the_demo_answers_as_its_instructions_say() {
    let mut options = demo::DemoOptions::new("127.0.0.1:0".parse().unwrap());
    options.log_level = "warn".into();
    let running = demo::start(&options).expect("demo starts");
    let base = running.gateway.base_url();
    let token_url = running.identity_provider.token_url();
    let instructions = running.instructions();
    assert!(instructions.contains(&format!("{base}/fhir/st-mary/Patient/stm-p001")));
    assert!(instructions.contains(&format!(
        "-d client_id={} {token_url}",
        demo::DEMO_CLINICIAN
    )));

    // Get a token as the instructions do.
    let form = format!(
        "grant_type=client_credentials&client_id={}",
        demo::DEMO_CLINICIAN
    );
    let got = send(
        "POST",
        &token_url,
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.into_bytes()),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("cache-control"), Some("no-store"));
    let token = got.json()["access_token"].as_str().unwrap().to_owned();
    let key = Some(token.as_str());

    let anonymous = send(
        "GET",
        &format!("{base}/fhir/st-mary/Patient/stm-p001"),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(anonymous.status, 401);

    let read = send(
        "GET",
        &format!("{base}/fhir/st-mary/Patient/stm-p001"),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["id"], "stm-p001");

    let patients = send(
        "GET",
        &format!("{base}/fhir/st-mary/Patient?_count=50"),
        key,
        &[],
        None,
    )
    .await;
    let listed = patients.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .count();
    // 24 at the site; stm-p003 refused every disclosure and is withheld.
    assert!(listed >= 20, "{listed}");

    let mut url = format!("{base}/fhir/st-mary/Observation?patient=stm-p001&_count=2");
    let mut pages = 0;
    let mut seen = 0;
    loop {
        let page = send("GET", &url, key, &[], None).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let bundle = page.json();
        seen += bundle["entry"].as_array().map(Vec::len).unwrap_or(0);
        pages += 1;
        match bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_owned(),
            None => break,
        }
        assert!(
            url.starts_with(&base) && url.contains("_assent_page="),
            "{url}"
        );
    }
    assert!(pages >= 2, "at least three observations make two pages");
    assert_eq!(
        seen as u64,
        bundle_total(
            &format!("{base}/fhir/st-mary/Observation?patient=stm-p001&_count=50"),
            key
        )
        .await
    );
    assert!(seen >= 3);

    let unknown = send(
        "GET",
        &format!("{base}/fhir/no-such-site/Patient/1"),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "unknown-site")
    );

    // Consent, as the instructions show it.
    let get = |path: String| {
        let url = format!("{base}{path}");
        let key = key.map(str::to_owned);
        async move { send("GET", &url, key.as_deref(), &[], None).await }
    };
    let consented = get("/fhir/north-general/Patient/ng-p001".into()).await;
    assert_eq!(consented.status, 200, "{}", consented.text());
    assert!(
        consented
            .header("x-assent-consent")
            .unwrap()
            .starts_with(&format!("consent:{}@1", demo::DEMO_REVOCABLE_CONSENT))
    );
    let none = get("/fhir/north-general/Patient/ng-p003".into()).await;
    assert_eq!(
        (none.status, none.error_code().as_str()),
        (403, "consent-denied")
    );
    let opted_out = get("/fhir/st-mary/Patient/stm-p003".into()).await;
    assert_eq!(opted_out.error_code(), "consent-denied");
    assert_eq!(
        get("/fhir/st-mary/Patient/stm-p004".into()).await.status,
        200
    );
    let conditions = get("/fhir/st-mary/Condition?patient=stm-p004".into()).await;
    assert_eq!(conditions.error_code(), "consent-denied");
    let everything = get("/fhir/st-mary/Patient/stm-p004/$everything".into()).await;
    assert_eq!(everything.status, 200, "{}", everything.text());
    let everything = everything.json();
    let entries = everything["entry"].as_array().unwrap();
    let types: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    assert!(
        types.contains(&"Observation") && !types.contains(&"Condition"),
        "{types:?}"
    );
    assert!(entries.iter().any(|e| e["search"]["mode"] == "outcome"));
    // Break-glass, as the instructions show it: dr-bob's default token has the grant and
    // purpose ETREAT.
    assert!(instructions.contains("X-Assent-Break-Glass-Reason"));
    let got = send(
        "POST",
        &token_url,
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"grant_type=client_credentials&client_id=dr-bob".to_vec()),
    )
    .await;
    let bob = got.json()["access_token"].as_str().unwrap().to_owned();
    let url = format!("{base}/fhir/north-general/Patient/ng-p003");
    let refused = send("GET", &url, Some(&bob), &[], None).await;
    assert_eq!(refused.error_code(), "break-glass-justification-required");
    let glass = send(
        "GET",
        &url,
        Some(&bob),
        &[("x-assent-break-glass-reason", "unconscious in ER")],
        None,
    )
    .await;
    assert_eq!(glass.status, 200, "{}", glass.text());
    assert_eq!(
        glass.header("x-assent-consent"),
        Some("break-glass:site-default:opt-in")
    );
    // A patient-confined token as the instructions get it, launched at St Mary's: its
    // patient there, never the same id at North General.
    assert!(instructions.contains(&format!("-d aud={base}/fhir/st-mary")));
    let form = format!(
        "grant_type=client_credentials&client_id=dr-alice&scope=patient/*.rs&patient=stm-p001&aud={base}/fhir/st-mary"
    );
    let got = send(
        "POST",
        &token_url,
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.into_bytes()),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let confined = got.json()["access_token"].as_str().unwrap().to_owned();
    let own = format!("{base}/fhir/st-mary/Patient/stm-p001");
    let got = send("GET", &own, Some(&confined), &[], None).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let elsewhere = format!("{base}/fhir/north-general/Patient/stm-p001");
    let got = send("GET", &elsewhere, Some(&confined), &[], None).await;
    assert_eq!(got.error_code(), "patient-context-unbound");
    assert!(instructions.contains("$revoke"));
    let revoked = send(
        "POST",
        &format!(
            "{base}/consent/Consent/{}/$revoke",
            demo::DEMO_REVOCABLE_CONSENT
        ),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let after = get("/fhir/north-general/Patient/ng-p001".into()).await;
    assert_eq!(after.error_code(), "consent-denied");

    let admin = send("GET", &format!("{base}/admin/sites"), key, &[], None).await;
    assert_eq!(admin.status, 200, "{}", admin.text());

    // Its requests are logged as text at the level asked for (the access log has no patient
    // field: proxy/receipt.rs).
    let log = &running.gateway.state.config.log;
    assert!(
        log.access_log
            && log.format == assent_gateway::config::LogFormat::Text
            && log.level == "warn",
        "{log:?}"
    );

    // The database and the configuration are printed, and the printed `assent verify`
    // command verifies the export the instructions take.
    assert!(running.database.is_file());
    assert!(instructions.contains(&format!("Database: {}", running.database.display())));
    let verify_line = instructions
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("assent verify "))
        .expect("a verify command");
    assert_eq!(
        verify_line,
        format!(
            "assent verify --config {} receipts.ndjson",
            running.config_file.display()
        )
    );
    let auditor = demo_token(&token_url, "privacy-officer", None).await;
    let export = send(
        "GET",
        &format!("{base}/audit/export?format=ndjson"),
        Some(&auditor),
        &[],
        None,
    )
    .await;
    assert_eq!(export.status, 200, "{}", export.text());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipts.ndjson");
    std::fs::write(&file, &export.body).unwrap();
    assert!(export.text().lines().count() > 10, "{}", export.text());
    let args = assent_gateway::cli::verify::VerifyArgs {
        export: file.clone(),
        config: Some(running.config_file.clone()),
        anchors: None,
        options: Default::default(),
    };
    let verify = move || assent_gateway::cli::verify::main(&args);
    assert_eq!(
        actix_web::rt::task::spawn_blocking(verify).await.unwrap(),
        0,
        "the printed verify command passes"
    );
    // A changed line fails it.
    let tampered = export
        .text()
        .replacen("\"status\":200", "\"status\":404", 1);
    assert_ne!(tampered, export.text());
    std::fs::write(&file, tampered).unwrap();
    let args = assent_gateway::cli::verify::VerifyArgs {
        export: file,
        config: Some(running.config_file.clone()),
        anchors: None,
        options: Default::default(),
    };
    let verify = move || assent_gateway::cli::verify::main(&args);
    assert_eq!(
        actix_web::rt::task::spawn_blocking(verify).await.unwrap(),
        1
    );
}

/// A token from the demo's identity provider over HTTP; `Err` carries the refusal.
async fn demo_token(token_url: &str, client: &str, scope: Option<&str>) -> String {
    try_demo_token(token_url, client, scope)
        .await
        .unwrap_or_else(|e| panic!("{client}: {e:?}"))
}

async fn try_demo_token(
    token_url: &str,
    client: &str,
    scope: Option<&str>,
) -> Result<String, (u16, String)> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials")
        .append_pair("client_id", client);
    if let Some(scope) = scope {
        form.append_pair("scope", scope);
    }
    let got = send(
        "POST",
        token_url,
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.finish().into_bytes()),
    )
    .await;
    match got.json()["access_token"].as_str() {
        Some(token) if got.status == 200 => Ok(token.to_owned()),
        _ => Err((
            got.status,
            got.json()["error"].as_str().unwrap_or_default().to_owned(),
        )),
    }
}

/// Adversarial: over the demo's identity provider, a clinician asks for the audit role and for
/// break-glass. Both are refused; the audit API and break-glass stay closed to it, and open to
/// the callers that hold them. The provider listens on the port asked for.
#[actix_web::test]
async fn the_demo_identity_provider_grants_a_clinician_neither_the_audit_role_nor_break_glass() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = demo::DemoOptions::new("127.0.0.1:0".parse().unwrap());
    options.idp_port = port;
    options.log_level = "warn".into();
    let running = demo::start(&options).expect("demo starts");
    assert_eq!(running.identity_provider.addr.port(), port);
    let base = running.gateway.base_url();
    let token_url = running.identity_provider.token_url();
    assert_eq!(token_url, format!("http://127.0.0.1:{port}/token"));

    for scope in [
        "openid fhirUser user/AuditEvent.rs",
        "openid fhirUser user/*.rs assent/break-glass",
        "system/*.rs",
    ] {
        assert_eq!(
            try_demo_token(&token_url, "dr-alice", Some(scope)).await,
            Err((400, "invalid_scope".to_owned())),
            "{scope}"
        );
    }
    let alice = demo_token(&token_url, "dr-alice", None).await;
    let audit = send(
        "GET",
        &format!("{base}/audit/AuditEvent?_count=1"),
        Some(&alice),
        &[],
        None,
    )
    .await;
    assert_eq!(audit.status, 403, "{}", audit.text());
    // dr-alice with purpose ETREAT (anyone may state a purpose) still holds no break-glass
    // grant: ng-p003, who consented to no one, stays closed.
    let emergency = send(
        "POST",
        &token_url,
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"grant_type=client_credentials&client_id=dr-alice&purpose=ETREAT".to_vec()),
    )
    .await;
    assert_eq!(emergency.status, 200, "{}", emergency.text());
    let emergency = emergency.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let glass = send(
        "GET",
        &format!("{base}/fhir/north-general/Patient/ng-p003"),
        Some(&emergency),
        &[("x-assent-break-glass-reason", "curious")],
        None,
    )
    .await;
    assert_eq!(glass.status, 403, "{}", glass.text());
    assert_ne!(
        glass.header("x-assent-consent"),
        Some("break-glass:site-default:opt-in")
    );

    let officer = demo_token(&token_url, "privacy-officer", None).await;
    let audit = send(
        "GET",
        &format!("{base}/audit/AuditEvent?_count=1"),
        Some(&officer),
        &[],
        None,
    )
    .await;
    assert_eq!(audit.status, 200, "{}", audit.text());
}

async fn bundle_total(url: &str, key: Option<&str>) -> u64 {
    send("GET", url, key, &[], None).await.json()["total"]
        .as_u64()
        .unwrap()
}

/// The demo's third hospital speaks R5, and its network patients (six people held at two or
/// three hospitals under different local ids) are linked by their national id; the
/// near-match without it is not linked. The instructions name each network patient.
#[actix_web::test]
async fn the_demo_holds_network_patients_at_three_hospitals() {
    let mut options = demo::DemoOptions::new("127.0.0.1:0".parse().unwrap());
    options.log_level = "warn".into();
    let running = demo::start(&options).expect("demo starts");
    let base = running.gateway.base_url();
    let token = demo_token(
        &running.identity_provider.token_url(),
        demo::DEMO_CLINICIAN,
        None,
    )
    .await;
    let key = Some(token.as_str());

    let r5 = send(
        "GET",
        &format!("{base}/fhir/lakeside/Patient/lk-p012"),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(r5.status, 200, "{}", r5.text());
    assert!(
        r5.header("content-type").unwrap().contains("5.0"),
        "{:?}",
        r5.header("content-type")
    );

    assert_eq!(running.network.len(), 7, "{:?}", running.network);
    let multi_site = running
        .network
        .iter()
        .filter(|(_, records)| records.len() >= 2)
        .count();
    assert_eq!(multi_site, 6, "{:?}", running.network);
    let instructions = running.instructions();
    for (id, records) in &running.network {
        assert!(instructions.contains(id.as_str()), "{id}");
        let sites: std::collections::BTreeSet<&str> = records
            .iter()
            .map(|r| r.split('/').next().unwrap())
            .collect();
        assert_eq!(
            sites.len(),
            records.len(),
            "one record per site: {records:?}"
        );
        for record in records {
            let (site, rest) = record.split_once('/').unwrap();
            let local = rest.trim_start_matches("Patient/");
            let linked = running
                .gateway
                .state
                .network
                .network_of(site, local)
                .unwrap();
            assert_eq!(linked.as_deref(), Some(id.as_str()), "{record}");
        }
    }
    // The near-match (Greta Yarrow at lakeside, without the national id) stays unlinked.
    assert_eq!(
        running
            .gateway
            .state
            .network
            .network_of("lakeside", "lk-p007")
            .unwrap(),
        None
    );
    for site in ["st-mary", "north-general", "lakeside"] {
        assert!(instructions.contains(site), "{site}");
    }
}

/// Against the demo's own sample hospitals: discovery by national id answers the network
/// patient with a link to each record the caller may read (north-general is opt-in and its
/// record has no consent: left out), and `$match` finds the near-match at lakeside as
/// probable, which the administrator confirms.
#[actix_web::test]
async fn the_demo_discovers_and_matches_its_network_patients() {
    let mut options = demo::DemoOptions::new("127.0.0.1:0".parse().unwrap());
    options.log_level = "warn".into();
    let running = demo::start(&options).expect("demo starts");
    let base = running.gateway.base_url();
    let token = demo_token(
        &running.identity_provider.token_url(),
        demo::DEMO_CLINICIAN,
        None,
    )
    .await;
    let key = Some(token.as_str());
    let first = &demo::sample_data::NETWORK_PEOPLE[0];
    let found = send(
        "GET",
        &format!(
            "{base}/fhir/Patient?identifier={}|{}",
            demo::sample_data::NATIONAL_ID_SYSTEM,
            first.national_id
        ),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.text());
    let bundle = found.json();
    let patients: Vec<&serde_json::Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Patient")
        .collect();
    assert_eq!(patients.len(), 1, "{bundle}");
    let network = &patients[0]["resource"];
    assert_eq!(network["id"], running.network[0].0.as_str());
    let links: Vec<&str> = network["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["other"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        links,
        [
            format!("{base}/fhir/lakeside/Patient/lk-p012"),
            format!("{base}/fhir/st-mary/Patient/stm-p010"),
        ],
        "{bundle}"
    );
    assert!(!bundle.to_string().contains("ng-p011"), "{bundle}");

    // The network consent the instructions print (a refusal naming the network patient)
    // applies at every hospital holding them.
    let nid = running.network[0].0.clone();
    let consent = serde_json::json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{nid}")}, "provision": {"type": "deny"}});
    let stored = send(
        "POST",
        &format!("{base}/consent/Consent?site=network"),
        key,
        &[("content-type", "application/fhir+json")],
        Some(consent.to_string().into_bytes()),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    for record in ["st-mary/Patient/stm-p010", "lakeside/Patient/lk-p012"] {
        let read = send("GET", &format!("{base}/fhir/{record}"), key, &[], None).await;
        assert_eq!(read.status, 403, "{record}: {}", read.text());
    }
    let other = send(
        "GET",
        &format!("{base}/fhir/st-mary/Patient/stm-p011"),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.text());

    let near = demo::sample_data::NETWORK_PEOPLE
        .iter()
        .find(|p| p.records.iter().any(|r| !r.2))
        .unwrap();
    let parameters = serde_json::json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {
        "resourceType": "Patient",
        "name": [{"family": near.family, "given": [near.given]}],
        "gender": near.gender, "birthDate": near.birth_date,
        "identifier": [{"system": demo::sample_data::NATIONAL_ID_SYSTEM, "value": near.national_id}],
    }}]});
    let matched = send(
        "POST",
        &format!("{base}/fhir/Patient/$match"),
        key,
        &[("content-type", "application/fhir+json")],
        Some(parameters.to_string().into_bytes()),
    )
    .await;
    assert_eq!(matched.status, 200, "{}", matched.text());
    let grades: Vec<(String, String)> = matched.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Patient")
        .map(|e| {
            let grade = e["search"]["extension"][0]["valueCode"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (e["fullUrl"].as_str().unwrap().to_owned(), grade)
        })
        .collect();
    assert!(
        grades.contains(&(
            format!("{base}/fhir/st-mary/Patient/stm-p014"),
            "certain".into()
        )),
        "{grades:?}"
    );
    assert!(
        grades.contains(&(
            format!("{base}/fhir/lakeside/Patient/lk-p007"),
            "probable".into()
        )),
        "{grades:?}"
    );
    // The administrator confirms the candidate: the near-match joins the network patient.
    let candidates = send(
        "GET",
        &format!("{base}/admin/network/candidates"),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(candidates.status, 200, "{}", candidates.text());
    let listed = candidates.json();
    let id = listed
        .as_array()
        .or_else(|| listed["candidates"].as_array())
        .and_then(|c| {
            c.iter().find(|c| {
                c["patient"].as_str().is_some_and(|p| p.contains("lk-p007"))
                    || c["patient_id"] == "lk-p007"
            })
        })
        .map(|c| c["id"].to_string().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("{listed}"));
    let confirmed = send(
        "POST",
        &format!("{base}/admin/network/candidates/{id}/$confirm"),
        key,
        &[],
        None,
    )
    .await;
    assert!(
        confirmed.status == 200 || confirmed.status == 201,
        "{}",
        confirmed.text()
    );
    let stm = running
        .gateway
        .state
        .network
        .network_of("st-mary", "stm-p014")
        .unwrap();
    assert!(stm.is_some());
    assert_eq!(
        running
            .gateway
            .state
            .network
            .network_of("lakeside", "lk-p007")
            .unwrap(),
        stm
    );
}

/// The demo's patient portal: its instructions name it, and both sample patients sign in
/// through the demo identity provider's page (jane-doe as St Mary's stm-p001, john-roe as the
/// first network patient, whose consents at every site are listed).
#[actix_web::test]
async fn the_demo_portal_signs_in_its_sample_patients() {
    let mut options = demo::DemoOptions::new("127.0.0.1:0".parse().unwrap());
    options.log_level = "warn".into();
    let running = demo::start(&options).expect("demo starts");
    let base = running.gateway.base_url();
    assert!(running.instructions().contains(&format!("{base}/portal/")));
    for who in ["jane-doe", "john-roe"] {
        let login = send("GET", &format!("{base}/portal/login"), None, &[], None).await;
        assert_eq!(login.status, 302, "{}", login.text());
        let cookie = login
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let authorize = format!("{}&login_as={who}", login.header("location").unwrap());
        let picked = send("GET", &authorize, None, &[], None).await;
        assert_eq!(picked.status, 302, "{}", picked.text());
        let callback = picked.header("location").unwrap().to_owned();
        let signed_in = send("GET", &callback, None, &[("cookie", &cookie)], None).await;
        assert_eq!(signed_in.status, 200, "{who}: {}", signed_in.text());
        let session = signed_in
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.split(';').next().unwrap().to_owned())
            .find(|c| c.starts_with("assent_portal=") && c.len() > "assent_portal=".len())
            .expect("a portal session");
        let page = send(
            "GET",
            &format!("{base}/portal/"),
            None,
            &[("cookie", &session)],
            None,
        )
        .await;
        assert_eq!(page.status, 200, "{who}: {}", page.text());
        assert!(page.text().contains("My sharing choices"), "{who}");
        // The grant form lists the sample sites' directories (id and name only).
        let text = page.text();
        assert!(
            text.contains("<optgroup label=\"Practitioners at ")
                && text.contains("(sample hospital) (Organization/"),
            "{who}: {text}"
        );
        assert!(!text.contains("directory-unavailable"), "{who}: {text}");
    }
}
