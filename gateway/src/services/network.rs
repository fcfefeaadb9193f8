//! The network patient index: which site-local patients are one network patient.
//!
//! A network patient has a stable opaque id (`n-` and 40 hex digits: a keyed hash of the
//! network identifier that first made it, so two gateways or two racing requests that learn
//! the same patient arrive at the same id, and nothing of the identifier can be read back).
//! **Certain links** come from the sites' network identifier systems
//! (`sites.*.network_identifier_systems`): site-local patients sharing a value of such a
//! system are one network patient. Identifier values are kept only as keyed hashes (HMAC
//! with the consortium key, domain `network-identifier`), never in clear.
//!
//! Each link is kept with when and how it was learned (`identifier`: the system;
//! `confirmed`: the administrator). The first link of a site patient stands: a conflicting
//! identifier never moves a patient from one network patient to another.
//!
//! **Refused pairs:** a pair (site patient, network patient) an administrator rejected as a
//! match candidate or unlinked is remembered (`network_refusals`) and never linked again by
//! learning; only an administrator's confirmation links it (and forgets the refusal).
//! **Candidates:** `Patient/$match` keeps probable and possible matches as candidates
//! (`network_candidates`) for an administrator to confirm or reject; only certain matches
//! link automatically.
//!
//! Learning from what passes through runs off the request path (`network_learner.rs`: a
//! bounded queue and a thread), offered by the outbound half of a site request
//! ([`NetworkIndex::offer`]: cheap when the resource is not a Patient or the site has no
//! network systems).
//!
//! Leaves out: asking the sites (discovery and `$match` fan out through the pipeline), the
//! receipts of link changes (`network_learner.rs` for learnt links, `api/network.rs` for the
//! administrator's), and who may change links (the admin API).

use std::collections::BTreeSet;

use assent_consent::ConsortiumKey;
use assent_fhir::SitePatient;

use crate::config::Config;
use crate::services::network_learner::Learner;
use crate::store::network::{CandidateRow, LinkRow};
use crate::store::{Store, StoreError};

/// The pseudo-site of network patients: `network/Patient/{network-id}` is a network patient's
/// identity where a site patient's is `{site}/Patient/{id}` (consents naming a network
/// patient are kept under it). No site may have this id (`config::sites::RESERVED_SITE_IDS`).
pub const NETWORK_SITE: &str = "network";

/// How a link was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkHow {
    /// A shared value of a network identifier system.
    Identifier,
    /// An administrator confirmed a match candidate.
    Confirmed,
}

impl LinkHow {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkHow::Identifier => "identifier",
            LinkHow::Confirmed => "confirmed",
        }
    }

    fn parse(s: &str) -> LinkHow {
        match s {
            "confirmed" => LinkHow::Confirmed,
            _ => LinkHow::Identifier,
        }
    }
}

/// A site-local patient linked to a network patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLink {
    pub patient: SitePatient,
    pub network_id: String,
    pub how: LinkHow,
    /// `Identifier`: the system; `Confirmed`: the confirming caller's id.
    pub evidence: String,
    pub learned_at_ms: i64,
}

impl From<LinkRow> for NetworkLink {
    fn from(row: LinkRow) -> NetworkLink {
        NetworkLink {
            patient: SitePatient::new(row.site, row.patient_id),
            network_id: row.network_id,
            how: LinkHow::parse(&row.how),
            evidence: row.evidence,
            learned_at_ms: row.learned_at_ms,
        }
    }
}

/// What [`NetworkIndex::learn`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// The network patient the learning patient belongs to now, if any.
    pub network_id: Option<String>,
    /// Links made by this call (the patient's and other holders' of its identifiers).
    pub new_links: Vec<NetworkLink>,
    /// Holders of a shared identifier already linked to another network patient: left
    /// unlinked for an administrator (the first link stands).
    pub conflicts: Vec<SitePatient>,
    /// Holders an administrator refused for this network patient (rejected or unlinked):
    /// left unlinked.
    pub refused: Vec<SitePatient>,
}

