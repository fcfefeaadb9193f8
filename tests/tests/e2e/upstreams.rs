//! The test upstreams themselves, asked directly (not through the gateway): the realistic
//! upstream really honours what the adversarial suite relies on (search parameters, chains,
//! reverse chains, comma and `_id` lists, `_include`/`_revinclude`, `_elements`/`_summary`,
//! `_count`/paging links, `fullUrl`, entry modes, conditional reads, operations,
//! `/metadata`), the data set loads into it valid, and the HOSTILE upstream lies as
//! configured. Also: the data set's compartment table agrees with `assent-fhir`'s R4 data.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use assent_e2e::dataset::*;
use assent_e2e::*;
use serde_json::{Value, json};

/// One realistic upstream with the data set for the whole module.
fn realistic() -> &'static (RealisticUpstream, DataSet) {
    static UPSTREAM: OnceLock<(RealisticUpstream, DataSet)> = OnceLock::new();
    UPSTREAM.get_or_init(|| {
        let data = data_set();
        (RealisticUpstream::start(&data.resources), data)
    })
}

async fn ask(url: &str, headers: &[(&str, &str)]) -> Got {
    send("GET", &url.replace('|', "%7C"), None, headers, None).await
}

/// `Type/id` of the entries of a Bundle with `search.mode` `mode`.
fn ids(bundle: &Value, mode: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"].as_str().unwrap_or("match") == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap_or_default(),
                e["resource"]["id"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn element_of(data: &DataSet, patient: &str, path: &str) -> String {
    data.elements
        .iter()
        .find(|r| r.patient == patient && r.through == path)
        .unwrap_or_else(|| panic!("no resource of {patient} through {path}"))
        .reference
        .clone()
}

#[actix_web::test]
async fn the_data_set_is_valid_for_medplum_and_all_of_it_is_served() {
    let (upstream, data) = realistic();
    let base = upstream.base_url();
    // Every resource can be read back, at its latest version.
    for reference in data.owners.keys() {
        let got = ask(&format!("{base}/{reference}"), &[]).await;
        assert_eq!(got.status, 200, "{reference}: {}", got.text());
        assert_eq!(
            format!(
                "{}/{}",
                got.json()["resourceType"].as_str().unwrap(),
                got.json()["id"].as_str().unwrap()
            ),
            *reference
        );
    }
    // Every compartment element of the R4 definition has a resource for `denied` and one for
    // `allowed`, and the extras too.
    let elements = compartment_elements();
    assert!(elements.iter().filter(|e| e.in_r4_definition).count() >= 100);
    assert_eq!(data.elements.len(), elements.len() * 2);
    for e in &elements {
        for who in [DENIED, ALLOWED] {
            let reference = element_of(data, who, e.path);
            assert!(
                data.owners[&reference].contains(who),
                "{reference} is {who}'s"
            );
        }
    }
    // Absolute references were rewritten to this upstream's base at load.
    let absolute = ask(&format!("{base}/Observation/dn-form-absolute"), &[]).await;
    assert_eq!(
        absolute.json()["subject"]["reference"],
        format!("{base}/Patient/{DENIED}")
    );
}

#[actix_web::test]
async fn medplum_refuses_invalid_resources_and_the_harness_says_which() {
    let refused = RealisticUpstream::try_start(&[
        json!({"resourceType": "Patient", "id": "fine"}),
        json!({"resourceType": "Observation", "id": "bad", "subject": {"reference": "Patient/fine"}}),
    ]);
    let message = refused
        .err()
        .expect("an Observation without status and code is refused");
    assert!(message.contains("Observation/bad"), "{message}");
    assert!(message.contains("Observation.status"), "{message}");
}

#[actix_web::test]
async fn the_upstream_process_stops_when_dropped() {
    let upstream = RealisticUpstream::start(&[json!({"resourceType": "Patient", "id": "p"})]);
    let pid = upstream.pid();
    let base = upstream.base_url();
    assert_eq!(ask(&format!("{base}/Patient/p"), &[]).await.status, 200);
    drop(upstream);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );
}

#[actix_web::test]
async fn searches_honour_parameters_chains_lists_and_forms() {
    let (upstream, data) = realistic();
    let base = upstream.base_url();
    let condition_subject = element_of(data, DENIED, "Condition.subject");
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (
            format!("Condition?code={SECRET_CONDITION}"),
            set(&["Condition/dn-cond-secret"]),
        ),
        (format!("Condition?code={ABSENT_CONDITION}"), set(&[])),
        // A comma list is an OR.
        (
            format!(
                "Condition?code={SECRET_CONDITION},{ABSENT_CONDITION}&subject=Patient/{DENIED}"
            ),
            set(&["Condition/dn-cond-secret"]),
        ),
        (
            format!("Condition?code={SHARED_CONDITION}"),
            set(&[
                "Condition/dn-cond-shared",
                "Condition/al-cond-shared",
                "Condition/ot-cond-shared",
            ]),
        ),
        // An _id list.
        (
            "Observation?_id=al-obs-hba1c-1,dn-obs-secret,no-such".to_owned(),
            set(&["Observation/al-obs-hba1c-1", "Observation/dn-obs-secret"]),
        ),
        // Reference values: Type/id, bare id, :Type modifier, absolute under the base,
        // versioned, percent-encoded.
        (
            format!("Observation?code={SECRET_LAB}&subject=Patient/{DENIED}"),
            set(&["Observation/dn-obs-secret"]),
        ),
        (
            format!("Observation?code={SECRET_LAB}&subject={DENIED}"),
            set(&["Observation/dn-obs-secret"]),
        ),
        (
            format!("Observation?code={SECRET_LAB}&subject:Patient={DENIED}"),
            set(&["Observation/dn-obs-secret"]),
        ),
        (
            format!("Observation?code={SECRET_LAB}&subject={base}/Patient/{DENIED}"),
            set(&["Observation/dn-obs-secret"]),
        ),
        (
            format!("Observation?code={SECRET_LAB}&subject=Patient/{DENIED}/_history/1"),
            set(&["Observation/dn-obs-secret"]),
        ),
        (
            "Observation?code=http%3A%2F%2Floinc.org%7C5195-3&subject=Patient%2Fdenied".to_owned(),
            set(&["Observation/dn-obs-secret"]),
        ),
        // Chains: one level, with a type modifier, two levels; and a reverse chain.
        (
            format!("Observation?code={SECRET_LAB}&patient.family={DENIED_FAMILY}"),
            set(&["Observation/dn-obs-secret"]),
        ),
        (
            format!("Observation?code={SECRET_LAB}&patient.family=Nobody"),
            set(&[]),
        ),
        (
            format!("Condition?subject:Patient.identifier={MRN_SYSTEM}|{DENIED_MRN}"),
            set(&[
                "Condition/dn-cond-secret",
                "Condition/dn-cond-shared",
                condition_subject.as_str(),
            ]),
        ),
        (
            format!(
                "Condition?code={SECRET_CONDITION}&subject:Patient.link:Patient.identifier={MRN_SYSTEM}|nothing"
            ),
            set(&[]),
        ),
        (
            format!("Patient?_has:Condition:subject:code={SECRET_CONDITION}"),
            set(&["Patient/denied"]),
        ),
        (
            format!("Patient?_has:Condition:subject:code={ABSENT_CONDITION}"),
            set(&[]),
        ),
        (
            format!(
                "Patient?_has:Observation:subject:_has:Condition:subject:code={SECRET_CONDITION}"
            ),
            set(&[]),
        ),
    ];
    for (query, expected) in &cases {
        let got = ask(&format!("{base}/{query}"), &[]).await;
        assert_eq!(got.status, 200, "{query}: {}", got.text());
        let bundle = got.json();
        assert_eq!(bundle["type"], "searchset");
        assert_eq!(&ids(&bundle, "match"), expected, "{query}");
        assert_eq!(bundle["total"], expected.len(), "{query}");
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            let r = &entry["resource"];
            assert_eq!(
                entry["fullUrl"],
                format!(
                    "{base}/{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
                "{query}"
            );
        }
        // POST [type]/_search with the same parameters as a form answers the same.
        let (path, form) = query.split_once('?').unwrap();
        let posted = send(
            "POST",
            &format!("{base}/{path}/_search"),
            None,
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.replace('|', "%7C").into_bytes()),
        )
        .await;
        assert_eq!(posted.status, 200, "POST {query}: {}", posted.text());
        assert_eq!(&ids(&posted.json(), "match"), expected, "POST {query}");
    }
}

