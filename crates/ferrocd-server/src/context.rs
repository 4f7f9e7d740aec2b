//! The request context: made once, at the gRPC edge, for every request a listener accepts —
//! which listener it came in on, whether another member forwarded it, its deadline and who is
//! calling. Services read it rather than the raw metadata.

use std::sync::Arc;
use std::time::Duration;

use ferrocd_auth::AuthInfo;
use tokio::time::Instant;
use tonic::Request;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::auth::{Auth, Caller, Credential};

/// Metadata marking a request one member forwarded to the leader (it is not forwarded again).
/// Honoured only on the peer listener: a client cannot send it.
pub const FORWARDED: &str = "ferrocd-forwarded";

/// Metadata of a forwarded request naming the caller the forwarding member authenticated
/// (auth revision, 8 bytes big-endian, then the user name). Honoured only with
/// [`FORWARDED`] on the peer listener, as etcd trusts the header of a member's proposal.
pub const CALLER: &str = "ferrocd-caller-bin";

/// Metadata of a request the Lock and Election recipes make for a caller that proved itself
/// with a client certificate: its common name. Honoured only on the in-process loopback.
pub const COMMON_NAME: &str = "ferrocd-common-name";

/// The metadata keys a client sends its auth token in (etcd's gRPC and gateway names).
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The client URLs (`--listen-client-urls`).
    Client,
    /// The peer URLs (`--listen-peer-urls`): other members, forwarding to the leader.
    Peer,
    /// None: the server's own requests (expired leases' revokes, a member's publish).
    Internal,
}

/// What the server knows of a request besides its message.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub listener: Listener,
    /// Another member forwarded it here (only ever true on the peer listener).
    pub forwarded: bool,
    /// When the server stops working on it: etcd's request timeout after its arrival, or the
    /// client's own deadline when that comes first.
    pub deadline: Instant,
    /// Who is calling, as the token (or the forwarding member) says: anonymous while auth is
    /// off and for the server's own requests. It goes into the header of the log entries the
    /// request proposes.
    pub caller: Caller,
    /// The token the client sent, or its certificate's common name (streams resolve it again
    /// for each request they carry: a simple token stands for the store's revision at each use).
    pub credential: Option<Credential>,
}

impl RequestContext {
    /// The context the edge gave `request`; one made now with `timeout` for a request that
    /// did not come through a listener (the server's own calls).
    pub fn of<T>(request: &Request<T>, timeout: Duration) -> Self {
        request.extensions().get::<RequestContext>().cloned().unwrap_or_else(|| Self {
            listener: Listener::Client,
            forwarded: false,
            deadline: Instant::now() + timeout,
            caller: Caller::Anonymous,
            credential: None,
        })
    }

    /// The context of a request the server makes itself, with etcd's request timeout.
    pub fn internal(timeout: Duration) -> Self {
        Self {
            listener: Listener::Internal,
            forwarded: false,
            deadline: Instant::now() + timeout,
            caller: Caller::Anonymous,
            credential: None,
        }
    }

    /// The time left before the deadline.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// `message` as a request to forward to the leader: the caller's `metadata`, the forwarded
    /// marker, the caller this member authenticated, and what is left of the deadline.
    pub fn forward<T>(&self, metadata: &MetadataMap, message: T) -> Request<T> {
        let mut request = Request::new(message);
        *request.metadata_mut() = metadata.clone();
        request.metadata_mut().insert(FORWARDED, MetadataValue::from_static("1"));
        if let Caller::User(info) = &self.caller {
            let mut bytes = info.revision.to_be_bytes().to_vec();
            bytes.extend_from_slice(info.user.as_bytes());
            request.metadata_mut().insert_bin(CALLER, MetadataValue::from_bytes(&bytes));
        }
        request.set_timeout(self.left());
        request
    }
}

/// The edge: a tonic interceptor, one per listener, that gives every request its
/// [`RequestContext`] (and drops a forwarded marker a client sent).
#[derive(Debug, Clone)]
pub struct Edge {
    listener: Listener,
    timeout: Duration,
    /// Resolves tokens (none: every caller is anonymous).
    auth: Option<Arc<Auth>>,
    /// The in-process loopback of the Lock and Election recipes: [`COMMON_NAME`] is trusted.
    loopback: bool,
}

impl Edge {
    /// The edge of `listener`, with etcd's request timeout, resolving tokens with `auth`.
    pub fn new(listener: Listener, timeout: Duration, auth: Option<Arc<Auth>>) -> Self {
        Self { listener, timeout, auth, loopback: false }
    }

    /// The client edge of the in-process loopback, where the recipes name a caller's
    /// certificate by [`COMMON_NAME`].
    #[must_use]
    pub fn loopback(self) -> Self {
        Self { loopback: true, ..self }
    }

