//! [`TlsInfo`]: one side's TLS flags, turned into rustls configurations.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Error;
use crate::files::{self, CertFiles};

/// A TLS protocol version etcd's `--tls-min-version` / `--tls-max-version` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl std::str::FromStr for TlsVersion {
    type Err = Error;

    /// etcd's names (`TLS1.2`, `TLS1.3`); TLS 1.0 and 1.1 are refused: rustls has neither.
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "TLS1.2" => Ok(Self::Tls12),
            "TLS1.3" => Ok(Self::Tls13),
            other => Err(Error::Version(other.to_owned())),
        }
    }
}

/// One side's TLS settings (etcd's `transport.TLSInfo`): the client side (`--cert-file`, ...)
/// or the peer side (`--peer-cert-file`, ...), plus the server-wide cipher suites and versions.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// This member's certificate (chain) and key.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The CAs that sign the other side's certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// A listener demands a certificate the CAs signed.
    pub client_cert_auth: bool,
    /// Certificates a listener refuses although the CAs signed them.
    pub crl_file: Option<PathBuf>,
    /// The only common name a listener accepts in a client certificate.
    pub allowed_cn: Option<String>,
    /// Connections out accept any certificate (`--peer-auto-tls`: the peers' are self-signed).
    pub insecure_skip_verify: bool,
    /// IANA names of the TLS 1.2 suites allowed (empty: all of rustls's); TLS 1.3's are fixed.
    pub cipher_suites: Vec<String>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

impl TlsInfo {
    /// Whether this side has a certificate to serve TLS with.
    pub fn is_set(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// Checks the cipher suites and versions alone (no file is read).
    ///
    /// # Errors
    /// An unknown suite, suites with TLS 1.3 only, a minimum version above the maximum.
    pub fn crypto_check(&self) -> Result<(), Error> {
        self.provider()?;
        self.versions()?;
        Ok(())
    }

    /// The crypto provider: ring's, with the TLS 1.2 suites narrowed to `cipher_suites`.
    fn provider(&self) -> Result<Arc<CryptoProvider>, Error> {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            if self.min_version == Some(TlsVersion::Tls13) {
                return Err(Error::Invalid(
                    "cipher suites cannot be configured when only TLS1.3 is enabled".to_owned(),
                ));
            }
            let known = |s: &rustls::SupportedCipherSuite| suite_names(s);
            let mut kept: Vec<_> =
                provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied().collect();
            for name in &self.cipher_suites {
                let found = provider
                    .cipher_suites
                    .iter()
                    .find(|s| s.version() == &rustls::version::TLS12 && known(s).iter().any(|n| n == name));
                match found {
                    Some(suite) => kept.push(*suite),
                    None => {
                        let names: Vec<String> = provider
                            .cipher_suites
                            .iter()
                            .filter(|s| s.version() == &rustls::version::TLS12)
                            .map(|s| suite_names(s)[0].clone())
                            .collect();
                        return Err(Error::CipherSuite(name.clone(), names.join(", ")));
                    }
                }
            }
            provider.cipher_suites = kept;
        }
        Ok(Arc::new(provider))
    }

