//! The server's configuration: etcd's flag names, defaults and environment variables
//! (`ETCD_<FLAG>`), so a command line that starts a one-member etcd starts ferrocd unchanged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The etcd API version ferrocd implements and reports (Kubernetes checks it is >= 3.5.13).
pub const ETCD_VERSION: &str = "3.6.0";
/// The storage format version reported by Status.
pub const STORAGE_VERSION: &str = "3.6.0";
/// ferrocd's own version.
pub const FERROCD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// etcd's default for `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1536 * 1024;
/// etcd's quota when `--quota-backend-bytes` is 0: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// ferrocd's command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferrocd",
    about = "A drop-in replacement for etcd v3",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Config {
    /// Human-readable name of this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `<name>.ferrocd`).
    #[arg(long = "data-dir", env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for the /metrics and /health endpoints alone (comma-separated; plain
    /// HTTP).
    #[arg(long = "listen-metrics-urls", env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// Set level of detail for exported metrics, specify 'extensive' to include server side
    /// grpc histogram metrics.
    #[arg(long, env = "ETCD_METRICS", default_value = "basic")]
    pub metrics: String,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long = "listen-client-urls", env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379")]
    pub listen_client_urls: String,
    /// This member's client URLs to advertise to the cluster (comma-separated).
    #[arg(long = "advertise-client-urls", env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379")]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic (comma-separated).
    #[arg(long = "listen-peer-urls", env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the cluster (comma-separated).
    #[arg(
        long = "initial-advertise-peer-urls",
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (`name=peer-url,...`); default:
    /// this member alone.
    #[arg(long = "initial-cluster", env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state: `new` or `existing`.
    #[arg(long = "initial-cluster-state", env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,
    /// Initial cluster token, which makes cluster and member IDs unique per cluster.
    #[arg(long = "initial-cluster-token", env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long = "max-request-bytes", env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u32,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long = "max-txn-ops", env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,
    /// Refuse membership changes that could cost the cluster its quorum (etcd's default):
    /// `--strict-reconfig-check=false` turns the check off.
    #[arg(
        long = "strict-reconfig-check",
        env = "ETCD_STRICT_RECONFIG_CHECK",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub strict_reconfig_check: bool,
    /// Backend size limit in bytes before the space-exceeded error (0: 2 GiB).
    #[arg(long = "quota-backend-bytes", env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: i64,
    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long = "log-level", env = "ETCD_LOG_LEVEL", default_value = "info", value_parser = ["debug", "info", "warn", "error", "panic", "fatal"])]
    pub log_level: String,
    /// Logger: only `zap` (structured JSON), as in etcd 3.5+.
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap", value_parser = ["zap"])]
    pub logger: String,
    /// Where logs go: `default` or `stderr`, `stdout`, or file paths (comma-separated).
    #[arg(long = "log-outputs", env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long = "heartbeat-interval", env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long = "election-timeout", env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long = "snapshot-count", env = "ETCD_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// How often watchers that asked for progress notifications get one when quiet (a Go
    /// duration such as `10m`, `5s` or `500ms`; at least 100ms).
    #[arg(
        long = "watch-progress-notify-interval",
        visible_alias = "experimental-watch-progress-notify-interval",
        env = "ETCD_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = parse_go_duration
    )]
    pub watch_progress_notify_interval: Duration,
    /// Checkpoint leases' remaining TTLs through Raft, so a new leader does not restart
    /// long leases at their full TTL.
    #[arg(long = "experimental-enable-lease-checkpoint", env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT")]
    pub enable_lease_checkpoint: bool,
    /// How often lease checkpoints are taken (a Go duration).
    #[arg(
        long = "experimental-lease-checkpoint-interval",
        env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        default_value = "5m",
        value_parser = parse_go_duration
    )]
    pub lease_checkpoint_interval: Duration,
    /// Compare this member's keyspace hash with its peers' before serving; refuse to start on
    /// a mismatch.
    #[arg(long = "experimental-initial-corrupt-check", env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK")]
    pub initial_corrupt_check: bool,
    /// How often the leader compares every member's keyspace hash at one revision and raises
    /// CORRUPT on a mismatch (a Go duration; 0 disables).
    #[arg(
        long = "corrupt-check-time",
        visible_alias = "experimental-corrupt-check-time",
        env = "ETCD_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = parse_go_duration
    )]
    pub corrupt_check_time: Duration,
    /// After each compaction, the leader compares every member's hash at the compacted
    /// revision and raises CORRUPT for the members outside the majority.
    #[arg(long = "experimental-compact-hash-check-enabled", env = "ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED")]
    pub compact_hash_check: bool,
    /// How often the compaction hashes are compared (a Go duration).
    #[arg(
        long = "compact-hash-check-time",
        visible_alias = "experimental-compact-hash-check-time",
        env = "ETCD_COMPACT_HASH_CHECK_TIME",
        default_value = "1m",
        value_parser = parse_go_duration
    )]
    pub compact_hash_check_time: Duration,
    /// etcd 3.6's feature gates (`InitialCorruptCheck=true,CompactHashCheck=true`); the other
    /// gates are accepted and have no effect here.
    #[arg(long = "feature-gates", env = "ETCD_FEATURE_GATES", default_value = "")]
    pub feature_gates: String,
    /// The kind of auth tokens: `simple`, or
    /// `jwt,pub-key=<file>,priv-key=<file>,sign-method=<RS256|PS256|ES256|HS256|EdDSA|...>[,ttl=<duration>]`.
    #[arg(long = "auth-token", env = "ETCD_AUTH_TOKEN", default_value = "simple", value_parser = parse_auth_token)]
    pub auth_token: ferrocd_auth::TokenOptions,
    /// How long a simple token lives without being used, in seconds.
    #[arg(long = "auth-token-ttl", env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// The bcrypt cost of stored passwords (4 to 31).
    #[arg(
        long = "bcrypt-cost",
        env = "ETCD_BCRYPT_COST",
        default_value_t = ferrocd_auth::password::DEFAULT_COST,
        value_parser = clap::value_parser!(u32).range(4..=31)
    )]
    pub bcrypt_cost: u32,
    /// Path to the client server TLS cert file.
    #[arg(long = "cert-file", env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long = "key-file", env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long = "trusted-ca-file", env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long = "client-cert-auth", env = "ETCD_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long = "client-crl-file", env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Client TLS using generated certificates.
    #[arg(long = "auto-tls", env = "ETCD_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long = "peer-cert-file", env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long = "peer-key-file", env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long = "peer-trusted-ca-file", env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long = "peer-client-cert-auth", env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long = "peer-crl-file", env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Peer TLS using generated certificates.
    #[arg(long = "peer-auto-tls", env = "ETCD_PEER_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_auto_tls: bool,
    /// Allowed CN for inter peer authentication.
    #[arg(long = "peer-cert-allowed-cn", env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// The validity period of the client and peer certificates generated by --auto-tls and
    /// --peer-auto-tls, in years.
    #[arg(long = "self-signed-cert-validity", env = "ETCD_SELF_SIGNED_CERT_VALIDITY", default_value_t = 1)]
    pub self_signed_cert_validity: u32,
    /// Comma-separated list of supported TLS cipher suites between client/server and peers
    /// (empty will be auto-populated by rustls; only AEAD suites exist).
    #[arg(long = "cipher-suites", env = "ETCD_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,
    /// Minimum TLS version supported by etcd (TLS1.2 or TLS1.3; empty: TLS1.2).
    #[arg(long = "tls-min-version", env = "ETCD_TLS_MIN_VERSION", default_value = "", value_parser = ["", "TLS1.2", "TLS1.3"])]
    pub tls_min_version: String,
    /// Maximum TLS version supported by etcd (empty: TLS1.3).
    #[arg(long = "tls-max-version", env = "ETCD_TLS_MAX_VERSION", default_value = "", value_parser = ["", "TLS1.2", "TLS1.3"])]
    pub tls_max_version: String,
    /// Print the version and exit.
    #[arg(long)]
    pub version: bool,
}

