//! Names beside ids, for the compliance console and the patient portal: the name each user
//! caller's token last gave (`caller_names`). Display only: nothing is decided on them, and they never reach the
//! ledger, a receipt or the logs. (Patients' names come from their consents, through the
//! consent service: `api/console.rs`.)

use std::collections::HashMap;

use diesel::prelude::*;

use super::schema::caller_names;
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

    /// The practitioners (and practitioner roles) whose names are kept, by name, at most
    /// `limit`: the patient portal's list of whom to share with. Never a patient (patients'
    /// names are not kept here, and the list reads practitioner references only).
    pub fn known_practitioners(&self, limit: i64) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(String, String)> = caller_names::table
            .filter(
                caller_names::actor
                    .like("Practitioner/%")
                    .or(caller_names::actor.like("PractitionerRole/%")),
            )
            .select((caller_names::actor, caller_names::display))
            .order((caller_names::display.asc(), caller_names::actor.asc()))
            .limit(limit)
            .load(&mut *conn)?;
        Ok(rows)
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
            store.put_caller_name("Patient/p1", "Jane Doe", 3).unwrap();
            store
                .put_caller_name("PractitionerRole/nurse-carol", "Carol Clark", 3)
                .unwrap();
            assert_eq!(
                store.known_practitioners(10).unwrap(),
                vec![
                    (
                        "Practitioner/dr-alice".to_owned(),
                        "Alice Adams-Smith".to_owned()
                    ),
                    (
                        "PractitionerRole/nurse-carol".to_owned(),
                        "Carol Clark".to_owned()
                    ),
                ]
            );
        }
    }
}