    fn versions(&self) -> Result<Vec<&'static SupportedProtocolVersion>, Error> {
        let min = self.min_version.unwrap_or(TlsVersion::Tls12);
        let max = self.max_version.unwrap_or(TlsVersion::Tls13);
        if min > max {
            return Err(Error::Invalid("--tls-min-version is greater than --tls-max-version".to_owned()));
        }
        let mut versions = Vec::new();
        if min == TlsVersion::Tls12 {
            versions.push(&rustls::version::TLS12);
        }
        if max == TlsVersion::Tls13 {
            versions.push(&rustls::version::TLS13);
        }
        Ok(versions)
    }

    fn cert_files(&self, provider: &Arc<CryptoProvider>) -> Result<Option<CertFiles>, Error> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(Some(CertFiles::load(cert, key, Arc::clone(provider))?)),
            (None, None) => Ok(None),
            _ => Err(Error::Invalid("a certificate needs both its file and its key file".to_owned())),
        }
    }

    /// A listener's configuration: this side's certificate (re-read when it changes), client
    /// certificates demanded and checked when `client_cert_auth`, ALPN `h2` and `http/1.1`.
    ///
    /// # Errors
    /// Files that cannot be read, settings that contradict each other.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let provider = self.provider()?;
        let Some(cert) = self.cert_files(&provider)? else {
            return Err(Error::Invalid("a TLS listener needs a certificate and key".to_owned()));
        };
        let verifier = if self.client_cert_auth {
            let Some(ca) = &self.trusted_ca_file else {
                return Err(Error::Invalid("client certificate authentication needs a trusted CA file".to_owned()));
            };
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(files::roots(ca)?), Arc::clone(&provider));
            if let Some(crl) = &self.crl_file {
                builder = builder.with_crls(files::crls(crl)?);
            }
            let verifier = builder.build().map_err(|e| Error::Invalid(e.to_string()))?;
            match &self.allowed_cn {
                Some(cn) => Arc::new(AllowedCn { inner: verifier, cn: cn.clone() }) as Arc<dyn ClientCertVerifier>,
                None => verifier,
            }
        } else {
            WebPkiClientVerifier::no_client_auth()
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&self.versions()?)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(cert));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The configuration of connections out (to peers, or a client's): the CAs verify the
    /// server (or nothing does, when `insecure_skip_verify`), this side's certificate is the
    /// client certificate when there is one, ALPN `h2`.
    ///
    /// # Errors
    /// Files that cannot be read, no way to verify the server.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let provider = self.provider()?;
        let builder =
            ClientConfig::builder_with_provider(Arc::clone(&provider)).with_protocol_versions(&self.versions()?)?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider.signature_verification_algorithms)))
        } else {
            let Some(ca) = &self.trusted_ca_file else {
                return Err(Error::Invalid(
                    "verifying the other side's certificate needs a trusted CA file".to_owned(),
                ));
            };
            builder.with_root_certificates(files::roots(ca)?)
        };
        let mut config = match self.cert_files(&provider)? {
            Some(cert) => builder.with_client_cert_resolver(Arc::new(cert)),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The names of a suite: IANA's, and Go's short name where it has one (etcd's flag takes Go's
/// `tls.CipherSuiteName`s).
fn suite_names(suite: &rustls::SupportedCipherSuite) -> Vec<String> {
    let iana = format!("{:?}", suite.suite());
    let mut names = vec![iana.clone()];
    if let Some(short) = iana.strip_suffix("_SHA256").filter(|n| n.ends_with("CHACHA20_POLY1305")) {
        names.push(short.to_owned());
    }
    names
}

/// A client verifier that, after the CAs, accepts only certificates of one common name
/// (`--peer-cert-allowed-cn`).
#[derive(Debug)]
struct AllowedCn {
    inner: Arc<dyn ClientCertVerifier>,
    cn: String,
}

impl ClientCertVerifier for AllowedCn {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match files::common_name(end_entity) {
            Some(cn) if cn == self.cn => Ok(verified),
            cn => Err(rustls::Error::General(format!("CommonName authentication failed: {cn:?} is not {:?}", self.cn))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (the handshake's signatures are still checked): peers with
/// `--peer-auto-tls` present self-signed certificates, which etcd does not verify either.
#[derive(Debug)]
struct AnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_etcds_names_and_ordered() {
        assert_eq!("TLS1.2".parse::<TlsVersion>().unwrap(), TlsVersion::Tls12);
        assert!(matches!("TLS1.1".parse::<TlsVersion>(), Err(Error::Version(_))));
        let info = TlsInfo { min_version: Some(TlsVersion::Tls13), ..TlsInfo::default() };
        assert_eq!(info.versions().unwrap(), vec![&rustls::version::TLS13]);
        let info = TlsInfo { max_version: Some(TlsVersion::Tls12), ..TlsInfo::default() };
        assert_eq!(info.versions().unwrap(), vec![&rustls::version::TLS12]);
        let info = TlsInfo {
            min_version: Some(TlsVersion::Tls13),
            max_version: Some(TlsVersion::Tls12),
            ..TlsInfo::default()
        };
        assert!(info.versions().is_err());
    }

    #[test]
    fn cipher_suites_narrow_tls12_only_and_unknown_ones_are_refused() {
        let info = TlsInfo {
            cipher_suites: vec![
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".into(),
            ],
            ..TlsInfo::default()
        };
        let provider = info.provider().unwrap();
        let tls12 = provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS12).count();
        let tls13 = provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).count();
        assert_eq!((tls12, tls13), (2, 3));
        let cbc = TlsInfo { cipher_suites: vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()], ..TlsInfo::default() };
        let e = cbc.provider().unwrap_err();
        assert!(e.to_string().contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), "{e}");
        let only13 = TlsInfo { min_version: Some(TlsVersion::Tls13), ..info };
        assert!(only13.provider().is_err());
    }

    #[test]
    fn a_listener_needs_a_certificate_and_client_auth_needs_a_ca() {
        assert!(TlsInfo::default().server_config().is_err());
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) =
            files::self_signed(dir.path(), &["localhost".into()], std::time::Duration::from_secs(60)).unwrap();
        let info = TlsInfo { cert_file: Some(cert.clone()), key_file: Some(key), ..TlsInfo::default() };
        let config = info.server_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let demanding = TlsInfo { client_cert_auth: true, ..info.clone() };
        assert!(demanding.server_config().is_err());
        let with_ca = TlsInfo { trusted_ca_file: Some(cert), ..demanding };
        assert!(with_ca.server_config().is_ok());
        assert!(TlsInfo { cert_file: None, ..info }.server_config().is_err());
    }
}
