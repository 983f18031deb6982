//! What a failed call was: the stores map these to their own errors.

use std::fmt;

use kiln_core::{ErrorKind, KilnError};
use postgres::error::SqlState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgErrorKind {
    /// The server could not be reached or answered too late; the call may be retried.
    Unavailable,
    /// An insert of a key that exists.
    UniqueViolation,
    /// A row refers to one that does not exist.
    ForeignKeyViolation,
    /// Anything else the server refused.
    Other,
}

#[derive(Debug, Clone)]
pub struct PgError {
    pub kind: PgErrorKind,
    pub message: String,
}

impl PgError {
    pub fn new(kind: PgErrorKind, message: impl Into<String>) -> Self {
        PgError {
            kind,
            message: message.into(),
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        self.kind == PgErrorKind::UniqueViolation
    }

    /// As a request sees it: an outage is 503 / 3052 with `retry-after: 1` (worth retrying);
    /// anything else is a bug or a broken database, 500, prefixed with `store`.
    pub fn into_kiln(self, store: &str) -> KilnError {
        match self.kind {
            PgErrorKind::Unavailable => {
                KilnError::new(ErrorKind::StorageUnavailable, self.message).with_retry_after(1)
            }
            _ => KilnError::internal(format!("{store}: {}", self.message)),
        }
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {}

impl From<postgres::Error> for PgError {
    fn from(error: postgres::Error) -> Self {
        let kind = match error.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => PgErrorKind::UniqueViolation,
            Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => {
                PgErrorKind::ForeignKeyViolation
            }
            Some(code) if *code == SqlState::QUERY_CANCELED => PgErrorKind::Unavailable,
            Some(_) => PgErrorKind::Other,
            // No SQLSTATE: the connection, not the statement, failed.
            None => PgErrorKind::Unavailable,
        };
        // The server's own message is more useful than the wrapper's "db error".
        let message = match error.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => error.to_string(),
        };
        PgError { kind, message }
    }
}
