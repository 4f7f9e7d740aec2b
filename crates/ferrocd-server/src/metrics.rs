//! Prometheus metrics with etcd's names, types, labels, help texts and buckets, in a registry of
//! the member's own (several members may share a process in tests). Gauges that mirror state
//! (leader, indexes, sizes, keys) are read when `/metrics` is scraped, so the request paths pay
//! nothing for them; counters and histograms are updated where their events happen: proposals,
//! the disk (through [`ferrocd_engine::Timed`]), peers, and every gRPC call through [`GrpcLayer`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, exponential_buckets,
};

use crate::config::ETCD_VERSION;

/// gRPC's status codes by number, as Go names them (go-grpc-prometheus' `grpc_code` values).
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Every method the client port serves, with its gRPC type: the series go-grpc-prometheus
/// creates at zero when the server starts, as etcd's `/metrics` shows them before any call.
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", UNARY),
    ("etcdserverpb.KV", "Put", UNARY),
    ("etcdserverpb.KV", "DeleteRange", UNARY),
    ("etcdserverpb.KV", "Txn", UNARY),
    ("etcdserverpb.KV", "Compact", UNARY),
    ("etcdserverpb.Watch", "Watch", BIDI),
    ("etcdserverpb.Lease", "LeaseGrant", UNARY),
    ("etcdserverpb.Lease", "LeaseRevoke", UNARY),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BIDI),
    ("etcdserverpb.Lease", "LeaseTimeToLive", UNARY),
    ("etcdserverpb.Lease", "LeaseLeases", UNARY),
    ("etcdserverpb.Cluster", "MemberAdd", UNARY),
    ("etcdserverpb.Cluster", "MemberRemove", UNARY),
    ("etcdserverpb.Cluster", "MemberUpdate", UNARY),
    ("etcdserverpb.Cluster", "MemberList", UNARY),
    ("etcdserverpb.Cluster", "MemberPromote", UNARY),
    ("etcdserverpb.Maintenance", "Alarm", UNARY),
    ("etcdserverpb.Maintenance", "Status", UNARY),
    ("etcdserverpb.Maintenance", "Defragment", UNARY),
    ("etcdserverpb.Maintenance", "Hash", UNARY),
    ("etcdserverpb.Maintenance", "HashKV", UNARY),
    ("etcdserverpb.Maintenance", "Snapshot", SERVER_STREAM),
    ("etcdserverpb.Maintenance", "MoveLeader", UNARY),
    ("etcdserverpb.Maintenance", "Downgrade", UNARY),
    ("etcdserverpb.Auth", "AuthEnable", UNARY),
    ("etcdserverpb.Auth", "AuthDisable", UNARY),
    ("etcdserverpb.Auth", "AuthStatus", UNARY),
    ("etcdserverpb.Auth", "Authenticate", UNARY),
    ("etcdserverpb.Auth", "UserAdd", UNARY),
    ("etcdserverpb.Auth", "UserGet", UNARY),
    ("etcdserverpb.Auth", "UserList", UNARY),
    ("etcdserverpb.Auth", "UserDelete", UNARY),
    ("etcdserverpb.Auth", "UserChangePassword", UNARY),
    ("etcdserverpb.Auth", "UserGrantRole", UNARY),
    ("etcdserverpb.Auth", "UserRevokeRole", UNARY),
    ("etcdserverpb.Auth", "RoleAdd", UNARY),
    ("etcdserverpb.Auth", "RoleGet", UNARY),
    ("etcdserverpb.Auth", "RoleList", UNARY),
    ("etcdserverpb.Auth", "RoleDelete", UNARY),
    ("etcdserverpb.Auth", "RoleGrantPermission", UNARY),
    ("etcdserverpb.Auth", "RoleRevokePermission", UNARY),
    ("v3lockpb.Lock", "Lock", UNARY),
    ("v3lockpb.Lock", "Unlock", UNARY),
    ("v3electionpb.Election", "Campaign", UNARY),
    ("v3electionpb.Election", "Proclaim", UNARY),
    ("v3electionpb.Election", "Leader", UNARY),
    ("v3electionpb.Election", "Observe", SERVER_STREAM),
    ("v3electionpb.Election", "Resign", UNARY),
    ("grpc.health.v1.Health", "Check", UNARY),
    ("grpc.health.v1.Health", "Watch", SERVER_STREAM),
];

