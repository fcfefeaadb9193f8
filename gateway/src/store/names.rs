//! Names beside ids, for the compliance console: the name each user caller's token last gave
//! (`caller_names`), and the patient's name a stored consent document gives
//! (`Consent.patient.display`, `Consent.subject.display` in R5). Display only: nothing is
//! decided on them, and they never reach the ledger, a receipt or the logs.

use std::collections::HashMap;

use diesel::prelude::*;
use serde_json::Value;

use super::schema::{caller_names, consent_documents};
use super::{Store, StoreError};

/// At most this many ids are looked up at once (a console page shows fewer).
const LOOKUP_MAX: usize = 200;

impl Store {
    /// Keeps `display` as the name of `actor` (replacing the one kept before).
    pub fn put_caller_name(
        &self,
        actor: &str,
        display: &str,
        seen_at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.transaction(|conn| {
            let updated = diesel::update(caller_names::table.filter(caller_names::actor.eq(actor)))
                .set((
                    caller_names::display.eq(display),
                    caller_names::seen_at_ms.eq(seen_at_ms),
                ))
                .execute(conn)?;
            if updated == 0 {
                let inserted = diesel::insert_into(caller_names::table)
                    .values((
                        caller_names::actor.eq(actor),
                        caller_names::display.eq(display),
                        caller_names::seen_at_ms.eq(seen_at_ms),
                    ))
                    .execute(conn);
                match inserted {
                    // Another node kept a name for the actor at the same moment: either is
                    // one its tokens gave.
                    Ok(_)
                    | Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, diesel::result::Error>(())
        })?;
        Ok(())
    }

    /// The names kept for `actors`, by actor (those with none are left out).
    pub fn caller_names(&self, actors: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if actors.is_empty() {
            return Ok(HashMap::new());
        }
        let actors = &actors[..actors.len().min(LOOKUP_MAX)];
        let mut conn = self.conn()?;
        let rows: Vec<(String, String)> = caller_names::table
            .filter(caller_names::actor.eq_any(actors))
            .select((caller_names::actor, caller_names::display))
            .load(&mut *conn)?;
        Ok(rows.into_iter().collect())
    }

    /// The patients' names the stored consent documents give, by patient identity as
    /// receipts name them (`{site}/Patient/{id}`, or `system|value` for a patient named by
    /// identifier); the newest document wins. Patients no document names with a display are
    /// left out.
    pub fn patient_displays(
        &self,
        patients: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let wanted: Vec<Wanted> = patients
            .iter()
            .take(LOOKUP_MAX)
            .filter_map(|p| Wanted::parse(p))
            .collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let mut conn = self.conn()?;
        // Narrowed in SQL to documents that mention one of the patients; decided below on
        // the parsed document.
        let mut query = consent_documents::table
            .select((consent_documents::site, consent_documents::document))
            .into_boxed();
        for (i, w) in wanted.iter().enumerate() {
            let mention = consent_documents::document.like(format!("%{}%", w.mention()));
            query = if i == 0 {
                query.filter(mention)
            } else {
                query.or_filter(mention)
            };
        }
        let rows: Vec<(String, String)> = query
            .order(consent_documents::stored_at_ms.asc())
            .load(&mut *conn)?;
        let mut found = HashMap::new();
        for (site, document) in rows {
            let Ok(document) = serde_json::from_str::<Value>(&document) else {
                continue;
            };
            let Some(patient) = document.get("patient").or_else(|| document.get("subject")) else {
                continue;
            };
            let Some(display) = patient
                .get("display")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|d| !d.is_empty() && !d.chars().any(char::is_control))
            else {
                continue;
            };
            for w in &wanted {
                if w.is_named_by(&site, patient) {
                    found.insert(w.identity.clone(), display.to_owned());
                }
            }
        }
        Ok(found)
    }
}

/// A patient identity looked up.
struct Wanted {
    identity: String,
    form: Form,
}

enum Form {
    /// `{site}/Patient/{id}`
    AtSite { site: String, id: String },
    /// `system|value`
    Identifier { system: String, value: String },
}

impl Wanted {
    fn parse(identity: &str) -> Option<Wanted> {
        let form = if let Some((site, id)) = identity.split_once("/Patient/") {
            if site.is_empty() || site.contains('/') || id.is_empty() || id.contains('/') {
                return None;
            }
            Form::AtSite {
                site: site.to_owned(),
                id: id.to_owned(),
            }
        } else {
            let (system, value) = identity.split_once('|')?;
            if value.is_empty() {
                return None;
            }
            Form::Identifier {
                system: system.to_owned(),
                value: value.to_owned(),
            }
        };
        Some(Wanted {
            identity: identity.to_owned(),
            form,
        })
    }

