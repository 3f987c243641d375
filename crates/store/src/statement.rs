//! How the SQL written once for both backends reaches a database: a [`Statement`] (the text and
//! its arguments, each an [`Arg`] in a form independent of the dialect), run through a backend's
//! [`Statements`], whose rows come back behind the typed accessors of [`Row`].
//!
//! The two dialects differ in how they store a time (PostgreSQL `TIMESTAMPTZ`, SQLite integer
//! microseconds) and a day (`DATE`, `YYYY-MM-DD` text): each backend decides that once, where it
//! binds an [`Arg`] and where it reads a column, and the shared SQL never sees it.

use std::future::Future;

use chrono::NaiveDate;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;
use sqlx::{SqlSafeStr as _, SqlStr};

use super::{StoreError, Timestamp};

/// One argument of a statement. `None`s keep their type, so PostgreSQL still knows what the
/// parameter is.
#[derive(Debug)]
pub(super) enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(&'a [u8]),
    Time(Option<Timestamp>),
    Day(NaiveDate),
    /// A JSON document, already serialized.
    Json(Option<Box<RawValue>>),
    /// A list, for `= ANY($n)` (PostgreSQL: an array) or `json_each($n)` (SQLite: a JSON array).
    Texts(Vec<&'a str>),
    /// A list of integers, as [`Arg::Texts`].
    Ints(Vec<i64>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Arg::Text(value)
    }
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(Some(value))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        Arg::Int(value)
    }
}

impl From<bool> for Arg<'_> {
    fn from(value: bool) -> Self {
        Arg::Bool(Some(value))
    }
}

impl From<Option<bool>> for Arg<'_> {
    fn from(value: Option<bool>) -> Self {
        Arg::Bool(value)
    }
}

impl From<Timestamp> for Arg<'_> {
    fn from(value: Timestamp) -> Self {
        Arg::Time(Some(value))
    }
}

impl From<Option<Timestamp>> for Arg<'_> {
    fn from(value: Option<Timestamp>) -> Self {
        Arg::Time(value)
    }
}

impl From<NaiveDate> for Arg<'_> {
    fn from(value: NaiveDate) -> Self {
        Arg::Day(value)
    }
}

/// A statement's text and its arguments, in `$1`, `$2`, … order (both dialects accept that form
/// in text written once; a [`Builder`] writes the backend's own).
#[derive(Debug)]
pub(super) struct Statement<'a> {
    sql: SqlStr,
    args: Vec<Arg<'a>>,
    /// A JSON argument that could not be serialized: the statement fails with it when run.
    invalid: Option<serde_json::Error>,
}

impl<'a> Statement<'a> {
    /// A statement of fixed text.
    pub(super) fn new(sql: &'static str) -> Self {
        Statement { sql: SqlStr::from_static(sql), args: Vec::new(), invalid: None }
    }

    /// Binds the next parameter.
    pub(super) fn bind(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Binds the next parameter to a JSON document.
    pub(super) fn bind_json(mut self, value: Option<&impl Serialize>) -> Self {
        let arg = Arg::Json(value.and_then(|v| self.json(v)));
        self.args.push(arg);
        self
    }

    fn json(&mut self, value: &impl Serialize) -> Option<Box<RawValue>> {
        serde_json::value::to_raw_value(value).map_err(|e| self.invalid = Some(e)).ok()
    }

    /// The text and the arguments to bind, or the error of an argument that could not be encoded.
    pub(super) fn into_parts(self) -> Result<(SqlStr, Vec<Arg<'a>>), StoreError> {
        match self.invalid {
            Some(error) => Err(encode_error(error)),
            None => Ok((self.sql, self.args)),
        }
    }
}

/// A statement whose text is built from parts: `VALUES` lists of any length, and fragments in
/// between. Placeholders are written as arguments are added, in the backend's own form
/// ([`Statements::placeholder`]).
#[derive(Debug)]
pub(super) struct Builder<'a> {
    sql: String,
    placeholder: fn(&mut String, usize),
    statement: Statement<'a>,
}

impl<'a> Builder<'a> {
    /// A statement that starts with `head`, for the backend `S`.
    pub(super) fn new<S: Statements>(head: &str) -> Self {
        Builder { sql: head.to_owned(), placeholder: S::placeholder, statement: Statement::new("") }
    }