const UNARY: &str = "unary";
const SERVER_STREAM: &str = "server_stream";
const BIDI: &str = "bidi_stream";

/// The gRPC type of `service`/`method` (unary for one the table does not know).
fn grpc_type(service: &str, method: &str) -> &'static str {
    METHODS.iter().find(|(s, m, _)| *s == service && *m == method).map_or(UNARY, |(_, _, t)| t)
}

/// A member's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    is_learner: IntGauge,
    pub leader_changes: IntCounter,
    committed: IntGauge,
    applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    quota: IntGauge,
    db_total: IntGauge,
    db_in_use: IntGauge,
    keys: IntGauge,
    pub health_success: IntCounter,
    pub health_failures: IntCounter,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub peer_rtt: HistogramVec,
    pub peer_sent: IntCounterVec,
    pub peer_received: IntCounterVec,
    pub peer_sent_failures: IntCounterVec,
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    /// `--metrics extensive` only.
    grpc_handling: Option<HistogramVec>,
    /// The counters of each method of [`METHODS`], by request path (`/service/method`),
    /// resolved once: a call then costs one map lookup and atomic increments.
    methods: std::collections::HashMap<String, usize>,
    counters: Vec<MethodCounters>,
    server_id: IntGaugeVec,
}

/// One method's series.
#[derive(Debug)]
struct MethodCounters {
    started: IntCounter,
    /// By code number.
    handled: Vec<IntCounter>,
    handling: Option<Histogram>,
}

/// What the scrape-time gauges show.
#[derive(Debug, Clone, Copy, Default)]
pub struct State {
    pub has_leader: bool,
    pub is_leader: bool,
    pub is_learner: bool,
    pub committed: u64,
    pub applied: u64,
    pub quota_bytes: u64,
    pub db_total_bytes: u64,
    pub db_in_use_bytes: u64,
    pub keys: u64,
}

fn opts(namespace: &str, subsystem: &str, name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(namespace).subsystem(subsystem)
}

fn histogram(subsystem: &str, name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help).namespace("etcd").subsystem(subsystem).buckets(buckets)
}

/// Registers `metric` in `registry` and answers it (the names are fixed: registration cannot
/// fail but for a programming error).
fn reg<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("a metric registered once");
    metric
}

