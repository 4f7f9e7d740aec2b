//! The ferrocd server: etcd's v3 gRPC API over ferrocd's storage.
//!
//! This crate is the composition root. It is the one place that names concrete types
//! ([`RocksEngine`](ferrocd_engine_rocks::RocksEngine), the write path), maps every error to
//! etcd's gRPC status, and parses etcd's flags. Below it, no crate knows about gRPC transport.
//!
//! Request flow: a service checks the request as etcd does, then reads from the MVCC store
//! directly or proposes a write through the [`replica::Replica`], which answers once the
//! [`apply::Applier`] has applied it and it is durable and visible.

pub mod apply;
pub mod auth;
mod authority;
pub mod backup;
pub mod config;
pub mod context;
mod corrupt;
pub mod entry;
pub mod error;
mod gateway;
pub mod history;
mod http;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod peers;
pub mod replica;
pub mod services;
pub mod storage;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::{Engine, Timed};
use ferrocd_engine_rocks::RocksEngine;
use ferrocd_mvcc::{KvStore, Options};
use ferrocd_proto::etcdserverpb::auth_server::AuthServer;
use ferrocd_proto::etcdserverpb::cluster_server::ClusterServer;
use ferrocd_proto::etcdserverpb::kv_server::KvServer;
use ferrocd_proto::etcdserverpb::lease_server::LeaseServer;
use ferrocd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use ferrocd_proto::etcdserverpb::watch_server::WatchServer;
use ferrocd_proto::v3electionpb::election_server::ElectionServer;
use ferrocd_proto::v3lockpb::lock_server::LockServer;
use ferrocd_raft::grpc::Channels;
use ferrocd_raft::{Network, Node, RaftConfig, RaftNode};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;

use apply::{Applier, LeaseSetup, MemberAttrs};
pub use config::Config;
use config::{ListenAddr, Scheme};
use context::{Edge, Listener, RequestContext};
use replica::{LeaseCommand, Replica};
use services::auth::AuthService;
use services::cluster::ClusterService;
use services::kv::KvService;
use services::lease::LeaseService;
use services::maintenance::MaintenanceService;
use services::recipes::{ElectionService, LockService, Loopback};
use services::watch::WatchService;
use services::{Shared, SizeCache};

/// gRPC's per-message overhead etcd allows on top of `--max-request-bytes`.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

type Listeners = JoinSet<Result<(), tonic::transport::Error>>;

/// How a member's Raft reaches the other members.
#[derive(Debug, Clone)]
pub enum Transport {
    /// gRPC to their peer URLs (the binary's).
    Grpc,
    /// The in-memory router of `ferrocd-raft`, with its partitions and delays: every member of
    /// the cluster in this process, for tests. Requests forwarded to the leader still go over
    /// the peer listeners.
    Mem(ferrocd_raft::mem::MemRouter),
}

/// A started server, on RocksDB (the binary's) or any other [`Engine`].
#[derive(Debug)]
pub struct Server<E: Engine = Timed<RocksEngine>> {
    client_addrs: Vec<SocketAddr>,
    peer_addrs: Vec<SocketAddr>,
    member_id: u64,
    stop: watch::Sender<bool>,
    listeners: Listeners,
    kv: Arc<KvStore<E>>,
    node: Arc<RaftNode<Applier<E>>>,
    replica: Replica<E>,
}

