//! `ferrocd-client`: a Rust client for etcd's v3 API, served by ferrocd and by etcd alike.
//!
//! One [`Client`] holds a connection per endpoint and spreads calls over them; every call has a
//! deadline, is retried with backoff when that cannot repeat an effect (reads always, writes only
//! when the request surely never reached a server), moves to the next endpoint when one is
//! unreachable or cut off from its leader, and refreshes its auth token when the server says it
//! is stale. Errors name etcd's cases ([`EtcdError`]) rather than strings.
//!
//! | module | what it offers |
//! |---|---|
//! | [`kv`] | get / put / delete / txn / compact, with option builders |
//! | [`watch`] | watches that resume from the last revision seen after a failure |
//! | [`lease`] | grant / revoke / time-to-live / list, and a keep-alive task |
//! | [`cluster`] | members: list, add (learners too), promote, update, remove |
//! | [`auth`] | auth on and off, users, roles, permissions |
//! | [`concurrency`] | etcd's recipes: a lock and a leader election |
//! | [`maintenance`] | status, alarms, defragment, hashes, move-leader, snapshots to a file |
//! | [`namespace`] | the cluster seen through a key prefix |
//! | [`stm`] | etcd's software transactional memory: retried transactions at four isolation levels |
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # let endpoint = member.url();
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use ferrocd_client::{Client, ConnectOptions, kv::GetOptions};
//!
//! let client = Client::connect([endpoint.as_str()], ConnectOptions::new()).await?; // "http://10.0.0.1:2379", ...
//! client.put("greeting", "hello", None).await?;
//! let got = client.get("greeting", None).await?;
//! assert_eq!(got.kvs[0].value, b"hello");
//! let under = client.get("greet", Some(GetOptions::new().with_prefix().with_count_only())).await?;
//! assert_eq!(under.count, 1);
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

pub mod auth;
pub mod cluster;
pub mod concurrency;
mod error;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod namespace;
pub mod stm;
pub mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{AuthenticateRequest, StatusRequest};
use tokio::time::Instant;
use tonic::metadata::{Ascii, AsciiMetadataValue, MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use error::{Error, EtcdError, Result};
pub use ferrocd_proto::etcdserverpb as proto;
pub use ferrocd_proto::mvccpb;

/// How a [`Client`] connects and calls.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    user: Option<(String, String)>,
    timeout: Duration,
    connect_timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    tls: Option<TlsOptions>,
    max_retries: u32,
    backoff: Duration,
    require_leader: bool,
    leader_routing: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            user: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            keep_alive: None,
            tls: None,
            max_retries: 5,
            backoff: Duration::from_millis(25),
            require_leader: false,
            leader_routing: false,
        }
    }
}

impl ConnectOptions {
    /// The defaults: no user, a 10 s deadline per call (retries included), 5 s to connect, up to
    /// 5 retries with backoff from 25 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Authenticates as `user` (etcd's simple or JWT tokens), and again whenever a token goes
    /// stale.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Each call's deadline, retries included (etcdctl's `--command-timeout`).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting to one endpoint may take (etcdctl's `--dial-timeout`).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// gRPC keepalive: a ping every `interval`, the connection dropped when one is not answered
    /// within `timeout` (etcdctl's `--keepalive-time` and `--keepalive-timeout`).
    #[must_use]
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// TLS (rustls) for every endpoint; `http://` endpoints are then spoken to over TLS too.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// At most `retries` more attempts of a call that may be repeated, the first after
    /// `backoff`, each next one twice as long (at most 1 s).
    #[must_use]
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.max_retries = retries;
        self.backoff = backoff;
        self
    }

    /// Asks servers to refuse requests (and end watches) while they have no leader (etcd's
    /// `hasleader` metadata, as `clientv3.WithRequireLeader`).
    #[must_use]
    pub fn with_require_leader(mut self, on: bool) -> Self {
        self.require_leader = on;
        self
    }

    /// Sends writes to the endpoint of the leader when one of the endpoints is it, sparing a
    /// follower's hop to the leader. The leader is found by asking each endpoint's status, and
    /// looked for again after a failure there or [`LEADER_TTL`] after it was found; reads
    /// still go to any endpoint.
    #[must_use]
    pub fn with_leader_routing(mut self, on: bool) -> Self {
        self.leader_routing = on;
        self
    }
}