impl Metrics {
    /// The metrics of member `member_id`; `extensive` adds gRPC latency histograms
    /// (`--metrics extensive`).
    ///
    /// # Panics
    /// Never with the fixed names and labels used here.
    pub fn new(extensive: bool) -> Self {
        let r = Registry::new();
        let gauge = |sub, name, help| reg(&r, IntGauge::with_opts(opts("etcd", sub, name, help)).unwrap());
        let counter = |sub, name, help| reg(&r, IntCounter::with_opts(opts("etcd", sub, name, help)).unwrap());
        let labelled = |sub, name, help, label: &str| {
            reg(&r, IntCounterVec::new(opts("etcd", sub, name, help), &[label]).unwrap())
        };
        let info = |ns, name, help, label: &str, value: &str| {
            let g = reg(&r, IntGaugeVec::new(opts(ns, "server", name, help), &[label]).unwrap());
            g.with_label_values(&[value]).set(1);
        };
        info(
            "etcd",
            "version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            ETCD_VERSION,
        );
        let server_id = reg(
            &r,
            IntGaugeVec::new(
                opts(
                    "etcd",
                    "server",
                    "id",
                    "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                ),
                &["server_id"],
            )
            .unwrap(),
        );
        let cluster = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "etcd_cluster_version",
                    "Which version is running. 1 for 'cluster_version' label with current cluster version",
                ),
                &["cluster_version"],
            )
            .unwrap(),
        );
        cluster.with_label_values(&[ETCD_VERSION.rsplit_once('.').map_or(ETCD_VERSION, |(minor, _)| minor)]).set(1);
        let grpc_labels = ["grpc_type", "grpc_service", "grpc_method"];
        let grpc_started = reg(
            &r,
            IntCounterVec::new(
                Opts::new("grpc_server_started_total", "Total number of RPCs started on the server."),
                &grpc_labels,
            )
            .unwrap(),
        );
        let grpc_handled = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "grpc_server_handled_total",
                    "Total number of RPCs completed on the server, regardless of success or failure.",
                ),
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            )
            .unwrap(),
        );
        let grpc_handling = extensive.then(|| {
            let buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "grpc_server_handling_seconds",
                        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                    )
                    .buckets(buckets),
                    &grpc_labels,
                )
                .unwrap(),
            )
        });
        let methods =
            METHODS.iter().enumerate().map(|(i, (service, method, _))| (format!("/{service}/{method}"), i)).collect();
        let counters = METHODS
            .iter()
            .map(|(service, method, kind)| MethodCounters {
                started: grpc_started.with_label_values(&[kind, service, method]),
                handled: CODES
                    .iter()
                    .map(|code| grpc_handled.with_label_values(&[kind, service, method, code]))
                    .collect(),
                handling: grpc_handling.as_ref().map(|h| h.with_label_values(&[kind, service, method])),
            })
            .collect();
        let peer_rtt = reg(
            &r,
            HistogramVec::new(
                histogram(
                    "network",
                    "peer_round_trip_time_seconds",
                    "Round-Trip-Time histogram between peers",
                    exponential_buckets(0.0001, 2.0, 16).unwrap(),
                ),
                &["To"],
            )
            .unwrap(),
        );
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("the process collector registered once");
        Self {
            has_leader: gauge("server", "has_leader", "Whether or not a leader exists. 1 is existence, 0 is not."),
            is_leader: gauge("server", "is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise."),
            is_learner: gauge("server", "is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise."),
            leader_changes: counter("server", "leader_changes_seen_total", "The number of leader changes seen."),
            committed: gauge(
                "server",
                "proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            applied: gauge("server", "proposals_applied_total", "The total number of consensus proposals applied."),
            proposals_pending: gauge(
                "server",
                "proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter("server", "proposals_failed_total", "The total number of failed proposals seen."),
            quota: gauge("server", "quota_backend_bytes", "Current backend storage quota size in bytes."),
            db_total: gauge(
                "mvcc",
                "db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_in_use: gauge(
                "mvcc",
                "db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            keys: reg(
                &r,
                IntGauge::with_opts(opts("etcd_debugging", "mvcc", "keys_total", "Total number of keys.")).unwrap(),
            ),
            health_success: counter("server", "health_success", "The total number of successful health checks"),
            health_failures: counter("server", "health_failures", "The total number of failed health checks"),
            wal_fsync: reg(
                &r,
                Histogram::with_opts(histogram(
                    "disk",
                    "wal_fsync_duration_seconds",
                    "The latency distributions of fsync called by WAL.",
                    exponential_buckets(0.001, 2.0, 14).unwrap(),
                ))
                .unwrap(),
            ),
            backend_commit: reg(
                &r,
                Histogram::with_opts(histogram(
                    "disk",
                    "backend_commit_duration_seconds",
                    "The latency distributions of commit called by backend.",
                    exponential_buckets(0.001, 2.0, 14).unwrap(),
                ))
                .unwrap(),
            ),
            peer_rtt,
            peer_sent: labelled("network", "peer_sent_bytes_total", "The total number of bytes sent to peers.", "To"),
            peer_received: labelled(
                "network",
                "peer_received_bytes_total",
                "The total number of bytes received from peers.",
                "From",
            ),
            peer_sent_failures: labelled(
                "network",
                "peer_sent_failures_total",
                "The total number of send failures from peers.",
                "To",
            ),
            grpc_started,
            grpc_handled,
            grpc_handling,
            methods,
            counters,
            server_id,
            registry: r,
        }
    }

    /// Names the member (`etcd_server_id`), once its ID is known.
    pub fn set_member(&self, member_id: u64) {
        self.server_id.reset();
        self.server_id.with_label_values(&[&format!("{member_id:x}")]).set(1);
    }

    /// The text exposition (format 0.0.4) with the gauges set from `state`.
    pub fn render(&self, state: &State) -> String {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.has_leader.set(i64::from(state.has_leader));
        self.is_leader.set(i64::from(state.is_leader));
        self.is_learner.set(i64::from(state.is_learner));
        self.committed.set(as_i64(state.committed));
        self.applied.set(as_i64(state.applied));
        self.quota.set(as_i64(state.quota_bytes));
        self.db_total.set(as_i64(state.db_total_bytes));
        self.db_in_use.set(as_i64(state.db_in_use_bytes));
        self.keys.set(as_i64(state.keys));
        let mut out = Vec::new();
        // Encoding into memory fails only on a metric family without metrics, which the
        // registry never gathers.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Counts one finished call.
    fn handled(&self, call: &Call, code: usize) {
        let code = if code < CODES.len() { code } else { 2 };
        let took = || call.began.elapsed().as_secs_f64();
        match &call.target {
            Target::Known(i) => {
                let known = &self.counters[*i];
                known.handled[code].inc();
                if let Some(h) = &known.handling {
                    h.observe(took());
                }
            }
            Target::Other { kind, service, method } => {
                self.grpc_handled.with_label_values(&[*kind, service.as_str(), method.as_str(), CODES[code]]).inc();
                if let Some(h) = &self.grpc_handling {
                    h.with_label_values(&[*kind, service.as_str(), method.as_str()]).observe(took());
                }
            }
        }
    }

    /// Counts one call started.
    fn started(&self, call: &Call) {
        match &call.target {
            Target::Known(i) => self.counters[*i].started.inc(),
            Target::Other { kind, service, method } => {
                self.grpc_started.with_label_values(&[*kind, service.as_str(), method.as_str()]).inc()
            }
        }
    }

    /// The call a request starts, if it is gRPC (`/package.Service/Method`).
    fn call_of<B>(&self, request: &http::Request<B>) -> Option<Call> {
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            return None;
        }
        let path = request.uri().path();
        let target = match self.methods.get(path) {
            Some(i) => Target::Known(*i),
            None => {
                let (service, method) = path.strip_prefix('/')?.split_once('/')?;
                let kind = grpc_type(service, method);
                Target::Other { kind, service: service.to_string(), method: method.to_string() }
            }
        };
        Some(Call { target, began: Instant::now() })
    }
}