/// Binds `addrs` and serves `router` on each until `stopped` turns true: over TLS with `tls`
/// where the URL says `https`.
async fn serve(
    addrs: Vec<ListenAddr>,
    router: &tonic::transport::server::Router,
    tls: Option<&Arc<rustls::ServerConfig>>,
    stopped: &watch::Receiver<bool>,
    listeners: &mut Listeners,
) -> anyhow::Result<Vec<SocketAddr>> {
    let mut bound = Vec::new();
    for ListenAddr { addr, scheme } in addrs {
        let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        bound.push(listener.local_addr()?);
        let accepted = TcpListenerStream::new(listener).map(|conn| {
            conn.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        match scheme {
            Scheme::Http => {
                let incoming = accepted.map(|conn| conn.map(authority::AuthorityFix::new));
                listeners.spawn(router.clone().serve_with_incoming_shutdown(incoming, shutdown));
            }
            Scheme::Https => {
                let config = tls.ok_or_else(|| anyhow::anyhow!("{addr} is https but no certificate is set up"))?;
                let accepted = accepted.map(|conn| {
                    conn.map(|stream| {
                        let remote = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                        (stream, remote)
                    })
                });
                let incoming = ferrocd_tls::accept(accepted, Arc::clone(config))
                    .map(|conn| conn.map(authority::AuthorityFix::new));
                listeners.spawn(router.clone().serve_with_incoming_shutdown(incoming, shutdown));
            }
        }
    }
    Ok(bound)
}

/// The client services (KV, Watch, Lease, Cluster, Maintenance, Auth, Lock, Election and gRPC
/// health), every request through `edge`.
fn client_services<E: Engine>(
    shared: &Arc<Shared<E>>,
    edge: &Edge,
    loopback: &Loopback,
    stopped: &watch::Receiver<bool>,
    max_message: usize,
    health_service: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> tonic::service::Routes {
    tonic::service::Routes::new(health_service)
        .add_service(InterceptedService::new(
            KvServer::new(KvService(Arc::clone(shared)))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(usize::MAX),
            edge.clone(),
        ))
        .add_service(InterceptedService::new(ClusterServer::new(ClusterService(Arc::clone(shared))), edge.clone()))
        .add_service(InterceptedService::new(
            MaintenanceServer::new(MaintenanceService(Arc::clone(shared)))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(usize::MAX),
            edge.clone(),
        ))
        .add_service(InterceptedService::new(LeaseServer::new(LeaseService::new(Arc::clone(shared))), edge.clone()))
        .add_service(InterceptedService::new(AuthServer::new(AuthService(Arc::clone(shared))), edge.clone()))
        .add_service(InterceptedService::new(LockServer::new(LockService::new(loopback.clone())), edge.clone()))
        .add_service(InterceptedService::new(ElectionServer::new(ElectionService::new(loopback.clone())), edge.clone()))
        .add_service(InterceptedService::new(
            WatchServer::new(WatchService::new(Arc::clone(shared), stopped.clone(), max_message))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(usize::MAX),
            edge.clone(),
        ))
}

impl Server {
    /// Opens the data directory, joins (or forms) the cluster, publishes this member's
    /// attributes through Raft and then serves clients on every listen URL, as etcd does.
    ///
    /// # Errors
    /// An invalid configuration, a data directory that cannot be opened, an address in use.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        config.validate()?;
        let metrics = Arc::new(Metrics::new(config.extensive_metrics()));
        let engine = Timed::new(storage::open_engine(&config.data_dir())?, Arc::clone(&metrics) as _);
        Self::start_with(config, Arc::new(engine), Transport::Grpc, metrics).await
    }
}

impl<E: Engine> Server<E> {
    /// As [`Server::start`], on `engine` (opened with [`storage::buckets`]) and with Raft over
    /// `transport`; Raft's snapshots still go to the data directory.
    ///
    /// # Errors
    /// An invalid configuration, an address in use, storage failures.
    pub async fn start_on(config: &Config, engine: Arc<E>, transport: Transport) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new(config.extensive_metrics()));
        Self::start_with(config, engine, transport, metrics).await
    }

    /// As [`Server::start_on`], counting into `metrics` (which the engine may time already).
    async fn start_with(
        config: &Config,
        engine: Arc<E>,
        transport: Transport,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let data_dir = config.data_dir();
        let tls = tls::Tls::load(config)?;
        // Connections to the other members: Raft's, forwarding to the leader, joining.
        let channels = match &tls.peer_client {
            Some(connector) => Channels::tls(connector.clone()),
            None => Channels::default(),
        };
        let kv = Arc::new(KvStore::open(Arc::clone(&engine), Options { max_txn_ops: config.max_txn_ops as usize })?);
        let token = &config.initial_cluster_token;
        let initial: BTreeMap<u64, Node> = config
            .initial_members()?
            .into_iter()
            .map(|(_, urls)| (ids::member_id(&urls, token), Node { urls }))
            .collect();
        let fresh_member = ids::member_id(&config.advertise_peer_urls(), token);
        let fresh_cluster = ids::cluster_id(&initial.keys().copied().collect::<Vec<_>>());
        let fresh = if config.initial_cluster_state == "existing" && storage::stored_identity(&*engine)?.is_none() {
            join_identity(config, &channels).await?
        } else {
            (fresh_member, fresh_cluster)
        };
        // etcd's initial corruption check runs only on a member that already has data.
        let had_data = storage::stored_identity(&*engine)?.is_some();
        let (member_id, cluster_id) = storage::identity(&*engine, fresh)?;
        metrics.set_member(member_id);
        let election_timeout = Duration::from_millis(config.election_timeout);
        let lease_setup = LeaseSetup {
            options: ferrocd_lease::Options {
                min_ttl_secs: ferrocd_lease::Options::min_ttl_for_election_timeout(election_timeout),
                checkpoint_interval: config.enable_lease_checkpoint.then_some(config.lease_checkpoint_interval),
                ..ferrocd_lease::Options::default()
            },
            extend: election_timeout,
        };
        let auth = Arc::new(
            auth::Auth::new(
                Applier::load_auth(&kv)?,
                &config.auth_token,
                Duration::from_secs(config.auth_token_ttl),
                config.bcrypt_cost,
            )
            .map_err(|e| anyhow::anyhow!("--auth-token: {e}"))?,
        );
        let machine = Arc::new(Applier::open(
            Arc::clone(&kv),
            cluster_id,
            ferrocd_watch::Options::default(),
            lease_setup,
            Arc::clone(&auth),
        )?);
        let network = match &transport {
            Transport::Grpc => Network::grpc_on(channels.clone()).observed(Arc::clone(&metrics) as _),
            Transport::Mem(router) => Network::mem(router, member_id),
        };
        let mut raft_config = RaftConfig::new(data_dir.join("member").join("snap"));
        raft_config.heartbeat_interval = Duration::from_millis(config.heartbeat_interval);
        raft_config.election_timeout = Duration::from_millis(config.election_timeout);
        raft_config.snapshot_count = config.snapshot_count;
        raft_config.request_timeout = RaftConfig::etcd_request_timeout(raft_config.election_timeout);
        let node = Arc::new(
            RaftNode::start(member_id, &raft_config, Arc::clone(&engine), Arc::clone(&machine), network).await?,
        );
        let request_timeout = raft_config.request_timeout;
        let replica = Replica::new(Arc::clone(&node), machine, raft_config.election_timeout, Arc::clone(&metrics));
        let shared = Arc::new(Shared {
            kv: Arc::clone(&kv),
            replica: replica.clone(),
            peers: peers::Peers::new(channels),
            member_id,
            cluster_token: token.clone(),
            request_timeout,
            max_request_bytes: config.max_request_bytes as usize,
            max_txn_ops: config.max_txn_ops as usize,
            strict_reconfig_check: config.strict_reconfig_check,
            quota_bytes: config.quota_bytes(),
            db_size: SizeCache::default(),
            auth: Arc::clone(&auth),
            metrics: Arc::clone(&metrics),
            data_dir: data_dir.clone(),
        });
        let max_message = config.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
        let kv_service = KvServer::new(KvService(Arc::clone(&shared)))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(usize::MAX);
        let cluster_service = ClusterServer::new(ClusterService(Arc::clone(&shared)));
        let lease_service = LeaseServer::new(LeaseService::new(Arc::clone(&shared)));
        let auth_service = AuthServer::new(AuthService(Arc::clone(&shared)));
        // Every request gets its context at the edge of the listener it came in on.
        let peer_edge = Edge::new(Listener::Peer, request_timeout, None);
        let client_edge = Edge::new(Listener::Client, request_timeout, Some(Arc::clone(&auth)));
        let (stop, stopped) = watch::channel(false);
        let mut listeners = JoinSet::new();
        // Peers: Raft's transport, and the services followers forward requests to.
        let peer_router = tonic::transport::Server::builder()
            // A member cut off for a while resets every heartbeat it gave up on; after the heal
            // they arrive at once. h2's rapid-reset guard (20 by default) would then close the
            // connection of a member that is only catching up; peers are not anonymous clients.
            .http2_max_pending_accept_reset_streams(Some(10_000))
            .add_service(node.peer_service())
            .add_service(InterceptedService::new(kv_service.clone(), peer_edge.clone()))
            .add_service(InterceptedService::new(cluster_service.clone(), peer_edge.clone()))
            .add_service(InterceptedService::new(lease_service.clone(), peer_edge.clone()))
            .add_service(InterceptedService::new(auth_service.clone(), peer_edge.clone()))
            // Alarms raised or cleared through a follower.
            .add_service(InterceptedService::new(
                MaintenanceServer::new(MaintenanceService(Arc::clone(&shared))),
                peer_edge.clone(),
            ));
        let peer_addrs =
            serve(config.peer_listen_addrs()?, &peer_router, tls.peer.as_ref(), &stopped, &mut listeners).await?;
        let restored = storage::restored_members(&*engine)?;
        if let Some(members) = &restored {
            let voters = members.iter().map(|(id, urls)| (*id, Node { urls: urls.clone() })).collect();
            node.bootstrap(voters).await?;
        } else if config.initial_cluster_state == "new" {
            node.bootstrap(initial).await?;
        }
        publish(&replica, member_id, config, cluster_id, request_timeout).await?;
        if restored.is_some() {
            // The restored state never came through the log: members that join later must
            // get it as a snapshot, not replay the log from its start.
            match node.purge_applied(request_timeout * 4).await {
                Ok(()) => storage::restore_done(&*engine)?,
                Err(e) => {
                    tracing::warn!(error = %e, "could not purge the log of a restored member yet; will retry at the next start")
                }
            }
        }
        if config.initial_corrupt_check() && had_data {
            corrupt::initial_check(&shared).await?;
        }
        let periodic = (!config.corrupt_check_time.is_zero()).then_some(config.corrupt_check_time);
        let compaction = config.compact_hash_check().then_some(config.compact_hash_check_time);
        if periodic.is_some() || compaction.is_some() {
            tokio::spawn(corrupt::run(Arc::clone(&shared), periodic, compaction, stopped.clone()));
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let loopback = Loopback::default();
        let services =
            |edge: &Edge| client_services(&shared, edge, &loopback, &stopped, max_message, health_service.clone());
        // The Lock and Election recipes' own connection, in process, as the caller.
        let loopback_router = tonic::transport::Server::builder().add_routes(services(&client_edge.clone().loopback()));
        listeners.spawn(loopback.serve(loopback_router, stopped.clone()));
        // HTTP/1.1 beside gRPC on the client port (etcd's cmux): the JSON gateway, the plain
        // endpoints, and a 404 for anything else that is not gRPC.
        let client_routes = services(&client_edge)
            .into_axum_router()
            .merge(gateway::routes(&loopback))
            .merge(http::routes(Arc::clone(&shared)));
        let client_routes = client_routes.fallback(http::fallback).layer(metrics::GrpcLayer(Arc::clone(&metrics)));
        let client_router = tonic::transport::Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(2 * 60 * 60)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_routes(tonic::service::Routes::from(client_routes));
        let client_tls = tls.client.as_ref();
        let client_addrs =
            serve(config.client_listen_addrs()?, &client_router, client_tls, &stopped, &mut listeners).await?;
        // `--listen-metrics-urls`: the plain endpoints alone, over HTTP/1.1.
        let metrics_router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(http::routes(Arc::clone(&shared)).fallback(http::fallback)));
        serve(config.metrics_listen_addrs()?, &metrics_router, client_tls, &stopped, &mut listeners).await?;
        tokio::spawn(count_leader_changes(replica.clone(), Arc::clone(&metrics), stopped.clone()));
        tokio::spawn(progress_ticks(replica.hub().clone(), config.watch_progress_notify_interval, stopped.clone()));
        tokio::spawn(lease_ticks(Arc::clone(&shared), stopped.clone()));
        tracing::info!(
            name = %config.name,
            data_dir = %data_dir.display(),
            member_id = %format!("{member_id:x}"),
            cluster_id = %format!("{:x}", replica.cluster_id()),
            revision = kv.current_revision(),
            "ready to serve client requests on {client_addrs:?}, peers on {peer_addrs:?}"
        );
        Ok(Self { client_addrs, peer_addrs, member_id, stop, listeners, kv, node, replica })
    }

    /// The addresses peers reach this member on (with the ports actually bound).
    pub fn peer_addrs(&self) -> &[SocketAddr] {
        &self.peer_addrs
    }

    /// The addresses clients can reach the server on (with the ports actually bound).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.replica.cluster_id()
    }

    /// Waits until a listener fails, until this member's Raft stops on a fatal error (its
    /// storage failed: the member must stop serving, as etcd exits), or until this member learns
    /// it was removed from the cluster (then, as etcd does, it should stop: call
    /// [`Self::shutdown`]).
    ///
    /// # Errors
    /// The failure of a listener or of Raft.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let node = Arc::clone(&self.node);
        let listeners = &mut self.listeners;
        tokio::select! {
            why = node.failed() => {
                tracing::error!(
                    member_id = %format!("{:x}", self.member_id),
                    error = %why,
                    "raft stopped on a fatal error (storage failure?); this member stops serving"
                );
                Err(anyhow::anyhow!("raft stopped on a fatal error: {why}"))
            }
            () = node.removed() => {
                tracing::warn!(
                    member_id = %format!("{:x}", self.member_id),
                    "the member has been permanently removed from the cluster; \
                     the data-dir used by this member must be removed"
                );
                Ok(())
            }
            result = async {
                while let Some(done) = listeners.join_next().await {
                    done??;
                }
                Ok(())
            } => result,
        }
    }

    /// Stops accepting requests, lets the ones in flight finish (for at most
    /// [`SHUTDOWN_GRACE`]: a peer's replication stream or a client's watch never finishes by
    /// itself, so what is still open then is closed, as etcd's stop does), and flushes the
    /// engine.
    ///
    /// # Errors
    /// A listener or the final sync failed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let listeners = &mut self.listeners;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(done) = listeners.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })
        .await;
        match drained {
            Ok(result) => result?,
            Err(_) => {
                tracing::info!(grace = ?SHUTDOWN_GRACE, "closing the connections still open");
                self.listeners.abort_all();
                while self.listeners.join_next().await.is_some() {}
            }
        }
        self.node.shutdown().await;
        self.kv.sync()?;
        tracing::info!("stopped serving");
        Ok(())
    }
}

