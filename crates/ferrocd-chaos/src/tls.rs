//! TLS for a chaos cluster: a test CA, one certificate for every host's client and peer
//! listeners (peers authenticate each other with it), clients that trust the CA, and the
//! certificate rotated on disk at the start of each history, so the reload path runs under
//! faults and load.

use ferrocd_test_utils::Https;
use ferrocd_tls::testing::{Pair, Pki, Spec};
use ferrocd_tls::{Connector, TlsInfo};

/// A cluster's certificates, in a directory of their own.
#[derive(Debug)]
pub struct ChaosTls {
    _dir: tempfile::TempDir,
    pki: Pki,
    hosts: Vec<String>,
    /// Where every member reads its certificate (rewritten by [`Self::rotate`]).
    served: Pair,
    rotations: u64,
    connector: Connector,
}

impl ChaosTls {
    /// A CA and a certificate for `hosts` (the hosts' addresses).
    ///
    /// # Errors
    /// Files that cannot be written or read back.
    pub fn new(hosts: Vec<String>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ferrocd-chaos-tls-").tempdir()?;
        let pki = Pki::new(dir.path(), "ca");
        let served = Pair { cert: dir.path().join("member.pem"), key: dir.path().join("member-key.pem") };
        let client = TlsInfo { trusted_ca_file: Some(pki.ca.clone()), ..TlsInfo::default() };
        let connector = Connector::tls(client.client_config()?);
        let mut tls = Self { _dir: dir, pki, hosts, served, rotations: 0, connector };
        tls.rotate()?;
        Ok(tls)
    }

    /// A fresh certificate from the same CA written over the served one: key first, then the
    /// certificate (a member that reads between the two keeps its pair until both match).
    ///
    /// # Errors
    /// Files that cannot be written.
    pub fn rotate(&mut self) -> anyhow::Result<()> {
        self.rotations += 1;
        let hosts: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        let fresh = self.pki.issue(&format!("member-{}", self.rotations), &Spec { hosts: &hosts, ..Spec::default() });
        std::fs::copy(&fresh.key, &self.served.key)?;
        std::fs::copy(&fresh.cert, &self.served.cert)?;
        Ok(())
    }

    /// The members' TLS flags: TLS on both listeners, peers' certificates demanded.
    pub fn flags(&self) -> Vec<String> {
        let (cert, key, ca) = (&self.served.cert, &self.served.key, &self.pki.ca);
        [
            ("--cert-file", cert),
            ("--key-file", key),
            ("--peer-cert-file", cert),
            ("--peer-key-file", key),
            ("--peer-trusted-ca-file", ca),
        ]
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .chain(["--peer-client-cert-auth".to_string()])
        .collect()
    }

    /// The members' URLs are `https`; etcdctl trusts the CA.
    pub fn https(&self) -> Https {
        Https { client: true, peer: true, etcdctl: vec![format!("--cacert={}", self.pki.ca.display())] }
    }

    /// Opens clients' connections (TLS, the CA trusted).
    pub fn connector(&self) -> Connector {
        self.connector.clone()
    }
}