/// TLS settings: the CA that signs the servers' certificates, and this client's own.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

impl TlsOptions {
    /// No CA (the platform's roots are not consulted: give one) and no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust servers whose certificates `ca_pem` signs (etcdctl's `--cacert`).
    #[must_use]
    pub fn with_ca(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(ca_pem.into());
        self
    }

    /// Present this certificate and key (etcdctl's `--cert` and `--key`).
    #[must_use]
    pub fn with_identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The name to check the servers' certificates against, instead of each endpoint's host.
    #[must_use]
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// How long a leader found for [`ConnectOptions::with_leader_routing`] is trusted before it is
/// looked for again (leadership moves without failing the writes a follower forwards).
pub const LEADER_TTL: Duration = Duration::from_secs(5);

/// A client of an etcd (or ferrocd) cluster; cheap to clone, all clones share connections and
/// the auth token.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Metadata every request of this handle carries (see [`Client::with_metadata`]).
    metadata: Arc<Vec<(MetadataKey<Ascii>, AsciiMetadataValue)>>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<(String, Channel)>,
    /// The endpoint the next call starts from.
    current: AtomicUsize,
    token: RwLock<Option<AsciiMetadataValue>>,
    options: ConnectOptions,
    /// With leader routing: the leader's endpoint and when it was found.
    leader: std::sync::Mutex<Option<(usize, Instant)>>,
}

/// Whether a call may be sent again after a failure that may have reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Reads and anything else whose second effect is the first's.
    Idempotent,
    /// Writes: sent again only when the failure shows they never arrived.
    Once,
}

