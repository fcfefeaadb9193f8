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
//! Leaves out: asking the sites (discovery and `$match` fan out through the pipeline), the
//! receipts of link changes, and who may change links (the admin API).

use std::collections::BTreeSet;

use assent_consent::ConsortiumKey;
use assent_fhir::SitePatient;

use crate::config::Config;
use crate::store::network::LinkRow;
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
}

/// The index, over the store.
pub struct NetworkIndex {
    store: Store,
    key: ConsortiumKey,
    /// Each site's network identifier systems.
    systems: std::collections::HashMap<String, Vec<String>>,
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
        learned.network_id = Some(network_id);
        Ok(learned)
    }

    /// Links `site`/`patient_id` to existing network patient `network_id` as confirmed by
    /// `caller_id`; `false` when the patient is linked already (unlink first).
    pub fn confirm(
        &self,
        site: &str,
        patient_id: &str,
        network_id: &str,
        caller_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.store.insert_link(&LinkRow {
            site: site.to_owned(),
            patient_id: patient_id.to_owned(),
            network_id: network_id.to_owned(),
            how: LinkHow::Confirmed.as_str().to_owned(),
            evidence: caller_id.to_owned(),
            learned_at_ms: now_ms,
        })
    }

    /// Removes the link of `site`/`patient_id`; `false` when there was none.
    pub fn unlink(&self, site: &str, patient_id: &str) -> Result<bool, StoreError> {
        self.store.delete_link(site, patient_id)
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
}
