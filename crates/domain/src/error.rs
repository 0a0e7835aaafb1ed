//! The one error type of the domain. It names what happened, not how to show it: REST, OAuth and
//! MCP each convert it once at their edge.

use std::time::Duration;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist (or the caller may not know that it does).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `server 'weather'`.
        what: String,
    },
    /// Creating the thing would violate a uniqueness rule.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What collided, e.g. `server 'weather'`.
        what: String,
    },
    /// A field of the input breaks a rule.
    #[error("{field}: {message}")]
    Invalid {
        /// The input field, as the caller spelled it (`url`, `tags[2]`).
        field: String,
        /// What is wrong with it and what would be right.
        message: String,
    },
    /// No valid credentials were presented.
    #[error("authentication required: {0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The caller has used up its budget; it may try again after the delay.
    #[error("rate limit exceeded; retry after {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// How long to wait before the next attempt can succeed.
        retry_after: Duration,
    },
    /// A dependency (database, cache, upstream) cannot be reached right now.
    #[error("{what} is unavailable")]
    Unavailable {
        /// Which dependency, e.g. `database`.
        what: String,
        /// The underlying cause, for logs only.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A bug or an unexpected state; details go to the log, never to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The domain's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An [`Error::NotFound`] for a thing described by `what`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    /// An [`Error::Unavailable`] for dependency `what`, keeping `source` for the log.
    pub fn unavailable(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}