    /// Who `request` says is calling (and the credential it carries).
    fn caller(&self, request: &Request<()>, forwarded: bool) -> (Caller, Option<Credential>) {
        let metadata = request.metadata();
        if forwarded {
            let Some(bytes) = metadata.get_bin(CALLER).and_then(|v| v.to_bytes().ok()) else {
                return (Caller::Anonymous, None);
            };
            let caller = match bytes.split_at_checked(8) {
                Some((revision, user)) => Caller::User(AuthInfo {
                    user: String::from_utf8_lossy(user).into_owned(),
                    revision: u64::from_be_bytes(revision.try_into().unwrap_or_default()),
                }),
                None => Caller::Anonymous,
            };
            return (caller, None);
        }
        if self.listener != Listener::Client {
            return (Caller::Anonymous, None);
        }
        let credential = token(metadata).map(Credential::Token).or_else(|| {
            let name = if self.loopback {
                metadata.get(COMMON_NAME).and_then(|v| v.to_str().ok()).map(str::to_owned)
            } else {
                certificate_name(request)
            };
            name.map(Credential::CommonName)
        });
        let caller = match &self.auth {
            Some(auth) => auth.resolve(credential.as_ref()),
            None => Caller::Anonymous,
        };
        (caller, credential)
    }
}

impl tonic::service::Interceptor for Edge {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        let forwarded = match self.listener {
            Listener::Peer => request.metadata().contains_key(FORWARDED),
            Listener::Client | Listener::Internal => false,
        };
        let client = request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout);
        let timeout = client.map_or(self.timeout, |c| c.min(self.timeout));
        let (caller, credential) = self.caller(&request, forwarded);
        // The markers are this hop's: forwarding the metadata on does not forward them.
        request.metadata_mut().remove(FORWARDED);
        request.metadata_mut().remove_bin(CALLER);
        request.metadata_mut().remove(COMMON_NAME);
        let deadline = Instant::now() + timeout;
        let context = RequestContext { listener: self.listener, forwarded, deadline, caller, credential };
        request.extensions_mut().insert(context);
        Ok(request)
    }
}

/// The auth token in `metadata`: key `token`, else `authorization` (where the gateway puts
/// the HTTP header), without a `Bearer ` prefix.
fn token(metadata: &MetadataMap) -> Option<String> {
    let value = TOKEN_KEYS.iter().find_map(|k| metadata.get(*k))?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ").unwrap_or(value).to_owned())
}

/// The common name of the client certificate the TLS handshake of `request`'s connection
/// verified (`--client-cert-auth`).
fn certificate_name(request: &Request<()>) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    ferrocd_tls::common_name(certs.first()?)
}

/// gRPC's `grpc-timeout` header: at most eight digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn through(listener: Listener, headers: &[(&'static str, &'static str)]) -> RequestContext {
        let mut request = Request::new(());
        for (k, v) in headers {
            request.metadata_mut().insert(*k, MetadataValue::from_static(v));
        }
        let request = Edge::new(listener, Duration::from_secs(7), None).call(request).unwrap();
        RequestContext::of(&request, Duration::ZERO)
    }

    #[test]
    fn the_forwarded_marker_counts_only_on_the_peer_listener() {
        assert!(through(Listener::Peer, &[(FORWARDED, "1")]).forwarded);
        let mut request = Request::new(());
        request.metadata_mut().insert(FORWARDED, MetadataValue::from_static("1"));
        request.metadata_mut().insert("x-app", MetadataValue::from_static("a"));
        let request = Edge::new(Listener::Client, Duration::from_secs(7), None).call(request).unwrap();
        let client = RequestContext::of(&request, Duration::ZERO);
        assert!(!client.forwarded);
        assert!(request.metadata().get(FORWARDED).is_none());
        // The caller's own metadata travels on, marked once.
        let forward = client.forward(request.metadata(), ());
        assert_eq!(forward.metadata().get("x-app").unwrap(), "a");
        assert_eq!(forward.metadata().get_all(FORWARDED).iter().count(), 1);
    }

    #[test]
    fn the_caller_travels_with_a_forwarded_request_to_the_peer_listener_only() {
        let alice = Caller::User(AuthInfo { user: "alice".into(), revision: 7 });
        let mut ctx = RequestContext::internal(Duration::from_secs(1));
        ctx.caller = alice.clone();
        let at = |ctx: &RequestContext, listener| {
            let request = Edge::new(listener, Duration::from_secs(7), None).call(ctx.forward(&MetadataMap::new(), ()));
            let request = request.unwrap();
            assert!(request.metadata().get_bin(CALLER).is_none(), "the marker is this hop's");
            RequestContext::of(&request, Duration::ZERO).caller
        };
        assert_eq!(at(&ctx, Listener::Peer), alice);
        assert_eq!(at(&ctx, Listener::Client), Caller::Anonymous, "a client cannot name a caller");
        // A forwarded request without a caller is anonymous.
        ctx.caller = Caller::Anonymous;
        assert_eq!(at(&ctx, Listener::Peer), Caller::Anonymous);
    }

    #[test]
    fn the_deadline_is_the_request_timeout_or_the_clients_when_sooner() {
        let left = |headers| through(Listener::Client, headers).left();
        assert!(left(&[]) > Duration::from_secs(6));
        assert!(left(&[("grpc-timeout", "35S")]) <= Duration::from_secs(7));
        assert!(left(&[("grpc-timeout", "500m")]) <= Duration::from_millis(500));
        assert!(left(&[("grpc-timeout", "bogus")]) > Duration::from_secs(6));
    }

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad}");
        }
    }
}
