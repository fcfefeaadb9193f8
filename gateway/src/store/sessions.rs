//! Browser sessions ended by a sign-out (`ended_sessions`): the console's and the portal's
//! session cookies carry a session id, and a sign-out lists it here until the session would
//! have expired, so that a copy of the cookie taken before the sign-out is refused on every
//! replica sharing the store. Rows past their expiry are purged on each sign-out.
//!
//! Leaves out the cookies (`api/signin`).

use diesel::prelude::*;

use super::schema::ended_sessions;
use super::{Store, StoreError};

impl Store {
    /// Lists session `session_id` as ended until `expires_at_ms` (a second sign-out of the
    /// same session changes nothing); purges the rows already past their expiry.
    pub fn end_session(
        &self,
        session_id: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.transaction(|conn| {
            diesel::delete(ended_sessions::table.filter(ended_sessions::expires_at_ms.lt(now_ms)))
                .execute(conn)?;
            let known = ended_sessions::table
                .filter(ended_sessions::session_id.eq(session_id))
                .count()
                .get_result::<i64>(conn)?;
            if known == 0 {
                diesel::insert_into(ended_sessions::table)
                    .values((
                        ended_sessions::session_id.eq(session_id),
                        ended_sessions::expires_at_ms.eq(expires_at_ms),
                    ))
                    .execute(conn)?;
            }
            Ok::<_, diesel::result::Error>(())
        })?;
        Ok(())
    }

    /// Whether session `session_id` was ended by a sign-out.
    pub fn session_ended(&self, session_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let n: i64 = ended_sessions::table
            .filter(ended_sessions::session_id.eq(session_id))
            .count()
            .get_result(&mut *conn)?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing;

    #[test]
    fn an_ended_session_stays_ended_until_purged_past_its_expiry() {
        for test in testing::all() {
            let store = &test.store;
            assert!(!store.session_ended("s1").unwrap());
            store.end_session("s1", 2_000, 1_000).unwrap();
            store.end_session("s1", 2_000, 1_000).unwrap();
            assert!(store.session_ended("s1").unwrap());
            assert!(!store.session_ended("s2").unwrap());
            // Another sign-out after s1's expiry purges it.
            store.end_session("s2", 9_000, 3_000).unwrap();
            assert!(!store.session_ended("s1").unwrap());
            assert!(store.session_ended("s2").unwrap());
        }
    }
}