/// How sure a match is (IHE PDQm's match grades).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grade {
    /// A shared value of a network identifier system.
    Certain,
    /// Family and given name and birth date agree (and gender, when both have one).
    Probable,
    /// Some of them agree.
    Possible,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Certain => "certain",
            Grade::Probable => "probable",
            Grade::Possible => "possible",
        }
    }

    /// The entry's `search.score`.
    pub fn score(self) -> f64 {
        match self {
            Grade::Certain => 1.0,
            Grade::Probable => 0.8,
            Grade::Possible => 0.5,
        }
    }

    pub fn parse(s: &str) -> Option<Grade> {
        match s {
            "certain" => Some(Grade::Certain),
            "probable" => Some(Grade::Probable),
            "possible" => Some(Grade::Possible),
            _ => None,
        }
    }
}

/// What an administrator's call changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminChange {
    /// Done: the site patient and network patient concerned.
    Done {
        patient: SitePatient,
        network_id: String,
    },
    /// No such candidate or link.
    Unknown,
    /// The candidate was decided already, or the patient is linked already (unlink first).
    Conflict,
}

/// The index, over the store.
pub struct NetworkIndex {
    store: Store,
    key: ConsortiumKey,
    /// Each site's network identifier systems.
    systems: std::collections::HashMap<String, Vec<String>>,
    /// Learning from released Patients off the request path, once started.
    learner: std::sync::OnceLock<Learner>,
}

impl NetworkIndex {
    pub fn new(store: Store, key: ConsortiumKey, config: &Config) -> NetworkIndex {
        let systems = config
            .sites
            .iter()
            .map(|(id, site)| (id.clone(), site.network_identifier_systems.clone()))
            .collect();
        NetworkIndex {
            store,
            key,
            systems,
            learner: std::sync::OnceLock::new(),
        }
    }

    /// The same index without a learner (for the learner's own thread).
    pub fn detached(&self) -> NetworkIndex {
        NetworkIndex {
            store: self.store.clone(),
            key: self.key.clone(),
            systems: self.systems.clone(),
            learner: std::sync::OnceLock::new(),
        }
    }

    /// Starts learning from what [`NetworkIndex::offer`] is given (set once, by the facade).
    pub fn start_learning(&self, learner: Learner) {
        let _ = self.learner.set(learner);
    }

    /// A resource released at `site`: a Patient carrying an identifier of the site's network
    /// systems is queued for learning (dropped and counted when the queue is full). Cheap
    /// otherwise: one field read, one map look-up.
    pub fn offer(&self, site: &str, resource: &serde_json::Value) {
        if resource.get("resourceType").and_then(|t| t.as_str()) != Some("Patient") {
            return;
        }
        let systems = self.systems_of(site);
        if systems.is_empty() {
            return;
        }
        let Some(learner) = self.learner.get() else {
            return;
        };
        let Some(id) = resource.get("id").and_then(|v| v.as_str()) else {
            return;
        };
        let identifiers: Vec<(String, String)> = identifiers_of(resource)
            .filter(|(system, _)| systems.iter().any(|s| s == system))
            .map(|(s, v)| (s.to_owned(), v.to_owned()))
            .collect();
        if !identifiers.is_empty() {
            learner.queue(site, id, identifiers);
        }
    }