#[actix_web::test]
async fn includes_entry_modes_and_unknown_parameters() {
    let (upstream, _) = realistic();
    let base = upstream.base_url();
    let got = ask(
        &format!("{base}/Condition?code={SECRET_CONDITION}&_include=Condition:subject"),
        &[],
    )
    .await
    .json();
    assert_eq!(ids(&got, "match"), set(&["Condition/dn-cond-secret"]));
    assert_eq!(ids(&got, "include"), set(&["Patient/denied"]));
    assert_eq!(got["total"], 1, "includes are not counted");

    let got = ask(
        &format!("{base}/Patient?_id={DENIED}&_revinclude=Condition:subject"),
        &[],
    )
    .await
    .json();
    assert_eq!(ids(&got, "match"), set(&["Patient/denied"]));
    assert!(
        ids(&got, "include").contains("Condition/dn-cond-secret"),
        "{got}"
    );

    // An unknown parameter is ignored and said so in an outcome entry; strict refuses it.
    let got = ask(
        &format!("{base}/Condition?code={SECRET_CONDITION}&colour=red"),
        &[],
    )
    .await;
    let bundle = got.json();
    assert_eq!(ids(&bundle, "match"), set(&["Condition/dn-cond-secret"]));
    let outcome = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("an outcome entry");
    assert_eq!(outcome["resource"]["resourceType"], "OperationOutcome");
    assert!(outcome["resource"].to_string().contains("colour"));
    let strict = ask(
        &format!("{base}/Condition?colour=red"),
        &[("prefer", "handling=strict")],
    )
    .await;
    assert_eq!(strict.status, 400, "{}", strict.text());
    // Parameter names are case-sensitive: SUBJECT is not subject.
    let upper = ask(&format!("{base}/Observation?SUBJECT=Patient/{DENIED}"), &[])
        .await
        .json();
    assert!(
        upper["total"].as_u64().unwrap() > 1,
        "the filter was ignored: {}",
        upper["total"]
    );
}

