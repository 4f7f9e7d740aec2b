//! A public-key infrastructure for tests: a CA, certificates it signs (for hosts, for a common
//! name, expired), a second CA nobody trusts, and a revocation list.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA in a directory, issuing certificates into it.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (the trusted CA file).
    pub ca: PathBuf,
    serial: std::cell::Cell<u64>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).field("ca", &self.ca).finish_non_exhaustive()
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Default)]
pub struct Spec<'a> {
    /// DNS names and IP addresses.
    pub hosts: &'a [&'a str],
    /// The subject's common name.
    pub cn: Option<&'a str>,
    /// Its validity ended yesterday.
    pub expired: bool,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `<dir>/<name>.pem`.
    ///
    /// # Panics
    /// When the files cannot be written (a test's failure).
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("a directory for the test PKI");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} test CA"));
        params.distinguished_name = dn;
        params.not_before = OffsetDateTime::now_utc() - Duration::days(2);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        let ca = dir.join(format!("{name}.pem"));
        std::fs::write(&ca, cert.pem()).expect("the CA certificate written");
        Self { dir: dir.to_path_buf(), issuer: Issuer::new(params, key), ca, serial: std::cell::Cell::new(1) }
    }

    /// A certificate for `spec`, signed by this CA, written as `<dir>/<file>.pem` and
    /// `<dir>/<file>-key.pem`; good for a server and a client.
    ///
    /// # Panics
    /// When the files cannot be written.
    pub fn issue(&self, file: &str, spec: &Spec<'_>) -> Pair {
        let hosts: Vec<String> = spec.hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(hosts).expect("valid host names");
        let mut dn = DistinguishedName::new();
        if let Some(cn) = spec.cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = if spec.expired {
            (now - Duration::days(2), now - Duration::days(1))
        } else {
            (now - Duration::hours(1), now + Duration::days(30))
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let serial = self.serial.get() + 1;
        self.serial.set(serial);
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a signed certificate");
        let pair = Pair { cert: self.dir.join(format!("{file}.pem")), key: self.dir.join(format!("{file}-key.pem")) };
        std::fs::write(&pair.cert, cert.pem()).expect("the certificate written");
        std::fs::write(&pair.key, key.serialize_pem()).expect("the key written");
        pair
    }

    /// A revocation list of this CA revoking `pair`, written to `<dir>/<file>.pem`.
    ///
    /// # Panics
    /// When `pair` is unreadable or the file cannot be written.
    pub fn revoke(&self, file: &str, pair: &Pair) -> PathBuf {
        let pem = std::fs::read_to_string(&pair.cert).expect("the certificate to revoke");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).expect("a PEM certificate");
        let der: rustls_pki_types::CertificateDer<'_> = der;
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).expect("a certificate");
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from_slice(parsed.raw_serial()),
                revocation_time: now - Duration::minutes(1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("a signed CRL");
        let path = self.dir.join(format!("{file}.pem"));
        std::fs::write(&path, crl.pem().expect("a PEM CRL")).expect("the CRL written");
        path
    }
}
