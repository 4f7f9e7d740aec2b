//! Certificates, keys, CA bundles and CRLs from PEM files; a certificate and key re-read when
//! their files change; self-signed certificates for `--auto-tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::Error;

fn file_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::File { path: path.display().to_string(), why: why.to_string() }
}

/// Every certificate in the PEM file at `path` (at least one).
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(Error::Empty { path: path.display().to_string(), what: "certificate" });
    }
    Ok(certs)
}

/// The CA certificates of the PEM file at `path`, as trust anchors.
pub(crate) fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

/// The revocation lists of the PEM file at `path`.
pub(crate) fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| file_error(path, e))?;
    if crls.is_empty() {
        return Err(Error::Empty { path: path.display().to_string(), what: "certificate revocation list" });
    }
    Ok(crls)
}

/// The subject's common name of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}

/// What a file looked like when it was read: a rewrite changes it.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[derive(Debug)]
struct Loaded {
    stamps: (Stamp, Stamp),
    key: Arc<CertifiedKey>,
}

/// A certificate chain and its private key from two PEM files, re-read at the next handshake
/// after either file changes (as etcd reads them per handshake). A rewrite caught half-way
/// (a new certificate beside the old key) keeps the pair in use until both match.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

impl CertFiles {
    /// Loads the pair now.
    ///
    /// # Errors
    /// Unreadable files, no certificate or key in them, a key of a kind `provider` cannot
    /// sign with, or a key that is not the certificate's.
    pub fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let stamps = (stamp(cert), stamp(key));
        let certified = Self::read(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            loaded: Mutex::new(Loaded { stamps, key: Arc::new(certified) }),
        })
    }

    fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
        let chain = certificates(cert)?;
        let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
        let signer = provider.key_provider.load_private_key(der).map_err(|e| file_error(key, e))?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|e| Error::Mismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(certified)
    }

    /// The pair to present: the one loaded, or the files' new contents when they changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        let mut loaded = self.loaded.lock();
        if stamps != loaded.stamps {
            match Self::read(&self.cert, &self.key, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert.display(), key = %self.key.display(), "reloaded the TLS certificate");
                    *loaded = Loaded { stamps, key: Arc::new(key) };
                }
                Err(e) => {
                    // Kept, and read again when the files change again.
                    tracing::warn!(error = %e, "cannot reload the TLS certificate; the previous one stays in use");
                    loaded.stamps = stamps;
                }
            }
        }
        Arc::clone(&loaded.key)
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertFiles {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A self-signed certificate for `hosts` (DNS names or IP addresses), valid for `validity`,
/// written as `cert.pem` and `key.pem` into `dir` (created) unless a pair is there already, as
/// etcd's `--auto-tls` keeps its fixtures; the paths of the pair.
///
/// # Errors
/// The directory or files cannot be written, or the certificate cannot be made.
pub fn self_signed(dir: &Path, hosts: &[String], validity: Duration) -> Result<(PathBuf, PathBuf), Error> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let failed = |e: rcgen::Error| Error::SelfSigned(e.to_string());
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(failed)?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::OrganizationName, "ferrocd");
    params.distinguished_name = name;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + validity;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| file_error(&cert_path, e))?;
    Ok((cert_path, key_path))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    file.write_all(bytes).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn a_self_signed_pair_loads_names_its_hosts_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert, key) = self_signed(dir.path(), &hosts, Duration::from_secs(86_400)).unwrap();
        let files = CertFiles::load(&cert, &key, provider()).unwrap();
        let der = files.current().cert[0].clone();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let sans = parsed.subject_alternative_name().unwrap().unwrap().value.general_names.len();
        assert_eq!(sans, 2);
        assert_eq!(common_name(&der), None, "no CN: a self-signed certificate names no user");
        let again = self_signed(dir.path(), &hosts, Duration::from_secs(86_400)).unwrap();
        assert_eq!(again, (cert.clone(), key));
        assert_eq!(std::fs::read(&cert).unwrap(), der_pem(&files), "the existing pair is kept");
    }

    fn der_pem(files: &CertFiles) -> Vec<u8> {
        std::fs::read(&files.cert).unwrap()
    }

    #[test]
    fn a_changed_pair_is_picked_up_and_a_half_written_one_is_not() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let hosts = vec!["localhost".to_string()];
        let (cert_a, key_a) = self_signed(a.path(), &hosts, Duration::from_secs(3600)).unwrap();
        let (cert_b, key_b) = self_signed(b.path(), &hosts, Duration::from_secs(3600)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::copy(&cert_a, &cert).unwrap();
        std::fs::copy(&key_a, &key).unwrap();
        let files = CertFiles::load(&cert, &key, provider()).unwrap();
        let first = files.current();
        // The certificate is replaced, the key not yet: the old pair stays.
        std::fs::copy(&cert_b, &cert).unwrap();
        assert_eq!(files.current().cert, first.cert);
        std::fs::copy(&key_b, &key).unwrap();
        let second = files.current();
        assert_ne!(second.cert, first.cert);
        assert_eq!(second.cert[0].as_ref(), certificates(&cert_b).unwrap()[0].as_ref());
    }

    #[test]
    fn unreadable_or_mismatched_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = CertFiles::load(&missing, &missing, provider()).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(roots(&empty), Err(Error::Empty { .. })));
        let hosts = vec!["localhost".to_string()];
        let (cert_a, _) = self_signed(&dir.path().join("a"), &hosts, Duration::from_secs(60)).unwrap();
        let (_, key_b) = self_signed(&dir.path().join("b"), &hosts, Duration::from_secs(60)).unwrap();
        assert!(matches!(CertFiles::load(&cert_a, &key_b, provider()), Err(Error::Mismatch { .. })));
    }
}