    /// Waits until every Patient offered before this call is learnt (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn flush_learning(&self) {
        if let Some(learner) = self.learner.get() {
            learner.flush();
        }
    }
    /// Whether `id` has the form of a network patient id (`n-` and 40 lowercase hex digits).
    pub fn is_network_id(id: &str) -> bool {
        id.len() == 42
            && id.starts_with("n-")
            && id[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// The network identifier systems of `site` (none for an unknown site).
    pub fn systems_of(&self, site: &str) -> &[String] {
        self.systems.get(site).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The keyed hash under which a network identifier's value is kept.
    pub fn value_key(&self, system: &str, value: &str) -> String {
        self.key
            .keyed_hash("network-identifier", &format!("{system}|{value}"))
    }

    /// The network patient `site`/`patient_id` is linked to, if any.
    pub fn network_of(&self, site: &str, patient_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.store.link_of(site, patient_id)?.map(|l| l.network_id))
    }

    /// The link of `site`/`patient_id`, if any.
    pub fn link_of(&self, site: &str, patient_id: &str) -> Result<Option<NetworkLink>, StoreError> {
        Ok(self.store.link_of(site, patient_id)?.map(NetworkLink::from))
    }

    /// Whether network patient `network_id` exists.
    pub fn exists(&self, network_id: &str) -> Result<bool, StoreError> {
        if !Self::is_network_id(network_id) {
            return Ok(false);
        }
        self.store.network_patient_exists(network_id)
    }

    /// Every site-local patient linked to `network_id`, by site and id.
    pub fn members(&self, network_id: &str) -> Result<Vec<NetworkLink>, StoreError> {
        Ok(self
            .store
            .links_of_network(network_id)?
            .into_iter()
            .map(NetworkLink::from)
            .collect())
    }

    /// The ids at `site` linked to `network_id`.
    pub fn local_ids_at(&self, network_id: &str, site: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .members(network_id)?
            .into_iter()
            .filter(|l| l.patient.site == site)
            .map(|l| l.patient.id)
            .collect())
    }

    /// Learns from a Patient of `site` with id `patient_id` carrying `identifiers`
    /// (`(system, value)`; those of systems that are not the site's network systems are
    /// ignored): notes the identifiers (keyed), and links the patient and every other holder
    /// of one of them to one network patient: the one a holder is linked to already, else a
    /// new one. A holder linked to another network patient is a conflict and stays as it is.
    pub fn learn<'a>(
        &self,
        site: &str,
        patient_id: &str,
        identifiers: impl IntoIterator<Item = (&'a str, &'a str)>,
        now_ms: i64,
    ) -> Result<Learned, StoreError> {
        let systems = self.systems_of(site);
        let mut keyed: Vec<(&str, String)> = Vec::new();
        for (system, value) in identifiers {
            if value.is_empty() {
                continue;
            }
            if let Some(s) = systems.iter().find(|s| *s == system) {
                keyed.push((s.as_str(), self.value_key(system, value)));
            }
        }
        keyed.sort();
        keyed.dedup();
        let mut learned = Learned {
            network_id: self.network_of(site, patient_id)?,
            ..Learned::default()
        };
        if keyed.is_empty() {
            return Ok(learned);
        }
        // Every holder of one of the identifiers, the learning patient among them.
        let mut holders: BTreeSet<(String, String)> = BTreeSet::new();
        holders.insert((site.to_owned(), patient_id.to_owned()));
        for (system, value_key) in &keyed {
            self.store
                .put_network_identifier(system, value_key, site, patient_id, now_ms)?;
            holders.extend(self.store.holders_of_identifier(system, value_key)?);
        }
        // The network patient: the learning patient's, else the first holder's, else new.
        let mut network_id = learned.network_id.clone();
        if network_id.is_none() {
            for (s, p) in &holders {
                if let Some(n) = self.network_of(s, p)? {
                    network_id = Some(n);
                    break;
                }
            }
        }
        let (system, first_key) = &keyed[0];
        let network_id = match network_id {
            Some(n) => n,
            None => {
                let n = format!(
                    "n-{}",
                    &self.key.keyed_hash("network-patient", first_key)[..40]
                );
                self.store.insert_network_patient(&n, now_ms)?;
                n
            }
        };
        for (s, p) in holders {
            if self.store.is_refused(&s, &p, &network_id)? {
                learned.refused.push(SitePatient::new(s, p));
                continue;
            }
            let row = LinkRow {
                site: s.clone(),
                patient_id: p.clone(),
                network_id: network_id.clone(),
                how: LinkHow::Identifier.as_str().to_owned(),
                evidence: (*system).to_owned(),
                learned_at_ms: now_ms,
            };
            if self.store.insert_link(&row)? {
                learned.new_links.push(row.into());
            } else if self.network_of(&s, &p)?.as_deref() != Some(network_id.as_str()) {
                learned.conflicts.push(SitePatient::new(s, p));
            }
        }
        // The learning patient belongs to the network patient only if it is linked to it.
        learned.network_id = self.network_of(site, patient_id)?;
        Ok(learned)
    }

    /// Links `site`/`patient_id` to existing network patient `network_id` as confirmed by
    /// `caller_id` (a refusal of the pair is forgotten); `false` when the patient is linked
    /// already (unlink first).
    pub fn confirm(
        &self,
        site: &str,
        patient_id: &str,
        network_id: &str,
        caller_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let linked = self.store.insert_link(&LinkRow {
            site: site.to_owned(),
            patient_id: patient_id.to_owned(),
            network_id: network_id.to_owned(),
            how: LinkHow::Confirmed.as_str().to_owned(),
            evidence: caller_id.to_owned(),
            learned_at_ms: now_ms,
        })?;
        if linked {
            self.store.delete_refusal(site, patient_id, network_id)?;
        }
        Ok(linked)
    }

    /// Removes the link of `site`/`patient_id`; `false` when there was none.
    pub fn unlink(&self, site: &str, patient_id: &str) -> Result<bool, StoreError> {
        self.store.delete_link(site, patient_id)
    }

    /// An administrator removes the link of `site`/`patient_id` and the pair is refused
    /// from then on (learning never links it again).
    pub fn unlink_by(
        &self,
        site: &str,
        patient_id: &str,
        caller_id: &str,
        now_ms: i64,
    ) -> Result<AdminChange, StoreError> {
        let Some(link) = self.store.link_of(site, patient_id)? else {
            return Ok(AdminChange::Unknown);
        };
        self.store.insert_refusal(
            site,
            patient_id,
            &link.network_id,
            "unlinked",
            caller_id,
            now_ms,
        )?;
        if !self.store.delete_link(site, patient_id)? {
            return Ok(AdminChange::Unknown);
        }
        Ok(AdminChange::Done {
            patient: SitePatient::new(site, patient_id),
            network_id: link.network_id,
        })
    }

    /// Keeps a `$match` candidate (probable or possible) of `site`/`patient_id` for network
    /// patient `network_id`, unless the patient is linked already or the pair was refused;
    /// the candidate's id when one is open for the pair.
    pub fn propose(
        &self,
        site: &str,
        patient_id: &str,
        network_id: &str,
        grade: Grade,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        if grade == Grade::Certain
            || self.store.link_of(site, patient_id)?.is_some()
            || self.store.is_refused(site, patient_id, network_id)?
        {
            return Ok(None);
        }
        let row = CandidateRow {
            id: uuid::Uuid::new_v4().to_string(),
            site: site.to_owned(),
            patient_id: patient_id.to_owned(),
            network_id: network_id.to_owned(),
            grade: grade.as_str().to_owned(),
            score: (grade.score() * 1000.0) as i64,
            status: "open".to_owned(),
            created_at_ms: now_ms,
            decided_by: None,
            decided_at_ms: None,
        };
        self.store.insert_candidate(&row)?;
        Ok(self
            .store
            .candidate_of(site, patient_id, network_id)?
            .filter(|c| c.status == "open")
            .map(|c| c.id))
    }

    /// The candidates with `status` (all when `None`).
    pub fn candidates(&self, status: Option<&str>) -> Result<Vec<CandidateRow>, StoreError> {
        self.store.candidates(status)
    }

    /// An administrator confirms open candidate `id`: its patient is linked (`confirmed`).
    pub fn confirm_candidate(
        &self,
        id: &str,
        caller_id: &str,
        now_ms: i64,
    ) -> Result<AdminChange, StoreError> {
        let Some(c) = self.store.candidate(id)? else {
            return Ok(AdminChange::Unknown);
        };
        if c.status != "open" || self.store.link_of(&c.site, &c.patient_id)?.is_some() {
            return Ok(AdminChange::Conflict);
        }
        if !self
            .store
            .decide_candidate(id, "confirmed", caller_id, now_ms)?
        {
            return Ok(AdminChange::Conflict);
        }
        if !self.confirm(&c.site, &c.patient_id, &c.network_id, caller_id, now_ms)? {
            return Ok(AdminChange::Conflict);
        }
        Ok(AdminChange::Done {
            patient: SitePatient::new(c.site, c.patient_id),
            network_id: c.network_id,
        })
    }

    /// An administrator rejects open candidate `id`: the pair is refused from then on.
    pub fn reject_candidate(
        &self,
        id: &str,
        caller_id: &str,
        now_ms: i64,
    ) -> Result<AdminChange, StoreError> {
        let Some(c) = self.store.candidate(id)? else {
            return Ok(AdminChange::Unknown);
        };
        if !self
            .store
            .decide_candidate(id, "rejected", caller_id, now_ms)?
        {
            return Ok(AdminChange::Conflict);
        }
        self.store.insert_refusal(
            &c.site,
            &c.patient_id,
            &c.network_id,
            "rejected",
            caller_id,
            now_ms,
        )?;
        Ok(AdminChange::Done {
            patient: SitePatient::new(c.site, c.patient_id),
            network_id: c.network_id,
        })
    }
}

