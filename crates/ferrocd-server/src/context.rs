//! The request context: made once, at the gRPC edge, for every request a listener accepts —
//! which listener it came in on, whether another member forwarded it, its deadline and (once
//! auth is built) who is calling. Services read it rather than the raw metadata.

use std::time::Duration;

use tokio::time::Instant;
use tonic::Request;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Metadata marking a request one member forwarded to the leader (it is not forwarded again).
/// Honoured only on the peer listener: a client cannot send it.
pub const FORWARDED: &str = "ferrocd-forwarded";

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
    /// Who is calling: the user name auth established (empty while auth is off, and for the
    /// server's own requests). It goes into the header of the log entries the request proposes.
    pub user: String,
}

impl RequestContext {
    /// The context the edge gave `request`; one made now with `timeout` for a request that
    /// did not come through a listener (the server's own calls).
    pub fn of<T>(request: &Request<T>, timeout: Duration) -> Self {
        request.extensions().get::<RequestContext>().cloned().unwrap_or_else(|| Self {
            listener: Listener::Client,
            forwarded: false,
            deadline: Instant::now() + timeout,
            user: String::new(),
        })
    }

    /// The context of a request the server makes itself, with etcd's request timeout.
    pub fn internal(timeout: Duration) -> Self {
        Self { listener: Listener::Internal, forwarded: false, deadline: Instant::now() + timeout, user: String::new() }
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
    /// marker, and what is left of the deadline.
    pub fn forward<T>(&self, metadata: &MetadataMap, message: T) -> Request<T> {
        let mut request = Request::new(message);
        *request.metadata_mut() = metadata.clone();
        request.metadata_mut().insert(FORWARDED, MetadataValue::from_static("1"));
        request.set_timeout(self.left());
        request
    }
}

/// The edge: a tonic interceptor, one per listener, that gives every request its
/// [`RequestContext`] (and drops a forwarded marker a client sent).
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    listener: Listener,
    timeout: Duration,
}

impl Edge {
    /// The edge of `listener`, with etcd's request timeout.
    pub fn new(listener: Listener, timeout: Duration) -> Self {
        Self { listener, timeout }
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
        // The marker is this hop's: forwarding the metadata on does not forward it.
        request.metadata_mut().remove(FORWARDED);
        let deadline = Instant::now() + timeout;
        let context = RequestContext { listener: self.listener, forwarded, deadline, user: String::new() };
        request.extensions_mut().insert(context);
        Ok(request)
    }
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
        let request = Edge::new(listener, Duration::from_secs(7)).call(request).unwrap();
        RequestContext::of(&request, Duration::ZERO)
    }

    #[test]
    fn the_forwarded_marker_counts_only_on_the_peer_listener() {
        assert!(through(Listener::Peer, &[(FORWARDED, "1")]).forwarded);
        let mut request = Request::new(());
        request.metadata_mut().insert(FORWARDED, MetadataValue::from_static("1"));
        request.metadata_mut().insert("x-app", MetadataValue::from_static("a"));
        let request = Edge::new(Listener::Client, Duration::from_secs(7)).call(request).unwrap();
        let client = RequestContext::of(&request, Duration::ZERO);
        assert!(!client.forwarded);
        assert!(request.metadata().get(FORWARDED).is_none());
        // The caller's own metadata travels on, marked once.
        let forward = client.forward(request.metadata(), ());
        assert_eq!(forward.metadata().get("x-app").unwrap(), "a");
        assert_eq!(forward.metadata().get_all(FORWARDED).iter().count(), 1);
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
