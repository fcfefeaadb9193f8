//! The network patient index's tables (`network_patients`, `network_links`,
//! `network_identifiers`): which site-local patients are one network patient, since when and
//! why, and the keyed hashes of the network identifiers seen at each site.
//!
//! Only the store: what makes a link certain, and who may change links, is
//! `services/network.rs`.

use diesel::prelude::*;

use super::schema::{network_identifiers, network_links, network_patients};
use super::{Store, StoreError};

/// One site-local patient's link to a network patient.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct LinkRow {
    pub site: String,
    pub patient_id: String,
    pub network_id: String,
    /// `identifier` or `confirmed`.
    pub how: String,
    /// For `identifier`: the system; for `confirmed`: the confirming caller id.
    pub evidence: String,
    pub learned_at_ms: i64,
}

impl Store {
    /// Creates network patient `id` (nothing when it exists: ids are derived, so two
    /// writers creating the same patient at once agree on it).
    pub fn insert_network_patient(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(network_patients::table)
            .values((
                network_patients::id.eq(id),
                network_patients::created_at_ms.eq(at_ms),
            ))
            .execute(&mut *conn);
        match inserted {
            Ok(_)
            | Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether network patient `id` exists.
    pub fn network_patient_exists(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let n: i64 = network_patients::table
            .filter(network_patients::id.eq(id))
            .count()
            .get_result(&mut *conn)?;
        Ok(n > 0)
    }

    /// Links `row.site`/`row.patient_id` to `row.network_id`; `false` when that patient was
    /// linked already (to this or another network patient: the first link stands).
    pub fn insert_link(&self, row: &LinkRow) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(network_links::table)
            .values((
                network_links::site.eq(&row.site),
                network_links::patient_id.eq(&row.patient_id),
                network_links::network_id.eq(&row.network_id),
                network_links::how.eq(&row.how),
                network_links::evidence.eq(&row.evidence),
                network_links::learned_at_ms.eq(row.learned_at_ms),
            ))
            .execute(&mut *conn);
        match inserted {
            Ok(_) => Ok(true),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the link of `site`/`patient_id`; `false` when there was none.
    pub fn delete_link(&self, site: &str, patient_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let n = diesel::delete(
            network_links::table
                .filter(network_links::site.eq(site))
                .filter(network_links::patient_id.eq(patient_id)),
        )
        .execute(&mut *conn)?;
        Ok(n > 0)
    }

    /// The link of `site`/`patient_id`, if any.
    pub fn link_of(&self, site: &str, patient_id: &str) -> Result<Option<LinkRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(network_links::table
            .filter(network_links::site.eq(site))
            .filter(network_links::patient_id.eq(patient_id))
            .select(LINK_COLUMNS)
            .first(&mut *conn)
            .optional()?)
    }

    /// Every site-local patient linked to `network_id`, by site and id.
    pub fn links_of_network(&self, network_id: &str) -> Result<Vec<LinkRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(network_links::table
            .filter(network_links::network_id.eq(network_id))
            .order((network_links::site, network_links::patient_id))
            .select(LINK_COLUMNS)
            .load(&mut *conn)?)
    }

    /// Notes that `site`/`patient_id` carries the network identifier (`system`, keyed value).
    pub fn put_network_identifier(
        &self,
        system: &str,
        value_key: &str,
        site: &str,
        patient_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(network_identifiers::table)
            .values((
                network_identifiers::system.eq(system),
                network_identifiers::value_key.eq(value_key),
                network_identifiers::site.eq(site),
                network_identifiers::patient_id.eq(patient_id),
                network_identifiers::learned_at_ms.eq(at_ms),
            ))
            .execute(&mut *conn);
        match inserted {
            Ok(_)
            | Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The site-local patients seen with the network identifier (`system`, keyed value), as
    /// (site, patient id).
    pub fn holders_of_identifier(
        &self,
        system: &str,
        value_key: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn()?;
        Ok(network_identifiers::table
            .filter(network_identifiers::system.eq(system))
            .filter(network_identifiers::value_key.eq(value_key))
            .order((network_identifiers::site, network_identifiers::patient_id))
            .select((network_identifiers::site, network_identifiers::patient_id))
            .load(&mut *conn)?)
    }
}

const LINK_COLUMNS: (
    network_links::site,
    network_links::patient_id,
    network_links::network_id,
    network_links::how,
    network_links::evidence,
    network_links::learned_at_ms,
) = (
    network_links::site,
    network_links::patient_id,
    network_links::network_id,
    network_links::how,
    network_links::evidence,
    network_links::learned_at_ms,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    fn link(site: &str, id: &str, network: &str) -> LinkRow {
        LinkRow {
            site: site.into(),
            patient_id: id.into(),
            network_id: network.into(),
            how: "identifier".into(),
            evidence: "urn:oid:2.16.840.1.113883.4.1".into(),
            learned_at_ms: 7,
        }
    }

    #[test]
    fn links_are_kept_first_wins_and_removed() {
        for t in testing::all() {
            let store = &t.store;
            store.insert_network_patient("n1", 1).unwrap();
            store.insert_network_patient("n2", 1).unwrap();
            store.insert_network_patient("n2", 2).unwrap();
            assert!(store.network_patient_exists("n1").unwrap());
            assert!(!store.network_patient_exists("n3").unwrap());
            assert!(store.insert_link(&link("a", "p1", "n1")).unwrap());
            assert!(store.insert_link(&link("b", "x9", "n1")).unwrap());
            // A second link of the same site patient does not replace the first.
            assert!(!store.insert_link(&link("a", "p1", "n2")).unwrap());
            assert_eq!(store.link_of("a", "p1").unwrap().unwrap().network_id, "n1");
            let members = store.links_of_network("n1").unwrap();
            assert_eq!(members, vec![link("a", "p1", "n1"), link("b", "x9", "n1")]);
            assert!(store.delete_link("a", "p1").unwrap());
            assert!(!store.delete_link("a", "p1").unwrap());
            assert_eq!(store.link_of("a", "p1").unwrap(), None);
        }
    }

    #[test]
    fn identifiers_are_kept_by_keyed_value_once() {
        for t in testing::all() {
            let store = &t.store;
            store
                .put_network_identifier("sys", "k1", "a", "p1", 1)
                .unwrap();
            store
                .put_network_identifier("sys", "k1", "a", "p1", 2)
                .unwrap();
            store
                .put_network_identifier("sys", "k1", "b", "x9", 3)
                .unwrap();
            store
                .put_network_identifier("sys", "k2", "c", "z", 3)
                .unwrap();
            assert_eq!(
                store.holders_of_identifier("sys", "k1").unwrap(),
                vec![("a".into(), "p1".into()), ("b".into(), "x9".into())]
            );
            assert!(
                store
                    .holders_of_identifier("other", "k1")
                    .unwrap()
                    .is_empty()
            );
        }
    }
}