/// The `(system, value)` pairs of a Patient's `identifier` elements.
pub fn identifiers_of(resource: &serde_json::Value) -> impl Iterator<Item = (&str, &str)> {
    resource
        .get("identifier")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|i| Some((i.get("system")?.as_str()?, i.get("value")?.as_str()?)))
}

/// A Patient's demographics as `$match` compares them (lowercased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demographics {
    pub family: Option<String>,
    pub given: Vec<String>,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
}

impl Demographics {
    pub fn of(patient: &serde_json::Value) -> Demographics {
        let lower = |v: &serde_json::Value| v.as_str().map(|s| s.trim().to_lowercase());
        let names = patient.get("name").and_then(|v| v.as_array());
        let mut d = Demographics {
            birth_date: patient.get("birthDate").and_then(lower),
            gender: patient.get("gender").and_then(lower),
            ..Demographics::default()
        };
        for name in names.into_iter().flatten() {
            if d.family.is_none() {
                d.family = name.get("family").and_then(lower);
            }
            for g in name
                .get("given")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(g) = lower(g) {
                    d.given.push(g);
                }
            }
        }
        d
    }

    /// How well `candidate` matches these demographics: probable when family, a given name
    /// and birth date agree (and gender does not disagree), possible when two of family,
    /// given name and birth date agree; `None` otherwise.
    pub fn grade(&self, candidate: &Demographics) -> Option<Grade> {
        let same =
            |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(x), Some(y)) if x == y);
        let family = same(&self.family, &candidate.family);
        let given = self.given.iter().any(|g| candidate.given.contains(g));
        let birth = same(&self.birth_date, &candidate.birth_date);
        let gender_differs =
            matches!((&self.gender, &candidate.gender), (Some(x), Some(y)) if x != y);
        let agree = [family, given, birth].iter().filter(|b| **b).count();
        if agree == 3 && !gender_differs {
            Some(Grade::Probable)
        } else if agree >= 2 {
            Some(Grade::Possible)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    const NID: &str = "urn:oid:2.16.840.1.113883.4.1";

    fn index(store: &Store) -> NetworkIndex {
        let mut text = String::from("database_url = \"/tmp/x.db\"\n");
        for site in ["a", "b", "c"] {
            text += &format!(
                "[sites.{site}]\nupstream = \"http://127.0.0.1:1/fhir\"\nfhir_version = \"R4\"\ndefault_policy = \"opt-out\"\n\
                 patient_identifier_systems = [\"{NID}\", \"urn:mrn\"]\n\
                 network_identifier_systems = [\"{NID}\"]\n"
            );
        }
        let config = Config::from_toml(&text).unwrap();
        NetworkIndex::new(
            store.clone(),
            ConsortiumKey::new(&[7; 32]).unwrap(),
            &config,
        )
    }

    #[test]
    fn patients_sharing_a_network_identifier_are_one_network_patient() {
        for t in testing::all() {
            let index = index(&t.store);
            let first = index.learn("a", "p1", [(NID, "123")], 1).unwrap();
            let n = first.network_id.clone().unwrap();
            assert!(NetworkIndex::is_network_id(&n), "{n}");
            assert_eq!(first.new_links.len(), 1);
            // Another site's patient with the same value joins it; an MRN links nothing.
            let second = index
                .learn("b", "x9", [(NID, "123"), ("urn:mrn", "777")], 2)
                .unwrap();
            assert_eq!(second.network_id.as_deref(), Some(n.as_str()));
            let third = index.learn("c", "q", [("urn:mrn", "777")], 3).unwrap();
            assert_eq!(third.network_id, None);
            let members: Vec<String> = index
                .members(&n)
                .unwrap()
                .iter()
                .map(|l| l.patient.to_string())
                .collect();
            assert_eq!(members, ["a/Patient/p1", "b/Patient/x9"]);
            assert_eq!(index.local_ids_at(&n, "b").unwrap(), ["x9"]);
            // The id is the same wherever the same identifier is learned first.
            let other = index.learn("c", "z", [(NID, "999")], 4).unwrap();
            assert_ne!(other.network_id.as_deref(), Some(n.as_str()));
            // No clear identifier value in the store.
            let kept = t.store.holders_of_identifier(NID, "123").unwrap();
            assert!(kept.is_empty());
        }
    }

    #[test]
    fn a_linked_patient_is_never_moved_by_a_conflicting_identifier() {
        for t in testing::all() {
            let index = index(&t.store);
            let n1 = index
                .learn("a", "p1", [(NID, "1")], 1)
                .unwrap()
                .network_id
                .unwrap();
            let n2 = index
                .learn("b", "x", [(NID, "2")], 1)
                .unwrap()
                .network_id
                .unwrap();
            // b/x now also shows value 1: it stays with n2, and is reported.
            let learned = index.learn("b", "x", [(NID, "1")], 2).unwrap();
            assert_eq!(learned.network_id.as_deref(), Some(n2.as_str()));
            assert_eq!(learned.conflicts, [SitePatient::new("a", "p1")]);
            assert_eq!(
                index.network_of("a", "p1").unwrap().as_deref(),
                Some(n1.as_str())
            );
            // Unlinked, then confirmed into n1 by an administrator.
            assert!(index.unlink("b", "x").unwrap());
            assert!(index.confirm("b", "x", &n1, "admin@idp", 3).unwrap());
            let link = index.link_of("b", "x").unwrap().unwrap();
            assert_eq!(
                (link.how, link.evidence.as_str()),
                (LinkHow::Confirmed, "admin@idp")
            );
        }
    }

    #[test]
    fn a_refused_pair_is_not_relinked_by_learning_and_candidates_are_decided_once() {
        for t in testing::all() {
            let index = index(&t.store);
            let n = index
                .learn("a", "p1", [(NID, "1")], 1)
                .unwrap()
                .network_id
                .unwrap();
            assert_eq!(
                index.learn("b", "x", [(NID, "1")], 2).unwrap().network_id,
                Some(n.clone())
            );
            // Unlinked by an administrator: learning the same identifier again leaves it out.
            assert!(matches!(
                index.unlink_by("b", "x", "admin@idp", 3).unwrap(),
                AdminChange::Done { .. }
            ));
            let again = index.learn("b", "x", [(NID, "1")], 4).unwrap();
            assert_eq!(again.network_id, None);
            assert_eq!(again.refused, [SitePatient::new("b", "x")]);
            assert!(again.new_links.is_empty());
            // Learning the other holder does not bring it back either.
            let other = index.learn("a", "p1", [(NID, "1")], 5).unwrap();
            assert!(other.new_links.is_empty());
            assert_eq!(index.network_of("b", "x").unwrap(), None);
            // A candidate of a refused pair is not kept; of another, once.
            assert_eq!(
                index.propose("b", "x", &n, Grade::Probable, 6).unwrap(),
                None
            );
            let c = index
                .propose("c", "z", &n, Grade::Possible, 6)
                .unwrap()
                .unwrap();
            assert_eq!(
                index.propose("c", "z", &n, Grade::Possible, 7).unwrap(),
                Some(c.clone())
            );
            assert!(matches!(
                index.reject_candidate(&c, "admin@idp", 8).unwrap(),
                AdminChange::Done { .. }
            ));
            assert_eq!(
                index.confirm_candidate(&c, "admin@idp", 9).unwrap(),
                AdminChange::Conflict
            );
            assert_eq!(
                index.learn("c", "z", [(NID, "1")], 10).unwrap().network_id,
                None
            );
            // A confirmation is the only way back, and it forgets the refusal.
            assert!(index.confirm("b", "x", &n, "admin@idp", 11).unwrap());
            assert!(!t.store.is_refused("b", "x", &n).unwrap());
        }
    }

    #[test]
    fn demographics_grade_probable_and_possible() {
        let asked = Demographics::of(&serde_json::json!({
            "resourceType": "Patient",
            "name": [{"family": "Lovelace", "given": ["Ada"]}],
            "birthDate": "1815-12-10", "gender": "female"
        }));
        let grade = |v: serde_json::Value| asked.grade(&Demographics::of(&v));
        let full = serde_json::json!({"name": [{"family": "LOVELACE", "given": ["Augusta", "Ada"]}], "birthDate": "1815-12-10"});
        assert_eq!(grade(full), Some(Grade::Probable));
        let other_gender = serde_json::json!({"name": [{"family": "Lovelace", "given": ["Ada"]}], "birthDate": "1815-12-10", "gender": "male"});
        assert_eq!(grade(other_gender), Some(Grade::Possible));
        let two = serde_json::json!({"name": [{"family": "Lovelace", "given": ["Byron"]}], "birthDate": "1815-12-10"});
        assert_eq!(grade(two), Some(Grade::Possible));
        let one = serde_json::json!({"name": [{"family": "Lovelace", "given": ["Byron"]}], "birthDate": "1900-01-01"});
        assert_eq!(grade(one), None);
    }

    /// Figures for the report (a debug build): `cargo test -p assent-gateway --lib
    /// measure_offer_and_learn -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_offer_and_learn() {
        let t = testing::sqlite();
        let index = index(&t.store);
        let observation = serde_json::json!({"resourceType": "Observation", "id": "o1"});
        let n = 1_000_000u32;
        let started = std::time::Instant::now();
        for _ in 0..n {
            index.offer("a", std::hint::black_box(&observation));
        }
        let per_offer = started.elapsed().as_nanos() / u128::from(n);
        let n = 1_000u32;
        let started = std::time::Instant::now();
        for i in 0..n {
            let value = (i / 2).to_string();
            let site = if i % 2 == 0 { "a" } else { "b" };
            index
                .learn(site, &format!("p{i}"), [(NID, value.as_str())], 1)
                .unwrap();
        }
        let per_learn = started.elapsed().as_micros() / u128::from(n);
        println!(
            "offer (not a Patient): {per_offer} ns; learn (SQLite, half new, half joining): {per_learn} us"
        );
    }
}
