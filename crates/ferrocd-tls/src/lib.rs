//! etcd's TLS settings on rustls.
//!
//! [`TlsInfo`] is etcd's `transport.TLSInfo`: the files and policies of one side (client or
//! peer). It gives a rustls [`ServerConfig`](rustls::ServerConfig) for a listener and a
//! [`ClientConfig`](rustls::ClientConfig) for connections out (peers use their certificate as
//! a client certificate, as etcd's do). Certificates and keys are re-read when their files
//! change ([`CertFiles`]), so a rotation needs no restart; [`accept`] runs the handshakes of a
//! listener's connections concurrently, and [`Connector`] opens a tonic channel's connections,
//! with TLS when the URL says `https`.

mod config;
mod connect;
mod files;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{TlsInfo, TlsVersion};
pub use connect::{Connector, Stream, accept};
pub use files::{CertFiles, common_name, self_signed};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {why}")]
    File { path: String, why: String },
    #[error("{path} holds no {what}")]
    Empty { path: String, what: &'static str },
    #[error("the certificate in {cert} does not match the key in {key}: {why}")]
    Mismatch { cert: String, key: String, why: String },
    #[error("unexpected TLS cipher suite {0:?} (supported: {1})")]
    CipherSuite(String, String),
    #[error("unexpected TLS version {0:?} (supported: TLS1.2, TLS1.3)")]
    Version(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(String),
}
