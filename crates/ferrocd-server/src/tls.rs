//! TLS from etcd's flags: the client side (`--cert-file`, ..., `--auto-tls`) for `https` client
//! and metrics URLs, the peer side (`--peer-cert-file`, ..., `--peer-auto-tls`) for `https` peer
//! URLs and for this member's connections to the others.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrocd_tls::{Connector, TlsInfo};
use rustls::ServerConfig;

use crate::config::{Config, split_hosts};

/// The TLS of one member.
#[derive(Debug, Default)]
pub struct Tls {
    /// For `https` client and metrics URLs.
    pub client: Option<Arc<ServerConfig>>,
    /// For `https` peer URLs.
    pub peer: Option<Arc<ServerConfig>>,
    /// For connections to other members' `https` peer URLs.
    pub peer_client: Option<Connector>,
}

impl Tls {
    /// Loads the certificates `config` names, generating the self-signed ones `--auto-tls` and
    /// `--peer-auto-tls` ask for (under `<data-dir>/fixtures/`, kept across restarts).
    ///
    /// # Errors
    /// Unreadable or inconsistent files, settings rustls cannot serve.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let validity = Duration::from_secs(u64::from(config.self_signed_cert_validity.max(1)) * 365 * 86_400);
        let fixtures = config.data_dir().join("fixtures");
        let mut client = config.client_tls()?;
        if config.auto_tls {
            if client.is_set() {
                tracing::warn!("ignoring client auto TLS since certs given");
            } else {
                let hosts = split_hosts(&config.listen_client_urls);
                auto(&mut client, &fixtures.join("client"), &hosts, validity)?;
            }
        }
        let mut peer = config.peer_tls()?;
        if config.peer_auto_tls {
            if peer.is_set() {
                tracing::warn!("ignoring peer auto TLS since certs given");
            } else {
                let hosts = split_hosts(&config.listen_peer_urls);
                auto(&mut peer, &fixtures.join("peer"), &hosts, validity)?;
                // The other members' certificates are self-signed too: etcd does not verify them.
                peer.insecure_skip_verify = true;
            }
        }
        let https = |list: &str| list.split(',').any(|u| u.trim().starts_with("https://"));
        let client_https = https(&config.listen_client_urls) || https(&config.listen_metrics_urls);
        if client.is_set() && !client_https {
            tracing::warn!("scheme is HTTP while key and cert files are present; ignoring key and cert files");
        }
        let peer_https = https(&config.listen_peer_urls);
        if peer.is_set() && !peer_https {
            tracing::warn!(
                "scheme is HTTP while peer key and cert files are present; ignoring peer key and cert files"
            );
        }
        Ok(Self {
            client: client_https.then(|| client.server_config()).transpose()?,
            peer: peer_https.then(|| peer.server_config()).transpose()?,
            peer_client: peer
                .is_set()
                .then(|| {
                    if peer.trusted_ca_file.is_none() && !peer.insecure_skip_verify {
                        anyhow::bail!("--peer-trusted-ca-file is needed to verify the other members' certificates");
                    }
                    Ok(Connector::tls(peer.client_config()?))
                })
                .transpose()?,
        })
    }
}

/// Points `info` at a self-signed pair in `dir` for `hosts`, made if missing.
fn auto(info: &mut TlsInfo, dir: &Path, hosts: &[String], validity: Duration) -> anyhow::Result<()> {
    let (cert, key) = ferrocd_tls::self_signed(dir, hosts, validity)?;
    tracing::info!(cert = %cert.display(), hosts = ?hosts, "using a self-signed certificate (auto TLS)");
    info.cert_file = Some(cert);
    info.key_file = Some(key);
    Ok(())
}