    /// Appends SQL text.
    pub(super) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for each argument of `values`, separated by commas.
    pub(super) fn list(&mut self, values: impl IntoIterator<Item = Arg<'a>>) -> &mut Self {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.statement.args.push(value);
            (self.placeholder)(&mut self.sql, self.statement.args.len());
        }
        self
    }

    /// Appends `(…)` with a placeholder for each argument of `values`.
    pub(super) fn tuple(&mut self, values: impl IntoIterator<Item = Arg<'a>>) -> &mut Self {
        self.sql.push('(');
        self.list(values);
        self.sql.push(')');
        self
    }

    /// Appends `VALUES (…), (…)`: a tuple per row.
    pub(super) fn values<R: IntoIterator<Item = Arg<'a>>>(&mut self, rows: impl IntoIterator<Item = R>) -> &mut Self {
        self.sql.push_str("VALUES ");
        for (i, row) in rows.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.tuple(row);
        }
        self
    }

    /// The built statement.
    pub(super) fn build(self) -> Statement<'a> {
        Statement { sql: sqlx::AssertSqlSafe(self.sql).into_sql_str(), ..self.statement }
    }
}

/// A JSON argument that could not be serialized, reported as sqlx reports an argument it cannot
/// encode.
fn encode_error(error: serde_json::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Encode(Box::new(error)))
}

/// JSON for a [`Builder`] row: `value` serialized, or the serializer's error.
pub(super) fn json_arg<'a>(value: Option<&impl Serialize>) -> Result<Arg<'a>, StoreError> {
    value.map(serde_json::value::to_raw_value).transpose().map(Arg::Json).map_err(encode_error)
}

/// Runs statements on one connection of a backend: a transaction, or a pooled connection in
/// autocommit.
pub(super) trait Statements: Send {
    /// A row of this backend.
    type Row: Row + Send;
    /// Writes the `n`th placeholder (from 1) of a built statement: `$n` on PostgreSQL, a bare
    /// `?` on SQLite. SQLite takes `$n` (and `?n`) as a *named* parameter: it keeps a list of the
    /// names, searched when the statement is prepared and again for every argument bound, so a
    /// statement of thousands (a batch's `VALUES`) costs quadratic time; bare `?`s are numbered in
    /// order and bound by position.
    fn placeholder(sql: &mut String, n: usize);

    /// Commits a transaction (a connection in autocommit has nothing to commit).
    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Runs `statement`; answers the number of rows it changed.
    fn execute(&mut self, statement: Statement<'_>) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Runs `statement`; answers every row.
    fn fetch_all(
        &mut self,
        statement: Statement<'_>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;
    /// Runs `statement`; answers its first row, if any.
    fn fetch_optional(
        &mut self,
        statement: Statement<'_>,
    ) -> impl Future<Output = Result<Option<Self::Row>, StoreError>> + Send;
    /// Runs `statement`, which answers exactly one row.
    fn fetch_one(&mut self, statement: Statement<'_>) -> impl Future<Output = Result<Self::Row, StoreError>> + Send;
}

/// Typed column access, implemented by each backend's row type (times and days are stored
/// differently; everything else decodes the same way).
pub(super) trait Row {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn boolean(&self, col: &str) -> Result<bool, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;
    fn time(&self, col: &str) -> Result<Timestamp, StoreError>;
    fn opt_time(&self, col: &str) -> Result<Option<Timestamp>, StoreError>;
    fn day(&self, col: &str) -> Result<NaiveDate, StoreError>;
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError>;
    fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError>;
}

/// The [`Row`] accessors both backends read the same way (all but times and days), expanded
/// inside a backend's `impl Row`.
macro_rules! same_in_both_dialects {
    () => {
        fn text(&self, col: &str) -> Result<String, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn int(&self, col: &str) -> Result<i64, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn boolean(&self, col: &str) -> Result<bool, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn json<T: serde::de::DeserializeOwned>(&self, col: &str) -> Result<T, StoreError> {
            Ok(self.try_get::<sqlx::types::Json<T>, _>(col)?.0)
        }
        fn opt_json<T: serde::de::DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError> {
            Ok(self.try_get::<Option<sqlx::types::Json<T>>, _>(col)?.map(|j| j.0))
        }
    };
}
pub(super) use same_in_both_dialects;