impl Client {
    /// A client of the servers at `endpoints` (`http://host:port`, `https://…`, or `host:port`).
    /// Connections are made when first used; with a user, it authenticates now.
    ///
    /// # Errors
    /// No endpoints, a malformed one, TLS settings that do not load; with a user, a failed
    /// authentication.
    pub async fn connect<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
        options: ConnectOptions,
    ) -> Result<Client> {
        let mut channels = Vec::new();
        for endpoint in endpoints {
            let url = endpoint.as_ref();
            channels.push((url.to_string(), channel(url, &options)?));
        }
        if channels.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let client = Client::over(channels, options);
        if client.inner.options.user.is_some() {
            client.authenticate().await?;
        }
        Ok(client)
    }

    /// A client over a channel made elsewhere (an in-process connection, a custom connector),
    /// known as endpoint `name`. No authentication happens here: give it a user and call
    /// [`Client::authenticate`], or carry credentials with [`Client::with_metadata`].
    pub fn from_channel(name: impl Into<String>, channel: Channel, options: ConnectOptions) -> Client {
        Client::over(vec![(name.into(), channel)], options)
    }

    fn over(endpoints: Vec<(String, Channel)>, options: ConnectOptions) -> Client {
        let inner = Inner {
            endpoints,
            current: AtomicUsize::new(0),
            token: RwLock::new(None),
            options,
            leader: std::sync::Mutex::new(None),
        };
        Client { inner: Arc::new(inner), metadata: Arc::new(Vec::new()) }
    }

    /// This client (same connections, same token) with `key: value` added to the metadata of
    /// every request it sends.
    ///
    /// # Errors
    /// A key or value gRPC metadata cannot carry.
    pub fn with_metadata(&self, key: &str, value: &str) -> Result<Client> {
        let invalid = |what: &str| Error::InvalidArgs(format!("metadata {what} {key:?} is not valid"));
        let key = MetadataKey::from_bytes(key.as_bytes()).map_err(|_| invalid("key"))?;
        let value = AsciiMetadataValue::try_from(value).map_err(|_| invalid("value of"))?;
        let mut metadata = (*self.metadata).clone();
        metadata.push((key, value));
        Ok(Client { inner: Arc::clone(&self.inner), metadata: Arc::new(metadata) })
    }

    /// The endpoints this client calls, as given.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|(url, _)| url.clone()).collect()
    }

    /// Authenticates again with the configured user, replacing the token.
    ///
    /// # Errors
    /// The server's refusal (e.g. [`EtcdError::AuthFailed`]); unreachable servers.
    pub async fn authenticate(&self) -> Result<()> {
        let Some((name, password)) = self.inner.options.user.clone() else {
            return Err(Error::InvalidArgs("no user to authenticate as".into()));
        };
        let request = AuthenticateRequest { name, password };
        let reply =
            self.call_with(request, Repeat::Idempotent, false, |ch, r| async move {
                AuthClient::new(ch).authenticate(r).await
            })
            .await?;
        let token = MetadataValue::try_from(reply.token.as_str())
            .map_err(|_| Error::InvalidArgs("the server's token is not ASCII".into()))?;
        *self.inner.token.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
        Ok(())
    }

    /// The endpoint to call next and its channel.
    pub(crate) fn pick(&self) -> (usize, Channel) {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        (i, self.inner.endpoints[i].1.clone())
    }

    /// Moves off endpoint `index` after a failure there (if no other call moved already).
    pub(crate) fn failed(&self, index: usize) {
        let next = (index + 1) % self.inner.endpoints.len();
        let _ = self.inner.current.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
        let mut leader = self.inner.leader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if leader.is_some_and(|(i, _)| i == index) {
            *leader = None;
        }
    }

    /// With leader routing, the endpoint writes go to: the leader's, once found.
    pub fn leader_endpoint(&self) -> Option<String> {
        let leader = *self.inner.leader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        leader.map(|(i, _)| self.inner.endpoints[i].0.clone())
    }

    /// The leader's endpoint, found again when unknown or older than [`LEADER_TTL`]; `None`
    /// when no endpoint is the leader's or none answers in time.
    async fn leader_index(&self, deadline: Instant) -> Option<usize> {
        let known = *self.inner.leader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((index, found)) = known
            && found.elapsed() < LEADER_TTL
        {
            return Some(index);
        }
        let ask = deadline.min(Instant::now() + self.inner.options.connect_timeout);
        for (index, (_, channel)) in self.inner.endpoints.iter().enumerate() {
            let request = self.request(StatusRequest {}, Some(ask));
            let mut maintenance = MaintenanceClient::new(channel.clone());
            if let Ok(Ok(reply)) = tokio::time::timeout_at(ask, maintenance.status(request)).await {
                let reply = reply.into_inner();
                if reply.header.is_some_and(|h| h.member_id == reply.leader) {
                    *self.inner.leader.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((index, Instant::now()));
                    return Some(index);
                }
            }
        }
        None
    }

    /// `request` with this client's token, the leader requirement and a deadline.
    pub(crate) fn request<T>(&self, message: T, deadline: Option<Instant>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &*self.inner.token.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            request.metadata_mut().insert("token", token.clone());
        }
        for (key, value) in self.metadata.iter() {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        if self.inner.options.require_leader {
            request.metadata_mut().insert("hasleader", MetadataValue::from_static("true"));
        }
        if let Some(deadline) = deadline {
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        request
    }

    pub(crate) fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// Calls `f` on an endpoint with `message`, retrying as `repeat` allows until the deadline.
    pub(crate) async fn call<T, R, F, Fut>(&self, message: T, repeat: Repeat, f: F) -> Result<R>
    where
        T: Clone,
        F: Fn(Channel, tonic::Request<T>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        self.call_with(message, repeat, true, f).await
    }

    async fn call_with<T, R, F, Fut>(&self, message: T, repeat: Repeat, refresh: bool, f: F) -> Result<R>
    where
        T: Clone,
        F: Fn(Channel, tonic::Request<T>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let options = &self.inner.options;
        let deadline = Instant::now() + options.timeout;
        let mut refreshed = !refresh || options.user.is_none();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let routed = match repeat {
                Repeat::Once if options.leader_routing => self.leader_index(deadline).await,
                _ => None,
            };
            let (index, channel) = match routed {
                Some(index) => (index, self.inner.endpoints[index].1.clone()),
                None => self.pick(),
            };
            let request = self.request(message.clone(), Some(deadline));
            let err = match tokio::time::timeout_at(deadline, f(channel, request)).await {
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
                Ok(Err(status)) => Error::from(status),
                Err(_) => {
                    Error::Grpc(tonic::Status::deadline_exceeded(format!("no answer within {:?}", options.timeout)))
                }
            };
            if err.auth_stale() && !refreshed {
                refreshed = true;
                // Boxed: authenticating is itself a call.
                Box::pin(self.authenticate()).await?;
                continue;
            }
            if err.endpoint_failed() {
                self.failed(index);
            }
            let may_repeat = match repeat {
                Repeat::Idempotent => err.retryable(),
                Repeat::Once => err.not_sent(),
            };
            if !may_repeat || attempts > options.max_retries {
                return Err(err);
            }
            let wait = backoff(options.backoff, attempts);
            if Instant::now() + wait >= deadline {
                return Err(Error::DeadlineExceeded { attempts, last: Box::new(err) });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// The wait before attempt `attempts + 1`: `base` doubled per attempt, at most 1 s, with up to a
/// quarter of jitter so clients that failed together do not retry together.
pub(crate) fn backoff(base: Duration, attempts: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempts.saturating_sub(1).min(10)).min(Duration::from_secs(1));
    exp + exp.mul_f64(fastrand::f64() / 4.0)
}

/// A lazily connected channel to `url`.
fn channel(url: &str, options: &ConnectOptions) -> Result<Channel> {
    let invalid = |reason: String| Error::InvalidEndpoint { endpoint: url.to_string(), reason };
    let full = if url.contains("://") {
        url.to_string()
    } else if options.tls.is_some() {
        format!("https://{url}")
    } else {
        format!("http://{url}")
    };
    // etcd's unix endpoints are not spoken here; a clear error rather than a hang.
    if full.starts_with("unix:") || full.starts_with("unixs:") {
        return Err(invalid("unix socket endpoints are not supported".into()));
    }
    // With TLS settings every endpoint is spoken to over TLS; an `https` one without them
    // trusts no one but still needs TLS (and fails its handshake clearly).
    let (tls, full) = match (&options.tls, full.strip_prefix("http://")) {
        (Some(tls), Some(rest)) => (Some(tls.config()), format!("https://{rest}")),
        (Some(tls), None) => (Some(tls.config()), full),
        (None, _) if full.starts_with("https://") => (Some(ClientTlsConfig::new()), full),
        (None, _) => (None, full),
    };
    let mut endpoint = Endpoint::from_shared(full).map_err(|e| invalid(e.to_string()))?;
    if let Some(config) = tls {
        endpoint = endpoint.tls_config(config).map_err(|e| invalid(e.to_string()))?;
    }
    endpoint = endpoint.connect_timeout(options.connect_timeout).tcp_nodelay(true);
    if let Some((interval, timeout)) = options.keep_alive {
        endpoint = endpoint.http2_keep_alive_interval(interval).keep_alive_timeout(timeout).keep_alive_while_idle(true);
    }
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_second_with_bounded_jitter() {
        let base = Duration::from_millis(25);
        for attempts in 1..20 {
            let exp = base.saturating_mul(1 << (attempts - 1).min(10)).min(Duration::from_secs(1));
            let wait = backoff(base, attempts);
            assert!(wait >= exp && wait <= exp + exp / 4, "{attempts}: {wait:?}");
        }
    }

    #[tokio::test]
    async fn endpoints_are_checked_before_use() {
        let err = Client::connect(Vec::<String>::new(), ConnectOptions::new()).await.unwrap_err();
        assert!(matches!(err, Error::NoEndpoints));
        let err = Client::connect(["unix:///tmp/etcd.sock"], ConnectOptions::new()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err}");
        let client = Client::connect(["127.0.0.1:1", "http://127.0.0.1:2"], ConnectOptions::new()).await.unwrap();
        assert_eq!(client.endpoints(), ["127.0.0.1:1", "http://127.0.0.1:2"]);
    }

    #[tokio::test]
    async fn an_unreachable_cluster_fails_within_the_deadline_after_trying_every_endpoint() {
        let options = ConnectOptions::new()
            .with_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_millis(200))
            .with_retries(3, Duration::from_millis(10));
        let client = Client::connect(["127.0.0.1:1", "127.0.0.1:2"], options).await.unwrap();
        let started = std::time::Instant::now();
        let err = client.get("k", None).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");
    }
}