#[actix_web::test]
async fn elements_summary_and_counts_shape_the_answer() {
    let (upstream, _) = realistic();
    let base = upstream.base_url();
    let subsetted = |r: &Value| r["meta"]["tag"].to_string().contains("SUBSETTED");

    // _elements keeps what is asked and what is mandatory: the subject goes.
    let got = ask(
        &format!("{base}/Observation?_id=dn-obs-secret&_elements=code"),
        &[],
    )
    .await
    .json();
    let r = &got["entry"][0]["resource"];
    assert!(r.get("code").is_some() && r.get("status").is_some(), "{r}");
    assert!(
        r.get("subject").is_none() && r.get("valueQuantity").is_none(),
        "{r}"
    );
    assert!(subsetted(r));
    // On a read too.
    let r = ask(
        &format!("{base}/Observation/dn-obs-secret?_elements=code"),
        &[],
    )
    .await
    .json();
    assert!(r.get("subject").is_none() && subsetted(&r), "{r}");

    // _summary=true keeps summary elements (Observation.subject is one); text drops it.
    let r = ask(
        &format!("{base}/Observation/dn-obs-secret?_summary=true"),
        &[],
    )
    .await
    .json();
    assert!(
        r.get("subject").is_some() && r.get("category").is_none() && subsetted(&r),
        "{r}"
    );
    let r = ask(
        &format!("{base}/Observation/dn-obs-secret?_summary=text"),
        &[],
    )
    .await
    .json();
    assert!(r.get("subject").is_none() && r.get("code").is_some(), "{r}");
    let r = ask(
        &format!("{base}/Observation/dn-obs-secret?_summary=data"),
        &[],
    )
    .await
    .json();
    assert!(r.get("subject").is_some() && r.get("text").is_none(), "{r}");

    // _summary=count and _count=0: the total and no entries.
    for q in ["_summary=count", "_count=0"] {
        let got = ask(
            &format!("{base}/Condition?code={SECRET_CONDITION}&{q}"),
            &[],
        )
        .await
        .json();
        assert_eq!(got["total"], 1, "{q}");
        assert!(got.get("entry").is_none(), "{q}: {got}");
    }
}

