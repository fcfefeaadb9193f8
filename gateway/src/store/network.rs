//! The network patient index's tables (`network_patients`, `network_links`,
//! `network_identifiers`, `network_candidates`, `network_refusals`): which site-local
//! patients are one network patient, since when and why, the keyed hashes of the network
//! identifiers seen at each site, the match candidates waiting for an administrator, and the
//! pairs an administrator rejected or unlinked (never linked again automatically).
//!
//! Only the store: what makes a link certain, and who may change links, is
//! `services/network.rs`.

use diesel::prelude::*;

use super::schema::{
    network_candidates, network_identifiers, network_links, network_patients, network_refusals,
};
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

/// A match candidate: a site patient probably or possibly the same as a network patient.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct CandidateRow {
    pub id: String,
    pub site: String,
    pub patient_id: String,
    pub network_id: String,
    /// `probable` or `possible`.
    pub grade: String,
    /// The match score in thousandths.
    pub score: i64,
    /// `open`, `confirmed` or `rejected`.
    pub status: String,
    pub created_at_ms: i64,
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<i64>,
}

/// The outcome of an insert where the first row wins: `true` when this one was inserted,
/// `false` when a row with the same key was there already.
fn first_wins(inserted: QueryResult<usize>) -> Result<bool, StoreError> {
    match inserted {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// Keeps candidate `row` (open); `false` when the same pair is a candidate already
    /// (whatever its status: a rejected pair stays rejected).
    pub fn insert_candidate(&self, row: &CandidateRow) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(network_candidates::table)
            .values((
                network_candidates::id.eq(&row.id),
                network_candidates::site.eq(&row.site),
                network_candidates::patient_id.eq(&row.patient_id),
                network_candidates::network_id.eq(&row.network_id),
                network_candidates::grade.eq(&row.grade),
                network_candidates::score.eq(row.score),
                network_candidates::status.eq(&row.status),
                network_candidates::created_at_ms.eq(row.created_at_ms),
                network_candidates::decided_by.eq(&row.decided_by),
                network_candidates::decided_at_ms.eq(row.decided_at_ms),
            ))
            .execute(&mut *conn);
        first_wins(inserted)
    }

    /// The candidates with `status` (every one when `None`), oldest first.
    pub fn candidates(&self, status: Option<&str>) -> Result<Vec<CandidateRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = network_candidates::table.into_boxed();
        if let Some(status) = status {
            query = query.filter(network_candidates::status.eq(status.to_owned()));
        }
        Ok(query
            .order((network_candidates::created_at_ms, network_candidates::id))
            .load(&mut *conn)?)
    }

    /// Candidate `id`, if any.
    pub fn candidate(&self, id: &str) -> Result<Option<CandidateRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(network_candidates::table
            .filter(network_candidates::id.eq(id))
            .first(&mut *conn)
            .optional()?)
    }

    /// The candidate of the pair, if any.
    pub fn candidate_of(
        &self,
        site: &str,
        patient_id: &str,
        network_id: &str,
    ) -> Result<Option<CandidateRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(network_candidates::table
            .filter(network_candidates::site.eq(site))
            .filter(network_candidates::patient_id.eq(patient_id))
            .filter(network_candidates::network_id.eq(network_id))
            .first(&mut *conn)
            .optional()?)
    }

    /// Decides open candidate `id` (`confirmed` or `rejected`); `false` when it was not open
    /// (two administrators deciding at once: one wins).
    pub fn decide_candidate(
        &self,
        id: &str,
        status: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let n = diesel::update(
            network_candidates::table
                .filter(network_candidates::id.eq(id))
                .filter(network_candidates::status.eq("open")),
        )
        .set((
            network_candidates::status.eq(status),
            network_candidates::decided_by.eq(Some(by)),
            network_candidates::decided_at_ms.eq(Some(at_ms)),
        ))
        .execute(&mut *conn)?;
        Ok(n > 0)
    }

    /// Remembers that the pair must not be linked automatically (`how`: `rejected` or
    /// `unlinked`); a pair refused already keeps its first row.
    pub fn insert_refusal(
        &self,
        site: &str,
        patient_id: &str,
        network_id: &str,
        how: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(network_refusals::table)
            .values((
                network_refusals::site.eq(site),
                network_refusals::patient_id.eq(patient_id),
                network_refusals::network_id.eq(network_id),
                network_refusals::how.eq(how),
                network_refusals::decided_by.eq(by),
                network_refusals::decided_at_ms.eq(at_ms),
            ))
            .execute(&mut *conn);
        first_wins(inserted).map(drop)
    }

    /// Whether the pair was rejected or unlinked by an administrator.
    pub fn is_refused(
        &self,
        site: &str,
        patient_id: &str,
        network_id: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let n: i64 = network_refusals::table
            .filter(network_refusals::site.eq(site))
            .filter(network_refusals::patient_id.eq(patient_id))
            .filter(network_refusals::network_id.eq(network_id))
            .count()
            .get_result(&mut *conn)?;
        Ok(n > 0)
    }

    /// Forgets the pair's refusal (an administrator linked it after all).
    pub fn delete_refusal(
        &self,
        site: &str,
        patient_id: &str,
        network_id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::delete(
            network_refusals::table
                .filter(network_refusals::site.eq(site))
                .filter(network_refusals::patient_id.eq(patient_id))
                .filter(network_refusals::network_id.eq(network_id)),
        )
        .execute(&mut *conn)?;
        Ok(())
    }

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
        first_wins(inserted).map(drop)
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
        first_wins(inserted)
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
        first_wins(inserted).map(drop)
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