/// Times the engine's syncs into the WAL fsync histogram and its batch writes into the backend
/// commit one.
impl ferrocd_engine::DiskObserver for Metrics {
    fn synced(&self, took: Duration) {
        self.wal_fsync.observe(took.as_secs_f64());
    }

    fn written(&self, took: Duration) {
        self.backend_commit.observe(took.as_secs_f64());
    }
}

/// Counts the bytes exchanged with each peer (labelled with its ID in hex, as etcd's `To` and
/// `From`) and the round trips of the requests this member sends.
impl ferrocd_raft::PeerObserver for Metrics {
    fn sent(&self, to: u64, bytes: usize) {
        self.peer_sent.with_label_values(&[&format!("{to:x}")]).inc_by(bytes as u64);
    }

    fn received(&self, from: u64, bytes: usize) {
        self.peer_received.with_label_values(&[&format!("{from:x}")]).inc_by(bytes as u64);
    }

    fn round_trip(&self, to: u64, took: Duration) {
        self.peer_rtt.with_label_values(&[&format!("{to:x}")]).observe(took.as_secs_f64());
    }

    fn send_failed(&self, to: u64) {
        self.peer_sent_failures.with_label_values(&[&format!("{to:x}")]).inc();
    }
}

/// One gRPC call being served.
#[derive(Debug)]
struct Call {
    target: Target,
    began: Instant,
}