fn parse_auth_token(text: &str) -> Result<ferrocd_auth::TokenOptions, String> {
    ferrocd_auth::TokenOptions::parse(text)
}

/// Parses a Go duration (`1h30m`, `1.5s`, `100ms`), as etcd's duration flags take.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let nanos = go_parse_duration::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e:?}"))?;
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| format!("negative duration {text:?}"))
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid URL {url:?} in {flag}: {why}")]
    BadUrl { flag: &'static str, url: String, why: String },
    #[error("--initial-cluster {0:?} is not of the form name=url[,name=url...]")]
    BadInitialCluster(String),
    #[error("couldn't find local name {name:?} in the initial cluster configuration")]
    NotInCluster { name: String },
    #[error("--initial-cluster has {cluster:?} for {name:?} but --initial-advertise-peer-urls is {advertised:?}")]
    PeerUrlMismatch { name: String, cluster: Vec<String>, advertised: Vec<String> },
    #[error("--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat}ms]")]
    BadTimeouts { election: u64, heartbeat: u64 },
    #[error("--max-txn-ops must be at least 1")]
    NoTxnOps,
    #[error("--watch-progress-notify-interval must be at least 100ms, got {0:?}")]
    ProgressIntervalTooShort(Duration),
    #[error("TLS key/cert ({flags}) must be provided for {url} with HTTPS scheme")]
    NoCertificate { flags: &'static str, url: String },
    #[error("{0}")]
    Tls(#[from] ferrocd_tls::Error),
}

/// How a URL is served: its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// An address to listen on, and whether TLS is spoken there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    pub scheme: Scheme,
}

fn split(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Parses `http(s)://host:port` into socket addresses (resolving `localhost`).
pub fn parse_url(flag: &'static str, url: &str) -> Result<(Scheme, Vec<SocketAddr>), ConfigError> {
    let bad = |why: &str| ConfigError::BadUrl { flag, url: url.to_string(), why: why.to_string() };
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        Some(("unix" | "unixs", _)) => return Err(bad("unix sockets are not supported by this build")),
        _ => return Err(bad("expected http://host:port or https://host:port")),
    };
    let host_port = rest.trim_end_matches('/');
    if host_port.contains('/') {
        return Err(bad("a listen URL has no path"));
    }
    let addrs = resolve(host_port, |h| std::net::ToSocketAddrs::to_socket_addrs(h).map(Iterator::collect))
        .map_err(|e| bad(&e.to_string()))?;
    if addrs.is_empty() {
        return Err(bad("resolves to no address"));
    }
    Ok((scheme, addrs))
}

/// The addresses of `host:port` by `lookup` (the system's resolver). `localhost` is the
/// loopback address even where the resolver does not know it (a machine without `/etc/hosts`,
/// as a fresh root made by debootstrap is), as RFC 6761 asks; etcd's default URLs name it.
fn resolve(
    host_port: &str,
    lookup: impl Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
) -> std::io::Result<Vec<SocketAddr>> {
    match lookup(host_port) {
        Err(e) => {
            let localhost = host_port.rsplit_once(':').and_then(|(host, port)| {
                let port: u16 = port.parse().ok()?;
                host.eq_ignore_ascii_case("localhost").then(|| SocketAddr::from(([127, 0, 0, 1], port)))
            });
            localhost.map(|addr| vec![addr]).ok_or(e)
        }
        found => found,
    }
}

/// The hosts of the URLs of `list` (IPv6 without brackets), each once; an unspecified address
/// stands for the loopback address and `localhost`.
pub fn split_hosts(list: &str) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for url in split(list) {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r).trim_end_matches('/');
        let host = match rest.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => rest,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let names: Vec<&str> = match host {
            "0.0.0.0" | "::" | "" => vec!["127.0.0.1", "::1", "localhost"],
            other => vec![other],
        };
        for name in names {
            if !hosts.iter().any(|h| h == name) {
                hosts.push(name.to_owned());
            }
        }
    }
    hosts
}