/// How long a stopping member waits for its connections to finish what they are doing.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often the leader looks for expired leases (etcd: every 500 ms).
const LEASE_TICK: Duration = Duration::from_millis(500);
/// Leases revoked per Raft entry, and the most taken per tick.
const EXPIRE_PER_ENTRY: usize = 1000;
const EXPIRE_PER_TICK: usize = 50_000;

/// The leader's lease duties, every [`LEASE_TICK`] until the server stops: keep the lease
/// table's role in step with leadership, propose the revokes of expired leases and, when
/// enabled, lease checkpoints.
///
/// Expired leases are revoked many to an entry, one entry at a time: other writes interleave
/// with the entries (a mass expiry delays them by one entry's apply at most, not by the whole
/// backlog), and the next leases are taken only once the last batch is through.
async fn lease_ticks<E: Engine>(shared: Arc<Shared<E>>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(LEASE_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut revoking: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        shared.primary_lessor();
        let busy = revoking.as_ref().is_some_and(|task| !task.is_finished());
        let (expired, checkpoints) = {
            let mut lessor = shared.replica.lessor().lock();
            if !lessor.is_primary() {
                continue;
            }
            let expired = if busy { Vec::new() } else { lessor.expired(EXPIRE_PER_TICK) };
            (expired, lessor.checkpoints(EXPIRE_PER_ENTRY))
        };
        if !expired.is_empty() {
            let (replica, timeout) = (shared.replica.clone(), shared.request_timeout);
            revoking = Some(tokio::spawn(async move {
                for chunk in expired.chunks(EXPIRE_PER_ENTRY) {
                    // A lost proposal is retried: the lessor reports a lease still there
                    // again a few seconds later.
                    let ctx = RequestContext::internal(timeout);
                    if let Err(e) = replica.propose_lease(&ctx, LeaseCommand::Expire(chunk.to_vec())).await {
                        tracing::debug!(error = %e, "expired leases not revoked yet; retried later");
                        return;
                    }
                }
            }));
        }
        if !checkpoints.is_empty() {
            let (replica, ctx) = (shared.replica.clone(), RequestContext::internal(shared.request_timeout));
            tokio::spawn(async move {
                if let Err(e) = replica.propose_lease(&ctx, LeaseCommand::Checkpoint(checkpoints)).await {
                    tracing::debug!(error = %e, "lease checkpoint not recorded");
                }
            });
        }
    }
}