/// Which series a call counts in.
#[derive(Debug)]
enum Target {
    /// A method of [`METHODS`], by index.
    Known(usize),
    /// Another (its series made on first use).
    Other { kind: &'static str, service: String, method: String },
}

/// A tower layer counting every gRPC call a router serves (started, and handled with its
/// code when its status is sent: in the headers of a trailers-only answer, else in the
/// trailers; a stream dropped before it ends counts as `Canceled`). Other requests pass.
#[derive(Debug, Clone)]
pub struct GrpcLayer(pub Arc<Metrics>);

impl<S> tower_layer::Layer<S> for GrpcLayer {
    type Service = GrpcCount<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcCount { inner, metrics: Arc::clone(&self.0) }
    }
}

/// The service [`GrpcLayer`] makes.
#[derive(Debug, Clone)]
pub struct GrpcCount<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The status code a header map carries, if any.
fn code_in(headers: &http::HeaderMap) -> Option<usize> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for GrpcCount<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Body,
{
    type Response = http::Response<Counted<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.metrics.call_of(&request);
        if let Some(c) = &call {
            self.metrics.started(c);
        }
        let metrics = Arc::clone(&self.metrics);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let mut pending = call.map(|call| Pending { call, metrics });
            if let Some(code) = code_in(response.headers())
                && let Some(p) = pending.take()
            {
                p.metrics.handled(&p.call, code);
            }
            Ok(response.map(|inner| Counted { inner, pending }))
        })
    }
}

/// A call whose status is not sent yet.
#[derive(Debug)]
struct Pending {
    call: Call,
    metrics: Arc<Metrics>,
}

pin_project_lite::pin_project! {
    /// A response body that counts its call when the trailers carrying its status go out.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }

    impl<B> PinnedDrop for Counted<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its status went out: the client went away.
            if let Some(p) = this.project().pending.take() {
                p.metrics.handled(&p.call, 1);
            }
        }
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = code_in(trailers)
            && let Some(p) = this.pending.take()
        {
            p.metrics.handled(&p.call, code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_of_the_names_etcd_dashboards_use_is_there_from_the_start() {
        let metrics = Metrics::new(false);
        metrics.set_member(0x8e9e05c52164694d);
        let text = metrics.render(&State { has_leader: true, keys: 3, ..State::default() });
        for line in [
            "# TYPE etcd_server_has_leader gauge",
            "etcd_server_has_leader 1",
            "# TYPE etcd_server_leader_changes_seen_total counter",
            "# TYPE etcd_server_proposals_committed_total gauge",
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 0",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"} 0",
            "etcd_debugging_mvcc_keys_total 3",
            "etcd_server_id{server_id=\"8e9e05c52164694d\"} 1",
            "etcd_server_version{server_version=\"3.6.0\"} 1",
            "etcd_cluster_version{cluster_version=\"3.6\"} 1",
            "grpc_server_started_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0",
            "grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing");
        }
        assert!(!text.contains("grpc_server_handling_seconds"), "basic metrics have no latency histograms");
        let extensive = Metrics::new(true).render(&State::default());
        assert!(extensive.contains("# TYPE grpc_server_handling_seconds histogram"));
    }

    #[test]
    fn a_call_is_counted_once_with_its_code() {
        let metrics = Metrics::new(false);
        let call = Call { target: Target::Known(1), began: Instant::now() };
        metrics.handled(&call, 0);
        metrics.handled(&call, 16);
        let text = metrics.render(&State::default());
        let count = |code: &str| {
            let prefix = format!(
                "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}} "
            );
            text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_string)
        };
        assert_eq!(count("OK").as_deref(), Some("1"));
        assert_eq!(count("Unauthenticated").as_deref(), Some("1"));
        assert_eq!(count("Canceled").as_deref(), Some("0"));
    }
}