/// Refuses cipher suites and versions rustls cannot offer, before any file is read.
fn check_suites(info: &ferrocd_tls::TlsInfo) -> Result<(), ConfigError> {
    if info.cipher_suites.is_empty() && info.min_version.is_none() && info.max_version.is_none() {
        return Ok(());
    }
    info.crypto_check().map_err(ConfigError::Tls)
}

/// Every address the URLs of `list` (flag `flag`) resolve to, each once, with its scheme.
fn listen_addrs(flag: &'static str, list: &str) -> Result<Vec<ListenAddr>, ConfigError> {
    let mut out: Vec<ListenAddr> = Vec::new();
    for url in split(list) {
        let (scheme, addrs) = parse_url(flag, &url)?;
        for addr in addrs {
            if !out.iter().any(|l| l.addr == addr) {
                out.push(ListenAddr { addr, scheme });
            }
        }
    }
    Ok(out)
}

impl Config {
    /// The data directory: `--data-dir` or `<name>.ferrocd`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.ferrocd", self.name)))
    }

    pub fn advertise_client_urls(&self) -> Vec<String> {
        split(&self.advertise_client_urls)
    }

    pub fn advertise_peer_urls(&self) -> Vec<String> {
        split(&self.initial_advertise_peer_urls)
    }

    /// The addresses to serve clients on (every address a listen URL resolves to).
    ///
    /// # Errors
    /// A URL that is not `http://host:port` or does not resolve.
    pub fn client_listen_addrs(&self) -> Result<Vec<ListenAddr>, ConfigError> {
        listen_addrs("--listen-client-urls", &self.listen_client_urls)
    }

    /// Whether feature gate `name` is set to true.
    fn gate(&self, name: &str) -> bool {
        split(&self.feature_gates)
            .iter()
            .any(|g| g.split_once('=').is_some_and(|(n, v)| n.trim() == name && v.trim() == "true"))
    }

    /// Whether the initial corruption check runs (the flag or the feature gate).
    pub fn initial_corrupt_check(&self) -> bool {
        self.initial_corrupt_check || self.gate("InitialCorruptCheck")
    }

    /// Whether the compaction hash check runs (the flag or the feature gate).
    pub fn compact_hash_check(&self) -> bool {
        self.compact_hash_check || self.gate("CompactHashCheck")
    }

    /// The server's quota in bytes.
    pub fn quota_bytes(&self) -> u64 {
        if self.quota_backend_bytes <= 0 { DEFAULT_QUOTA_BYTES } else { self.quota_backend_bytes as u64 }
    }

    /// `(name, peer URLs)` of each initial member, in flag order.
    ///
    /// # Errors
    /// A malformed `--initial-cluster`.
    pub fn initial_members(&self) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let spec = self.initial_cluster.clone().unwrap_or_else(|| {
            self.advertise_peer_urls().iter().map(|u| format!("{}={u}", self.name)).collect::<Vec<_>>().join(",")
        });
        let mut members: Vec<(String, Vec<String>)> = Vec::new();
        for part in split(&spec) {
            let (name, url) = part.split_once('=').ok_or_else(|| ConfigError::BadInitialCluster(spec.clone()))?;
            if name.is_empty() || url.is_empty() {
                return Err(ConfigError::BadInitialCluster(spec.clone()));
            }
            match members.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => members.push((name.to_string(), vec![url.to_string()])),
            }
        }
        Ok(members)
    }

    /// Checks what this build can serve: a single-member cluster naming this member.
    ///
    /// # Errors
    /// Each unsupported or inconsistent setting, with the flag to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let client_tls = self.cert_file.is_some() && self.key_file.is_some() || self.auto_tls;
        let peer_tls = self.peer_cert_file.is_some() && self.peer_key_file.is_some() || self.peer_auto_tls;
        let https = |flag: &'static str, list: &str, tls: bool, flags: &'static str| {
            for url in split(list) {
                if parse_url(flag, &url)?.0 == Scheme::Https && !tls {
                    return Err(ConfigError::NoCertificate { flags, url });
                }
            }
            Ok(())
        };
        const CLIENT_FLAGS: &str = "--cert-file, --key-file";
        const PEER_FLAGS: &str = "--peer-cert-file, --peer-key-file";
        https("--listen-client-urls", &self.listen_client_urls, client_tls, CLIENT_FLAGS)?;
        https("--listen-metrics-urls", &self.listen_metrics_urls, client_tls, CLIENT_FLAGS)?;
        https("--listen-peer-urls", &self.listen_peer_urls, peer_tls, PEER_FLAGS)?;
        self.client_tls()?;
        self.peer_tls()?;
        if self.max_txn_ops == 0 {
            return Err(ConfigError::NoTxnOps);
        }
        if self.watch_progress_notify_interval < Duration::from_millis(100) {
            return Err(ConfigError::ProgressIntervalTooShort(self.watch_progress_notify_interval));
        }
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::BadTimeouts {
                election: self.election_timeout,
                heartbeat: self.heartbeat_interval,
            });
        }
        let members = self.initial_members()?;
        let Some((_, urls)) = members.iter().find(|(n, _)| *n == self.name) else {
            return Err(ConfigError::NotInCluster { name: self.name.clone() });
        };
        let (mut cluster, mut advertised) = (urls.clone(), self.advertise_peer_urls());
        cluster.sort();
        advertised.sort();
        if cluster != advertised {
            return Err(ConfigError::PeerUrlMismatch { name: self.name.clone(), cluster, advertised });
        }
        Ok(())
    }

    /// The addresses to serve peers on.
    ///
    /// # Errors
    /// A URL that is not `http://host:port` or does not resolve.
    pub fn peer_listen_addrs(&self) -> Result<Vec<ListenAddr>, ConfigError> {
        listen_addrs("--listen-peer-urls", &self.listen_peer_urls)
    }

    /// The addresses of `--listen-metrics-urls` (none by default).
    ///
    /// # Errors
    /// A URL that is not `http://host:port`.
    pub fn metrics_listen_addrs(&self) -> Result<Vec<ListenAddr>, ConfigError> {
        listen_addrs("--listen-metrics-urls", &self.listen_metrics_urls)
    }

    /// The TLS settings both sides share: cipher suites and versions.
    fn tls_common(&self) -> Result<ferrocd_tls::TlsInfo, ConfigError> {
        let version = |v: &str| if v.is_empty() { Ok(None) } else { v.parse().map(Some) };
        Ok(ferrocd_tls::TlsInfo {
            cipher_suites: split(&self.cipher_suites),
            min_version: version(&self.tls_min_version)?,
            max_version: version(&self.tls_max_version)?,
            ..ferrocd_tls::TlsInfo::default()
        })
    }

    /// The client side's TLS flags (`--auto-tls` is resolved when the server starts).
    ///
    /// # Errors
    /// An unknown cipher suite or TLS version.
    pub fn client_tls(&self) -> Result<ferrocd_tls::TlsInfo, ConfigError> {
        let info = ferrocd_tls::TlsInfo {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
            crl_file: self.client_crl_file.clone(),
            ..self.tls_common()?
        };
        check_suites(&info)?;
        Ok(info)
    }

    /// The peer side's TLS flags (`--peer-auto-tls` is resolved when the server starts).
    ///
    /// # Errors
    /// An unknown cipher suite or TLS version.
    pub fn peer_tls(&self) -> Result<ferrocd_tls::TlsInfo, ConfigError> {
        let info = ferrocd_tls::TlsInfo {
            cert_file: self.peer_cert_file.clone(),
            key_file: self.peer_key_file.clone(),
            trusted_ca_file: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
            crl_file: self.peer_crl_file.clone(),
            allowed_cn: self.peer_cert_allowed_cn.clone().filter(|cn| !cn.is_empty()),
            ..self.tls_common()?
        };
        check_suites(&info)?;
        Ok(info)
    }

    /// `--metrics extensive` (any other value is basic, as in etcd).
    pub fn extensive_metrics(&self) -> bool {
        self.metrics == "extensive"
    }

    /// What `--version` prints: etcd's lines (tools parse `etcd Version:`), then ferrocd's.
    pub fn version_text() -> String {
        format!(
            "etcd Version: {ETCD_VERSION}\nGit SHA: ferrocd\nGo Version: not applicable (ferrocd {FERROCD_VERSION}, Rust)\nGo OS/Arch: {}/{}\nferrocd Version: {FERROCD_VERSION}\n",
            std::env::consts::OS,
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("ferrocd").chain(args.iter().copied()))
    }

    #[test]
    fn localhost_is_the_loopback_address_without_a_resolver_that_knows_it() {
        let unknown = |_: &str| Err(std::io::Error::other("Name or service not known"));
        assert_eq!(resolve("localhost:2380", unknown).unwrap(), vec![SocketAddr::from(([127, 0, 0, 1], 2380))]);
        assert_eq!(resolve("LocalHost:1", unknown).unwrap(), vec![SocketAddr::from(([127, 0, 0, 1], 1))]);
        assert!(resolve("elsewhere:2380", unknown).is_err());
        assert!(resolve("localhost:port", unknown).is_err());
        // A resolver that knows it has the last word (it may add ::1).
        let both = |_: &str| Ok(vec![SocketAddr::from(([127, 0, 0, 1], 2380)), "[::1]:2380".parse().unwrap()]);
        assert_eq!(resolve("localhost:2380", both).unwrap().len(), 2);
        assert_eq!(parse_url("--listen-peer-urls", "http://localhost:2380").unwrap().1[0].port(), 2380);
    }

    #[test]
    fn progress_interval_takes_go_durations_under_both_names() {
        assert_eq!(parse(&[]).unwrap().watch_progress_notify_interval, Duration::from_secs(600));
        let c = parse(&["--watch-progress-notify-interval", "1m30s"]).unwrap();
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(90));
        let c = parse(&["--experimental-watch-progress-notify-interval=250ms"]).unwrap();
        assert_eq!(c.watch_progress_notify_interval, Duration::from_millis(250));
        assert!(parse(&["--watch-progress-notify-interval", "soon"]).is_err());
        let short = parse(&["--watch-progress-notify-interval", "10ms"]).unwrap();
        assert_eq!(
            short.validate().unwrap_err().to_string(),
            "--watch-progress-notify-interval must be at least 100ms, got 10ms"
        );
    }

    #[test]
    fn defaults_are_etcds() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir(), PathBuf::from("default.ferrocd"));
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.quota_bytes(), 2 << 30);
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!(c.initial_members().unwrap(), vec![("default".into(), vec!["http://localhost:2380".into()])]);
        c.validate().unwrap();
    }

    #[test]
    fn a_one_member_etcd_command_line_is_accepted() {
        let c = parse(&[
            "--name",
            "infra0",
            "--data-dir=/tmp/x",
            "--listen-client-urls",
            "http://127.0.0.1:23790",
            "--advertise-client-urls",
            "http://127.0.0.1:23790",
            "--listen-peer-urls",
            "http://127.0.0.1:23800",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:23800",
            "--initial-cluster",
            "infra0=http://127.0.0.1:23800",
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "tok",
            "--max-request-bytes",
            "10485760",
            "--max-txn-ops",
            "256",
            "--quota-backend-bytes",
            "8589934592",
            "--log-level",
            "warn",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ])
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.data_dir(), PathBuf::from("/tmp/x"));
        let http = ListenAddr { addr: "127.0.0.1:23790".parse().unwrap(), scheme: Scheme::Http };
        assert_eq!(c.client_listen_addrs().unwrap(), vec![http]);
    }

    #[test]
    fn https_urls_need_a_certificate_and_tls_flags_are_etcds() {
        let https =
            ["--listen-client-urls", "https://127.0.0.1:23790", "--advertise-client-urls", "https://127.0.0.1:23790"];
        assert_eq!(
            parse(&https).unwrap().validate().unwrap_err().to_string(),
            "TLS key/cert (--cert-file, --key-file) must be provided for https://127.0.0.1:23790 with HTTPS scheme"
        );
        let mut with_cert = https.to_vec();
        with_cert.extend([
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
            "--client-cert-auth",
            "--trusted-ca-file=ca.pem",
        ]);
        let c = parse(&with_cert).unwrap();
        c.validate().unwrap();
        assert_eq!(c.client_listen_addrs().unwrap()[0].scheme, Scheme::Https);
        let tls = c.client_tls().unwrap();
        assert!(tls.client_cert_auth && tls.is_set());
        let mut auto = https.to_vec();
        auto.push("--auto-tls");
        parse(&auto).unwrap().validate().unwrap();
        let peer = parse(&["--listen-peer-urls", "https://127.0.0.1:23800"]).unwrap();
        assert!(peer.validate().unwrap_err().to_string().contains("--peer-cert-file, --peer-key-file"));
        let c =
            parse(&["--peer-client-cert-auth=true", "--peer-cert-allowed-cn", "member", "--tls-min-version", "TLS1.3"]);
        let peer = c.unwrap().peer_tls().unwrap();
        assert!(peer.client_cert_auth);
        assert_eq!(peer.allowed_cn.as_deref(), Some("member"));
        assert_eq!(peer.min_version, Some(ferrocd_tls::TlsVersion::Tls13));
        assert!(parse(&["--tls-min-version", "TLS1.1"]).is_err(), "rustls has no TLS 1.1");
        let cbc = parse(&["--cipher-suites", "TLS_RSA_WITH_AES_128_CBC_SHA"]).unwrap();
        assert!(cbc.validate().unwrap_err().to_string().contains("unexpected TLS cipher suite"));
        assert!(parse(&["--listen-client-urls", "unix://x:1"]).unwrap().validate().is_err());
    }

    #[test]
    fn unknown_flags_and_bad_values_are_errors() {
        assert!(parse(&["--no-such-flag"]).is_err());
        assert!(parse(&["--initial-cluster-state", "maybe"]).is_err());
        assert!(parse(&["--logger", "capnslog"]).is_err());
        assert!(parse(&["--max-txn-ops", "many"]).is_err());
    }

    #[test]
    fn the_last_repeated_flag_wins() {
        assert_eq!(parse(&["--name", "a", "--name", "b"]).unwrap().name, "b");
    }

    #[test]
    fn strict_reconfig_check_is_on_unless_turned_off() {
        assert!(parse(&[]).unwrap().strict_reconfig_check);
        assert!(parse(&["--strict-reconfig-check"]).unwrap().strict_reconfig_check);
        assert!(parse(&["--strict-reconfig-check=true"]).unwrap().strict_reconfig_check);
        assert!(!parse(&["--strict-reconfig-check=false"]).unwrap().strict_reconfig_check);
        assert!(parse(&["--strict-reconfig-check=maybe"]).is_err());
    }

    #[test]
    fn cluster_command_lines_are_checked() {
        let c = parse(&[
            "--name",
            "b",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2381",
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,c=http://127.0.0.1:2382",
            "--initial-cluster-state",
            "existing",
        ])
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.initial_members().unwrap().len(), 3);
        let c = parse(&["--name", "a", "--initial-cluster", "b=http://localhost:2380"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::NotInCluster { .. })));
        let c = parse(&["--name", "a", "--initial-cluster", "a=http://127.0.0.1:9"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::PeerUrlMismatch { .. })));
        let c = parse(&["--election-timeout", "400", "--heartbeat-interval", "100"]).unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        let c = parse(&["--listen-client-urls", "ftp://127.0.0.1:2379"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::BadUrl { .. })));
        let c = parse(&["--initial-cluster", "nonsense"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::BadInitialCluster(_))));
    }

    #[test]
    fn version_text_has_etcds_first_line() {
        assert!(Config::version_text().starts_with(&format!("etcd Version: {ETCD_VERSION}\n")));
    }
}