/// Sends watchers that asked for them their progress notifications, every `interval` until
/// the server stops.
async fn progress_ticks<E: Engine>(hub: history::Hub<E>, interval: Duration, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => hub.progress_tick(),
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Publishes this member's name and client URLs through Raft (etcd's publish), retrying until
/// the cluster has a leader and commits it; members added later learn them from the log. Every
/// start publishes, changed or not, and returns only once this member has applied everything
/// the leader had committed by then: like etcd, a restarted member serves clients (its
/// serializable reads above all) only once it has caught up to at least its own publish.
async fn publish<E: Engine>(
    replica: &Replica<E>,
    member_id: u64,
    config: &Config,
    cluster_id: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let attrs = MemberAttrs {
        id: member_id,
        name: config.name.clone(),
        client_urls: config.advertise_client_urls(),
        cluster_id,
    };
    let mut attempt = 0u32;
    loop {
        let published = match replica.publish(attrs.clone(), timeout).await {
            // Applied on the leader; a read barrier then waits until this member has applied
            // everything committed, the publish included.
            Ok(()) => replica.read_barrier().await,
            Err(e) => Err(e),
        };
        match published {
            Ok(()) if replica.member_attrs()?.get(&member_id) == Some(&attrs) => return Ok(()),
            // Applied, yet not what was published (a snapshot install raced it): again.
            Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                attempt += 1;
                if attempt % 50 == 1 {
                    tracing::warn!(error = %e, "cannot publish this member's attributes yet; retrying");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A member joining a running cluster (`--initial-cluster-state existing`) takes the ID the
/// cluster gave it in MemberAdd: it asks the other members listed in `--initial-cluster` for
/// their member list and finds itself by its peer URLs, as etcd does.
async fn join_identity(config: &Config, channels: &Channels) -> anyhow::Result<(u64, u64)> {
    use ferrocd_proto::etcdserverpb::MemberListRequest;
    use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
    let mut mine = config.advertise_peer_urls();
    mine.sort();
    let peers: Vec<String> = config
        .initial_members()?
        .into_iter()
        .filter(|(name, _)| *name != config.name)
        .flat_map(|(_, urls)| urls)
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut listed_elsewhere = false;
    loop {
        for url in &peers {
            let Ok(channel) = channels.channel(std::slice::from_ref(url)) else { continue };
            // Linearizable when the cluster can confirm it; serializable when it cannot (a
            // one-member cluster adding its second voter needs this member to commit anything).
            let mut client = ClusterClient::new(channel);
            let linearizable = tokio::time::timeout(
                Duration::from_secs(2),
                client.member_list(MemberListRequest { linearizable: true }),
            );
            let resp = match linearizable.await {
                Ok(Ok(resp)) => resp,
                _ => match client.member_list(MemberListRequest { linearizable: false }).await {
                    Ok(resp) => resp,
                    Err(_) => continue,
                },
            };
            let resp = resp.into_inner();
            let cluster_id = resp.header.map_or(0, |h| h.cluster_id);
            for member in resp.members {
                let mut urls = member.peer_ur_ls.clone();
                urls.sort();
                if urls == mine {
                    return Ok((member.id, cluster_id));
                }
            }
            listed_elsewhere = true;
        }
        if tokio::time::Instant::now() >= deadline {
            if listed_elsewhere {
                anyhow::bail!(
                    "this member's peer URLs {mine:?} are not in the cluster's member list; add it with MemberAdd first"
                );
            }
            anyhow::bail!("cannot reach any member of the cluster at {peers:?} to join it");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts every new leader this member sees (the first one after start included), as etcd's
/// `leader_changes_seen_total` does, until the server stops.
async fn count_leader_changes<E: Engine>(
    replica: Replica<E>,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut seen: Option<u64> = None;
    loop {
        let changed = replica.wait_until(Duration::from_secs(3600), |s| s.leader.is_some() && s.leader != seen);
        tokio::select! {
            status = changed => {
                if let Some(status) = status {
                    seen = status.leader;
                    metrics.leader_changes.inc();
                }
            }
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