#[actix_web::test]
async fn paging_links_walk_every_match_once() {
    let (upstream, data) = realistic();
    let base = upstream.base_url();
    let everyone: BTreeSet<String> = data
        .resources
        .iter()
        .filter(|r| {
            r["resourceType"] == "Observation" && r["code"]["coding"][0]["code"] == "4548-4"
        })
        .map(|r| format!("Observation/{}", r["id"].as_str().unwrap()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut url = format!("{base}/Observation?code={HBA1C}&_count=3");
    let mut pages = 0;
    loop {
        let page = ask(&url, &[]).await.json();
        pages += 1;
        assert_eq!(page["total"], everyone.len());
        let links = page["link"].as_array().unwrap();
        let rel = |r: &str| {
            links
                .iter()
                .find(|l| l["relation"] == r)
                .map(|l| l["url"].as_str().unwrap().to_owned())
        };
        assert!(rel("self").unwrap().starts_with(&base));
        assert_eq!(rel("previous").is_some(), pages > 1, "{page}");
        for id in ids(&page, "match") {
            assert!(seen.insert(id.clone()), "{id} twice");
        }
        match rel("next") {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(seen, everyone);
    assert!(pages >= 3);
}

#[actix_web::test]
async fn reads_are_versioned_and_conditional() {
    let (upstream, _) = realistic();
    let base = upstream.base_url();
    let url = format!("{base}/Patient/{DENIED}");
    let read = ask(&url, &[]).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("etag"), Some("W/\"2\""));
    let last_modified = read
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    let cases = [
        (("if-none-match", "W/\"2\""), 304),
        (("if-none-match", "W/\"1\""), 200),
        (("if-modified-since", last_modified.as_str()), 304),
        (("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT"), 200),
    ];
    for ((name, value), status) in cases {
        let got = ask(&url, &[(name, value)]).await;
        assert_eq!(got.status, status, "{name}: {value}");
        if status == 304 {
            assert!(got.body.is_empty());
            assert_eq!(got.header("etag"), Some("W/\"2\""));
        }
    }
    let first = ask(&format!("{url}/_history/1"), &[]).await;
    assert_eq!(first.json()["name"][0]["given"][0], "First");
    assert_eq!(first.header("etag"), Some("W/\"1\""));
    let head = send("HEAD", &url, None, &[], None).await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(head.header("etag"), Some("W/\"2\""));
    assert_eq!(
        ask(&format!("{base}/Patient/nobody"), &[]).await.status,
        404
    );
}

#[actix_web::test]
async fn operations_return_what_they_promise() {
    let (upstream, data) = realistic();
    let base = upstream.base_url();
    // $everything: the patient and its compartment, by the R4 definition.
    let all = ask(
        &format!("{base}/Patient/{DENIED}/$everything?_count=1000"),
        &[],
    )
    .await
    .json();
    let got = ids(&all, "match");
    for must in [
        "Patient/denied".to_owned(),
        "Condition/dn-cond-secret".to_owned(),
        element_of(data, DENIED, "Account.subject"),
        element_of(data, DENIED, "Group.member.entity"),
        element_of(data, DENIED, "Provenance.target"),
        element_of(data, DENIED, "Appointment.participant.actor"),
    ] {
        assert!(got.contains(&must), "$everything lacks {must}");
    }
    assert!(!got.contains("Condition/al-cond-shared"));
    let typed = ask(
        &format!("{base}/Patient/{DENIED}/$everything?_type=Condition"),
        &[],
    )
    .await
    .json();
    assert!(
        ids(&typed, "match")
            .iter()
            .all(|r| r.starts_with("Condition/")),
        "{typed}"
    );
    let paged = ask(
        &format!("{base}/Patient/{DENIED}/$everything?_count=5"),
        &[],
    )
    .await
    .json();
    assert_eq!(paged["entry"].as_array().unwrap().len(), 5);
    assert!(paged["link"].to_string().contains("\"next\""));

    // $lastn: the latest per code.
    let last = ask(
        &format!("{base}/Observation/$lastn?patient={DENIED}&code={HBA1C}"),
        &[],
    )
    .await
    .json();
    assert_eq!(ids(&last, "match"), set(&["Observation/dn-obs-hba1c-2"]));
    let two = ask(
        &format!("{base}/Observation/$lastn?patient={DENIED}&code={HBA1C}&max=2"),
        &[],
    )
    .await
    .json();
    assert_eq!(
        ids(&two, "match"),
        set(&["Observation/dn-obs-hba1c-1", "Observation/dn-obs-hba1c-2"])
    );
    assert_eq!(
        ask(&format!("{base}/Observation/$lastn"), &[]).await.status,
        400
    );

    // $summary: a document of the patient's data.
    let summary = ask(&format!("{base}/Patient/{DENIED}/$summary"), &[])
        .await
        .json();
    assert_eq!(summary["type"], "document");
    assert_eq!(
        summary["entry"][0]["resource"]["resourceType"],
        "Composition"
    );
    assert_eq!(
        summary["entry"][0]["resource"]["subject"]["reference"],
        "Patient/denied"
    );
    assert!(summary.to_string().contains("dn-cond-secret"));

    // $document: the Composition with what its sections list, whoever's it is.
    let doc = ask(
        &format!("{base}/Composition/al-composition-mixed/$document"),
        &[],
    )
    .await
    .json();
    assert_eq!(doc["type"], "document");
    let text = doc.to_string();
    assert!(
        text.contains("dn-obs-hba1c-2") && text.contains("\"allowed\""),
        "{doc}"
    );
    assert_eq!(
        ask(&format!("{base}/Patient/{DENIED}/$stats"), &[])
            .await
            .status,
        400
    );
}

#[actix_web::test]
async fn the_capability_statement_lists_what_is_served() {
    let (upstream, _) = realistic();
    let base = upstream.base_url();
    let cs = ask(&format!("{base}/metadata"), &[]).await.json();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["implementation"]["url"], base);
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    let of = |t: &str| {
        resources
            .iter()
            .find(|r| r["type"] == t)
            .unwrap_or_else(|| panic!("{t}"))
    };
    let ops = |t: &str| {
        of(t)["operation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(ops("Patient"), set(&["everything", "summary"]));
    assert_eq!(ops("Observation"), set(&["lastn"]));
    assert_eq!(ops("Composition"), set(&["document"]));
    assert!(
        of("Observation")["searchParam"]
            .to_string()
            .contains("\"subject\"")
    );
    assert_eq!(of("Patient")["conditionalRead"], "full-support");
    assert!(resources.len() > 100);
}

#[actix_web::test]
async fn the_hostile_upstream_lies_as_configured() {
    let data = data_set();
    let smuggled = vec!["Condition/dn-cond-secret".to_owned()];
    let hostile = HostileUpstream::start(
        &data.resources,
        Lies::all(&[("Patient/allowed", "Patient/denied")], &smuggled),
    );
    let base = hostile.base_url();
    let read = ask(&format!("{base}/Patient/{ALLOWED}"), &[]).await.json();
    assert_eq!(read["id"], DENIED, "a read answers another resource");
    assert!(read["text"]["div"].as_str().unwrap().contains(&base));

    let bundle = ask(&format!("{base}/Condition?subject=Patient/{ALLOWED}"), &[])
        .await
        .json();
    assert!(ids(&bundle, "match").contains("Condition/al-cond-shared"));
    assert!(
        !ids(&bundle, "match").contains("Condition/dn-cond-shared"),
        "the subject filter is honoured"
    );
    assert!(ids(&bundle, "outcome").contains("Condition/dn-cond-secret"));
    assert!(ids(&bundle, "include").contains("Condition/dn-cond-secret"));
    assert!(bundle.to_string().contains(hostile::INTERNAL_HOST));
    assert!(
        bundle["total"].as_u64().unwrap() > 1,
        "the total counts what is not there"
    );
    assert!(
        bundle.to_string().contains("\"Parameters\""),
        "a Bundle nested in a resource"
    );

    let blind = ask(
        &format!("{base}/Patient/{DENIED}"),
        &[("if-none-match", "W/\"99\"")],
    )
    .await;
    assert_eq!(blind.status, 304);
    let stripped = ask(
        &format!("{base}/Observation/dn-obs-secret?_elements=code"),
        &[],
    )
    .await
    .json();
    assert!(stripped.get("subject").is_none());
    let op = ask(&format!("{base}/Patient/{ALLOWED}/$whatever"), &[])
        .await
        .json();
    assert!(op.to_string().contains("dn-cond-secret"));
    let missing = ask(&format!("{base}/Patient/nobody"), &[]).await;
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains(hostile::INTERNAL_HOST));
    assert!(!hostile.requests().is_empty());
}

/// The data set's R4 compartment table and `assent-fhir`'s R4 compartment data agree. Fails
/// while `assent-fhir` carries its placeholder subset; passes when the generated tables land
/// (or names what they list that the R4 definition does not, or the reverse).
#[test]
fn the_compartment_table_agrees_with_assent_fhir() {
    let missing = missing_elements();
    let unlisted = unlisted_elements();
    assert!(
        missing.is_empty() && unlisted.is_empty(),
        "assent-fhir lists for R4 but the R4 definition does not: {missing:?}\n\
         the R4 definition lists but assent-fhir does not: {unlisted:?}"
    );
}
