//! The spool's one error type, and how redb's many error types (read once, by the migration
//! of an older release's file) map onto it.

/// Every failure callers can see. `Io` (including disk full) means "not stored, try again later"
/// (the ingress answers 503); `Corrupt` means a stored record or a file is unreadable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("spool I/O error: {0}")]
    Io(String),
    #[error("spool data corrupt: {0}")]
    Corrupt(String),
    #[error("spool is closed")]
    Closed,
}

impl StorageError {
    pub(crate) fn corrupt_record(seq: u64, what: impl std::fmt::Display) -> Self {
        StorageError::Corrupt(format!("record {seq}: {what}"))
    }
}

/// All redb error types convert into `redb::Error`; classify once, there.
fn classify(err: redb::Error) -> StorageError {
    match err {
        redb::Error::Corrupted(msg) => StorageError::Corrupt(msg),
        e @ (redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }) => StorageError::Corrupt(e.to_string()),
        redb::Error::DatabaseClosed => StorageError::Closed,
        // Io (ENOSPC, EIO, EROFS...), PreviousIo, lock conflicts, poisoned transactions:
        // transient from the caller's point of view.
        e => StorageError::Io(e.to_string()),
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(err: $t) -> Self {
                classify(err.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::StorageError,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<std::io::Error> for StorageError {
    fn from(err: std::io::Error) -> Self {
        StorageError::Io(err.to_string())
    }
}
