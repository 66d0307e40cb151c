//! The one error type of broker storage operations (KV reads and writes, stream publishes),
//! classified so that callers branch on what happened, never on the broker's wording.

use async_nats::jetstream::{self, context::PublishError, ErrorCode};

/// Why a read or write of the broker's storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key, campaign or message does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A compare-and-set kept losing to concurrent writers.
    #[error("{0}: too many concurrent updates")]
    Conflict(String),
    /// A stream refused the write because of its limits (discard `new`): nothing was stored.
    #[error("{what} is full: {source}")]
    Full {
        what: String,
        #[source]
        source: BoxError,
    },
    /// The stored value exists but cannot be decoded: waiting will not fix it.
    #[error("{what} is unreadable: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The broker could not be reached or answered an error; worth retrying.
    #[error("broker: {0}")]
    Broker(#[source] BoxError),
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl StoreError {
    /// Wraps any broker-client error as [`StoreError::Broker`].
    pub fn broker(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Broker(Box::new(e))
    }

    /// Classifies a failed stream publish: a stream at its limits is [`StoreError::Full`].
    pub fn from_publish(what: &str, e: PublishError) -> Self {
        if is_full(&e) {
            StoreError::Full {
                what: what.to_string(),
                source: Box::new(e),
            }
        } else {
            StoreError::broker(e)
        }
    }

    /// Worth retrying later (the broker was away), as opposed to a refusal that stays.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Broker(_) | StoreError::Conflict(_))
    }
}

/// Server error codes meaning "the stream (or the account) is at its limits".
const FULL_CODES: [ErrorCode; 4] = [
    ErrorCode::STREAM_STORE_FAILED, // "maximum messages/bytes exceeded" with discard new
    ErrorCode::ACCOUNT_RESOURCES_EXCEEDED,
    ErrorCode::INSUFFICIENT_RESOURCES,
    ErrorCode::STORAGE_RESOURCES_EXCEEDED,
];

fn is_full(e: &PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| FULL_CODES.contains(&j.error_code()))
}