    /// Text any document naming this patient holds.
    fn mention(&self) -> String {
        match &self.form {
            Form::AtSite { id, .. } => format!("Patient/{id}\""),
            Form::Identifier { value, .. } => value.clone(),
        }
    }

    /// Whether the consent's patient element (of a document stored for `site`) is this
    /// patient.
    fn is_named_by(&self, site: &str, patient: &Value) -> bool {
        match &self.form {
            Form::AtSite { site: s, id } => {
                let Some(reference) = patient.get("reference").and_then(Value::as_str) else {
                    return false;
                };
                let local = format!("Patient/{id}");
                s == site && (reference == local || reference.ends_with(&format!("/{local}")))
            }
            Form::Identifier { system, value } => {
                let identifier = &patient["identifier"];
                identifier["value"].as_str() == Some(value.as_str())
                    && identifier["system"].as_str().unwrap_or("") == system
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing;

    #[test]
    fn a_caller_name_is_kept_and_replaced() {
        for t in testing::all() {
            let store = &t.store;
            store
                .put_caller_name("Practitioner/dr-alice", "Alice Adams", 1)
                .unwrap();
            store
                .put_caller_name("Practitioner/dr-alice", "Alice Adams-Smith", 2)
                .unwrap();
            let names = store
                .caller_names(&["Practitioner/dr-alice".into(), "Practitioner/dr-bob".into()])
                .unwrap();
            assert_eq!(names.len(), 1);
            assert_eq!(names["Practitioner/dr-alice"], "Alice Adams-Smith");
        }
    }

    #[test]
    fn a_patients_name_comes_from_the_consent_of_that_patient_at_that_site() {
        for t in testing::all() {
            let store = &t.store;
            let consent = |patient: serde_json::Value| {
                serde_json::json!({"resourceType": "Consent", "status": "active", "patient": patient})
                    .to_string()
            };
            let put = |hash: &str, site: &str, document: String, at: i64| {
                store
                    .put_consent_document(hash, "k", site, &document, at)
                    .unwrap()
            };
            put(
                "h1",
                "st-mary",
                consent(serde_json::json!({"reference": "Patient/p1", "display": "Jane Doe"})),
                1,
            );
            // Another site's p1 is another patient.
            put(
                "h2",
                "north-general",
                consent(serde_json::json!({"reference": "Patient/p1", "display": "John Roe"})),
                2,
            );
            // p10 is not p1.
            put(
                "h3",
                "st-mary",
                consent(serde_json::json!({"reference": "Patient/p10", "display": "Not Jane"})),
                3,
            );
            put(
                "h4",
                "st-mary",
                consent(
                    serde_json::json!({"identifier": {"system": "urn:mrn", "value": "123"}, "display": "Mo Ray"}),
                ),
                4,
            );
            put(
                "h5",
                "st-mary",
                consent(serde_json::json!({"reference": "Patient/p2"})),
                5,
            );
            let names = store
                .patient_displays(&[
                    "st-mary/Patient/p1".into(),
                    "north-general/Patient/p1".into(),
                    "urn:mrn|123".into(),
                    "st-mary/Patient/p2".into(),
                    "st-mary/Patient/p3".into(),
                ])
                .unwrap();
            assert_eq!(names.len(), 3, "{names:?}");
            assert_eq!(names["st-mary/Patient/p1"], "Jane Doe");
            assert_eq!(names["north-general/Patient/p1"], "John Roe");
            assert_eq!(names["urn:mrn|123"], "Mo Ray");
        }
    }
}
