//! One-row INSERTs on SQLite whose statement diesel caches by type.
//!
//! diesel caches a prepared statement under its query's type when the query has a static
//! query id, else under its SQL text, which it then builds for every execution to look the
//! statement up. Its single-row `insert_into(..).values(..)` has no static id (each column may
//! be `DEFAULT`), so the receipt indexer and the request log writer paid for writing their
//! INSERT's text on every row. [`InsertOne`] is the same statement with a static id: its text
//! is written once, when the connection first prepares it; after that a row costs only its
//! bound values. Column names and bind types come from `schema.rs` (a column that does not
//! exist, or a value of the wrong type, does not compile).

use diesel::QueryResult;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{Expression, RunQueryDsl};

use super::NewRequestLog;
use super::receipt_rows::{NewReceiptPatientRow, NewReceiptRow};
use super::schema::{receipt_patients, receipts, request_log};

/// `INSERT INTO table (columns) VALUES (?, ...)` of one row, on SQLite.
pub(crate) struct InsertOne<'r, T>(pub &'r T);

impl<T> RunQueryDsl<SqliteConnection> for InsertOne<'_, T> {}

/// Implements [`InsertOne`] for a row type: its table, and its fields in the order bound (each
/// field named as its column).
macro_rules! insert_one {
    ($row:ty, $id:ident, $table:ident, [$($column:ident),+ $(,)?]) => {
        /// The static query id of [`InsertOne`] for this row type.
        pub(crate) struct $id;

        impl QueryId for InsertOne<'_, $row> {
            type QueryId = $id;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl QueryFragment<Sqlite> for InsertOne<'_, $row> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
                out.push_sql(concat!(
                    "INSERT INTO ",
                    stringify!($table),
                    " (",
                    insert_one!(@names $($column),+),
                    ") VALUES ("
                ));
                let mut first = true;
                $(
                    if !std::mem::take(&mut first) {
                        out.push_sql(", ");
                    }
                    out.push_bind_param::<<$table::$column as Expression>::SqlType, _>(
                        &self.0.$column,
                    )?;
                )+
                out.push_sql(")");
                Ok(())
            }
        }
    };
    (@names $first:ident $(, $rest:ident)*) => {
        concat!(stringify!($first) $(, ", ", stringify!($rest))*)
    };
}

insert_one!(
    NewReceiptRow<'_>,
    ReceiptRowInsert,
    receipts,
    [
        gateway_id,
        sequence,
        receipt_id,
        time_ms,
        site,
        interaction,
        resource_type,
        decision,
        break_glass,
        status,
        purpose,
        actor,
        actor_key,
        hash,
        body,
        subjects,
        kind,
        patients,
    ]
);

insert_one!(
    NewReceiptPatientRow<'_>,
    ReceiptPatientInsert,
    receipt_patients,
    [receipt_id, patient_key, patient, time_ms]
);

insert_one!(
    NewRequestLog,
    RequestLogInsert,
    request_log,
    [
        request_id,
        at_ms,
        gateway_id,
        site,
        caller,
        interaction,
        resource_type,
        status,
        error_code,
        decision,
        duration_us,
    ]
);

#[cfg(test)]
mod tests {
    use diesel::query_builder::QueryBuilder;
    use diesel::sqlite::SqliteQueryBuilder;

    use super::*;

    fn sql<T>(query: &InsertOne<'_, T>) -> String
    where
        for<'r> InsertOne<'r, T>: QueryFragment<Sqlite>,
    {
        let mut builder = SqliteQueryBuilder::new();
        query.to_sql(&mut builder, &Sqlite).unwrap();
        builder.finish()
    }

    #[test]
    fn every_field_is_bound_once_to_its_column() {
        let row = NewReceiptPatientRow {
            receipt_id: "r",
            patient_key: "k",
            patient: "st-mary/Patient/p1",
            time_ms: 1,
        };
        assert_eq!(
            sql(&InsertOne(&row)),
            "INSERT INTO receipt_patients (receipt_id, patient_key, patient, time_ms) \
             VALUES (?, ?, ?, ?)"
        );
        assert!(<InsertOne<'_, NewReceiptPatientRow<'_>> as QueryId>::query_id().is_some());
        assert!(<InsertOne<'_, NewRequestLog> as QueryId>::query_id().is_some());
        assert!(<InsertOne<'_, NewReceiptRow<'_>> as QueryId>::query_id().is_some());
    }
}
