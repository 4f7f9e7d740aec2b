//! The engine's error type.

/// An engine failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bucket was not declared when the engine was opened.
    #[error("unknown bucket {0:?}")]
    UnknownBucket(&'static str),
    /// The backend failed (I/O, corruption, ...).
    #[error("storage backend: {0}")]
    Backend(String),
    /// A caller's visitor or decoder rejected what it read.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
