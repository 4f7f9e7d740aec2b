//! The transports between members, behind openraft's network traits: the application picks one
//! with a [`Network`] value and never sees openraft's messages.

use std::sync::Arc;

use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver as _;
use openraft::error::{ClientWriteError, LinearizableReadError, RPCError, RaftError, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};

use crate::grpc::{self, Channels, RpcError};
use crate::mem::{MemRouter, Traffic};
use crate::snapshot::SnapshotDir;
use crate::state_machine::StateMachine;
use crate::types::{TypeConfig, Vote};
use crate::{Apply, Node, NodeId};

pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotDir>;
type BoxFuture<T> = futures::future::BoxFuture<'static, Result<T, String>>;
/// Requests of a pipelined append stream.
pub(crate) type AppendRequests = futures::stream::BoxStream<'static, AppendEntriesRequest<TypeConfig>>;
/// Answers of a pipelined append stream, in the order of the requests.
pub(crate) type AppendAnswers = futures::stream::BoxStream<'static, Result<StreamAppendResult<TypeConfig>, String>>;

/// How this member reaches the others.
#[derive(Debug, Clone)]
pub struct Network {
    pub(crate) kind: Kind,
    pub(crate) links: Links,
}

/// Told what travels over the links to peers (a server makes its peer metrics of it).
pub trait PeerObserver: Send + Sync + std::fmt::Debug {
    /// `bytes` of messages went to peer `to`.
    fn sent(&self, to: NodeId, bytes: usize);
    /// `bytes` of messages came from peer `from` (answers included).
    fn received(&self, from: NodeId, bytes: usize);
    /// A request to `to` was answered `took` after it was sent.
    fn round_trip(&self, to: NodeId, took: std::time::Duration);
    /// A message to `to` could not be sent (no connection, or it broke).
    fn send_failed(&self, to: NodeId);
}

/// Since when the connection to each peer has been up, as this member's requests found it:
/// answered (even with an error) means up, a connection that could not be made or broke means
/// down, and a request that went unanswered says nothing (a paused peer keeps its
/// connections). etcd tells a request that timed out "possibly due to connection lost" from
/// this. And who is told about the traffic.
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    up: Arc<parking_lot::Mutex<std::collections::HashMap<NodeId, Option<std::time::Instant>>>>,
    observer: Option<Arc<dyn PeerObserver>>,
}

/// One peer's traffic, told to the observer (if any).
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    observer: Option<Arc<dyn PeerObserver>>,
    peer: NodeId,
}

impl Meter {
    pub(crate) fn sent(&self, bytes: usize) {
        if let Some(o) = &self.observer {
            o.sent(self.peer, bytes);
        }
    }

    pub(crate) fn received(&self, bytes: usize) {
        if let Some(o) = &self.observer {
            o.received(self.peer, bytes);
        }
    }

    pub(crate) fn round_trip(&self, took: std::time::Duration) {
        if let Some(o) = &self.observer {
            o.round_trip(self.peer, took);
        }
    }

    pub(crate) fn failed(&self) {
        if let Some(o) = &self.observer {
            o.send_failed(self.peer);
        }
    }

    /// The same observer, for another peer.
    pub(crate) fn of(&self, peer: NodeId) -> Self {
        Self { observer: self.observer.clone(), peer }
    }
}

impl Links {
    /// The meter of the traffic with `peer`.
    pub(crate) fn meter(&self, peer: NodeId) -> Meter {
        Meter { observer: self.observer.clone(), peer }
    }

    fn record<T>(&self, to: NodeId, result: &Result<T, RpcError>) {
        let mut links = self.up.lock();
        match result {
            Ok(_) | Err(RpcError::Remote(_)) => {
                links.entry(to).or_insert(None).get_or_insert_with(std::time::Instant::now);
            }
            Err(RpcError::Transport(_)) => {
                links.insert(to, None);
            }
            Err(RpcError::Timeout(_)) => {}
        }
    }

    /// Whether the connection to `to` has stayed up since `since`, as far as this member saw:
    /// not if it was found down, or came up again after `since`; a peer never contacted counts
    /// as connected (no lost connection was seen).
    pub(crate) fn connected_since(&self, to: NodeId, since: std::time::Instant) -> bool {
        match self.up.lock().get(&to) {
            None => true,
            Some(None) => false,
            Some(Some(up)) => *up <= since,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// In-process, through a router tests can partition and slow down.
    Mem { router: MemRouter, from: NodeId },
    /// gRPC to each member's first peer URL.
    Grpc(Channels),
}

impl Network {
    /// In-process messages through `router`, sent as member `from`.
    pub fn mem(router: &MemRouter, from: NodeId) -> Self {
        Self { kind: Kind::Mem { router: router.clone(), from }, links: Links::default() }
    }

    /// gRPC to the members' peer URLs (serve [`crate::RaftNode::peer_service`] on this
    /// member's).
    pub fn grpc() -> Self {
        Self::grpc_on(Channels::default())
    }

    /// gRPC over `channels` (e.g. [`Channels::tls`], shared with the application's own peer
    /// calls).
    pub fn grpc_on(channels: Channels) -> Self {
        Self { kind: Kind::Grpc(channels), links: Links::default() }
    }

    /// This network, telling `observer` what travels to and from peers over gRPC.
    #[must_use]
    pub fn observed(mut self, observer: Arc<dyn PeerObserver>) -> Self {
        self.links.observer = Some(observer);
        self
    }
}

/// A member's receiving side, with the application's type erased.
pub(crate) trait Inbound: Send + Sync + 'static {
    fn append(&self, req: AppendEntriesRequest<TypeConfig>) -> BoxFuture<AppendEntriesResponse<TypeConfig>>;
    /// Appends a stream of requests, pipelined: answers in order, ending after a refusal.
    fn stream_append(&self, requests: AppendRequests) -> AppendAnswers;
    fn vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>>;
    fn pre_vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>>;
    fn snapshot(&self, vote: Vote, snapshot: Snapshot) -> BoxFuture<SnapshotResponse<TypeConfig>>;
    /// As the leader: confirms leadership with a quorum and answers the index a read must
    /// wait for (ReadIndex).
    fn read_index(&self) -> BoxFuture<ReadIndex>;
    fn transfer_leader(&self, req: TransferLeaderRequest<TypeConfig>) -> BoxFuture<TransferLeaderResponse<TypeConfig>>;
    /// As the leader: proposes `command` and answers once it is applied here.
    fn submit(&self, command: Vec<u8>) -> BoxFuture<Submitted>;
    /// As the leader: whether member `id` is still in the cluster.
    fn is_member(&self, id: NodeId) -> BoxFuture<MemberCheck>;
}

/// The answer to an IsMember request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum MemberCheck {
    /// In the leader's membership (or a change to it is not committed yet).
    Member,
    /// A committed membership of the leader's leaves it out.
    Removed,
    /// The member asked does not lead with a quorum.
    NotLeader,
}

/// The answer to a Submit request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Submitted {
    Applied,
    NotLeader(Option<(NodeId, Node)>),
    /// The outcome is unknown (a leader change discarded or may have discarded it).
    Unknown(String),
}

/// The answer to a ReadIndex request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum ReadIndex {
    /// Apply up to this index, then read.
    Ready(u64),
    /// The member asked is not the leader (it names the one it knows).
    NotLeader(Option<(NodeId, Node)>),
    /// The leader could not confirm its leadership with a quorum.
    NoQuorum,
}

impl<A: Apply> Inbound for openraft::Raft<TypeConfig, StateMachine<A>> {
    fn append(&self, req: AppendEntriesRequest<TypeConfig>) -> BoxFuture<AppendEntriesResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.append_entries(req).await.map_err(|e| e.to_string()) })
    }

    fn stream_append(&self, requests: AppendRequests) -> AppendAnswers {
        use futures::StreamExt as _;
        openraft::Raft::stream_append(self, requests).map(|answer| answer.map_err(|e| e.to_string())).boxed()
    }

    fn vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.vote(req).await.map_err(|e| e.to_string()) })
    }

    fn pre_vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.pre_vote(req).await.map_err(|e| e.to_string()) })
    }

    fn snapshot(&self, vote: Vote, snapshot: Snapshot) -> BoxFuture<SnapshotResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string()) })
    }

    fn transfer_leader(&self, req: TransferLeaderRequest<TypeConfig>) -> BoxFuture<TransferLeaderResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.handle_transfer_leader(req).await.map_err(|e| e.to_string()) })
    }

    fn submit(&self, command: Vec<u8>) -> BoxFuture<Submitted> {
        let raft = self.clone();
        Box::pin(async move {
            match raft.client_write(crate::types::Command::untagged(command)).await {
                Ok(_) => Ok(Submitted::Applied),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Ok(Submitted::NotLeader(f.leader_id.zip(f.leader_node)))
                }
                Err(e) => Ok(Submitted::Unknown(e.to_string())),
            }
        })
    }

    fn is_member(&self, id: NodeId) -> BoxFuture<MemberCheck> {
        let raft = self.clone();
        Box::pin(async move {
            // Leadership confirmed by a quorum first: a deposed leader's view is no answer.
            match raft.get_read_log_id(ReadPolicy::ReadIndex).await {
                Ok(_) => {}
                Err(RaftError::APIError(_)) => return Ok(MemberCheck::NotLeader),
                Err(RaftError::Fatal(f)) => return Err(f.to_string()),
            }
            let metrics = raft.metrics().borrow_watched().clone();
            let membership = &metrics.membership_config;
            let committed = metrics.local_committed.as_ref().map_or(0, |c| c.index);
            let changed_at = membership.log_id().as_ref().map_or(0, |l| l.index);
            Ok(if membership.membership().get_node(&id).is_none() && changed_at <= committed {
                MemberCheck::Removed
            } else {
                MemberCheck::Member
            })
        })
    }

    fn read_index(&self) -> BoxFuture<ReadIndex> {
        let raft = self.clone();
        Box::pin(async move {
            match raft.get_read_log_id(ReadPolicy::ReadIndex).await {
                Ok((read, _)) => Ok(ReadIndex::Ready(read.index())),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                    Ok(ReadIndex::NotLeader(f.leader_id.zip(f.leader_node)))
                }
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => Ok(ReadIndex::NoQuorum),
                Err(RaftError::Fatal(f)) => Err(f.to_string()),
            }
        })
    }
}

/// When this member last heard from a leader (an append it accepted), so that a member cut
/// off from its leader stops naming it once an election timeout has passed, as etcd's members
/// do (openraft keeps the last leader's vote while pre-votes fail).
#[derive(Debug)]
pub(crate) struct Contact {
    born: std::time::Instant,
    /// Milliseconds after `born`, plus one (0: never).
    last: std::sync::atomic::AtomicU64,
}

impl Contact {
    pub(crate) fn new() -> Self {
        Self { born: std::time::Instant::now(), last: std::sync::atomic::AtomicU64::new(0) }
    }

    fn touch(&self) {
        let now = self.born.elapsed().as_millis() as u64 + 1;
        self.last.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a leader was heard from within `window`.
    pub(crate) fn within(&self, window: std::time::Duration) -> bool {
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        last != 0 && self.born.elapsed().as_millis() as u64 + 1 - last <= window.as_millis() as u64
    }
}

/// An [`Inbound`] that records each append it accepts in a [`Contact`].
pub(crate) struct Tracked<I> {
    pub(crate) inner: I,
    pub(crate) contact: Arc<Contact>,
}

impl<I: Inbound> Inbound for Tracked<I> {
    fn append(&self, req: AppendEntriesRequest<TypeConfig>) -> BoxFuture<AppendEntriesResponse<TypeConfig>> {
        let answer = self.inner.append(req);
        let contact = Arc::clone(&self.contact);
        Box::pin(async move {
            let resp = answer.await;
            if matches!(&resp, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                contact.touch();
            }
            resp
        })
    }

    fn stream_append(&self, requests: AppendRequests) -> AppendAnswers {
        use futures::StreamExt as _;
        let contact = Arc::clone(&self.contact);
        self.inner
            .stream_append(requests)
            .inspect(move |answer| {
                if matches!(answer, Ok(Ok(_) | Err(StreamAppendError::Conflict(_)))) {
                    contact.touch();
                }
            })
            .boxed()
    }

    fn vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>> {
        self.inner.vote(req)
    }

    fn pre_vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>> {
        self.inner.pre_vote(req)
    }

    fn snapshot(&self, vote: Vote, snapshot: Snapshot) -> BoxFuture<SnapshotResponse<TypeConfig>> {
        let answer = self.inner.snapshot(vote, snapshot);
        let contact = Arc::clone(&self.contact);
        Box::pin(async move {
            let resp = answer.await;
            if resp.is_ok() {
                contact.touch();
            }
            resp
        })
    }

    fn read_index(&self) -> BoxFuture<ReadIndex> {
        self.inner.read_index()
    }

    fn transfer_leader(&self, req: TransferLeaderRequest<TypeConfig>) -> BoxFuture<TransferLeaderResponse<TypeConfig>> {
        self.inner.transfer_leader(req)
    }

    fn submit(&self, command: Vec<u8>) -> BoxFuture<Submitted> {
        self.inner.submit(command)
    }

    fn is_member(&self, id: NodeId) -> BoxFuture<MemberCheck> {
        self.inner.is_member(id)
    }
}

/// A connection to one peer.
pub(crate) struct Client {
    kind: Kind,
    links: Links,
    to: NodeId,
    node: Node,
    /// Replication streams that failed to open in a row (see [`open_backoff`]).
    failed_opens: u32,
}

/// How long a replication stream that failed to open waits before reporting it, after
/// `failed_opens` such failures in a row: a heartbeat interval, doubling, at most five.
/// openraft backs off only while it polls the request stream, which a stream whose connection
/// is refused never does; without this a peer that is down or not started yet (a learner just
/// added) is retried thousands of times a second, each logged.
fn open_backoff(heartbeat: std::time::Duration, failed_opens: u32) -> std::time::Duration {
    (heartbeat * 2u32.saturating_pow(failed_opens.saturating_sub(1))).min(heartbeat * 5)
}

/// A vote or pre-vote request.
enum Call {
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
}

impl Client {
    async fn inbound(&self, from: NodeId, router: &MemRouter, traffic: Traffic) -> Result<Arc<dyn Inbound>, RpcError> {
        router.deliver(from, self.to, traffic).await.map_err(RpcError::Transport)
    }

    /// Records how the connection fared, and answers the result as openraft's error text.
    fn noted<T>(&self, result: Result<T, RpcError>) -> Result<T, String> {
        self.links.record(self.to, &result);
        result.map_err(String::from)
    }

    async fn append(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
        ttl: std::time::Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, String> {
        let result = match &self.kind {
            Kind::Mem { router, from } => match self.inbound(*from, router, Traffic::Append).await {
                Ok(inbound) => inbound.append(req).await.map_err(RpcError::Remote),
                Err(e) => Err(e),
            },
            Kind::Grpc(channels) => match channels.client(&self.node) {
                Ok(mut client) => {
                    let meter = self.links.meter(self.to);
                    grpc::unary(&req, ttl, &meter, |p| async move { client.append(p).await }).await
                }
                Err(e) => Err(RpcError::Transport(e)),
            },
        };
        self.noted(result)
    }

    async fn vote(&self, call: Call, ttl: std::time::Duration) -> Result<VoteResponse<TypeConfig>, String> {
        let result = match &self.kind {
            Kind::Mem { router, from } => match self.inbound(*from, router, Traffic::Other).await {
                Ok(inbound) => match call {
                    Call::Vote(req) => inbound.vote(req).await,
                    Call::PreVote(req) => inbound.pre_vote(req).await,
                }
                .map_err(RpcError::Remote),
                Err(e) => Err(e),
            },
            Kind::Grpc(channels) => match channels.client(&self.node) {
                Ok(mut client) => {
                    let meter = self.links.meter(self.to);
                    match call {
                        Call::Vote(req) => {
                            grpc::unary(&req, ttl, &meter, |p| async move { client.vote(p).await }).await
                        }
                        Call::PreVote(req) => {
                            grpc::unary(&req, ttl, &meter, |p| async move { client.pre_vote(p).await }).await
                        }
                    }
                }
                Err(e) => Err(RpcError::Transport(e)),
            },
        };
        self.noted(result)
    }

    async fn transfer_leader(
        &self,
        req: TransferLeaderRequest<TypeConfig>,
        ttl: std::time::Duration,
    ) -> Result<TransferLeaderResponse<TypeConfig>, String> {
        let result = match &self.kind {
            Kind::Mem { router, from } => match self.inbound(*from, router, Traffic::Other).await {
                Ok(inbound) => inbound.transfer_leader(req).await.map_err(RpcError::Remote),
                Err(e) => Err(e),
            },
            Kind::Grpc(channels) => match channels.client(&self.node) {
                Ok(mut client) => {
                    let meter = self.links.meter(self.to);
                    grpc::unary(&req, ttl, &meter, |p| async move { client.transfer_leader(p).await }).await
                }
                Err(e) => Err(RpcError::Transport(e)),
            },
        };
        self.noted(result)
    }

    async fn snapshot(&self, vote: Vote, snapshot: Snapshot) -> Result<SnapshotResponse<TypeConfig>, String> {
        match &self.kind {
            Kind::Mem { router, from } => {
                self.inbound(*from, router, Traffic::Other).await?.snapshot(vote, snapshot).await
            }
            Kind::Grpc(channels) => {
                grpc::send_snapshot(channels.client(&self.node)?, vote, snapshot, self.links.meter(self.to)).await
            }
        }
    }
}

/// Asks member `to` (the leader, as far as the caller knows) for a read index.
pub(crate) async fn read_index(
    network: &Network,
    to: NodeId,
    node: &Node,
    timeout: std::time::Duration,
) -> Result<ReadIndex, RpcError> {
    ask(
        network,
        to,
        node,
        timeout,
        (),
        |inbound, ()| inbound.read_index(),
        |mut c, p| async move { c.read_index(p).await },
    )
    .await
}

/// Hands `command` to member `to` (the leader, as far as the caller knows) to propose.
pub(crate) async fn submit(
    network: &Network,
    to: NodeId,
    node: &Node,
    command: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<Submitted, RpcError> {
    ask(
        network,
        to,
        node,
        timeout,
        command,
        |inbound, command| inbound.submit(command),
        |mut c, p| async move { c.submit(p).await },
    )
    .await
}

/// Asks member `to` (the leader, as far as the caller knows) whether member `id` is still in
/// the cluster.
pub(crate) async fn is_member(
    network: &Network,
    to: NodeId,
    node: &Node,
    id: NodeId,
    timeout: std::time::Duration,
) -> Result<MemberCheck, RpcError> {
    ask(
        network,
        to,
        node,
        timeout,
        id,
        |inbound, id| inbound.is_member(id),
        |mut c, p| async move { c.is_member(p).await },
    )
    .await
}

/// One request to member `to`, answered within `timeout`: in memory through its [`Inbound`],
/// over gRPC as an encoded payload.
async fn ask<Req, Resp, G, Fut>(
    network: &Network,
    to: NodeId,
    node: &Node,
    timeout: std::time::Duration,
    req: Req,
    in_memory: impl FnOnce(&dyn Inbound, Req) -> BoxFuture<Resp>,
    over_grpc: G,
) -> Result<Resp, RpcError>
where
    Req: serde::Serialize,
    Resp: serde::de::DeserializeOwned,
    G: FnOnce(grpc::RaftPeerClient<tonic::transport::Channel>, grpc::Payload) -> Fut,
    Fut: Future<Output = Result<tonic::Response<grpc::Payload>, tonic::Status>>,
{
    let result = match &network.kind {
        Kind::Mem { router, from } => match router.deliver(*from, to, Traffic::Other).await {
            Ok(inbound) => match tokio::time::timeout(timeout, in_memory(&*inbound, req)).await {
                Ok(answer) => answer.map_err(RpcError::Remote),
                Err(_) => Err(RpcError::Timeout(format!("no answer within {timeout:?}"))),
            },
            Err(e) => Err(RpcError::Transport(e)),
        },
        Kind::Grpc(channels) => match channels.client(node) {
            Ok(client) => grpc::unary(&req, timeout, &network.links.meter(to), |p| over_grpc(client, p)).await,
            Err(e) => Err(RpcError::Transport(e)),
        },
    };
    network.links.record(to, &result);
    result
}

type BoxStreamFuture<'s> = openraft::base::BoxFuture<
    's,
    Result<
        openraft::base::BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
        RPCError<TypeConfig>,
    >,
>;

fn answer_to_rpc(
    answer: Result<StreamAppendResult<TypeConfig>, String>,
) -> Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
    answer.map_err(unreachable)
}

fn unreachable(e: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(e))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Client {
        Client { kind: self.kind.clone(), links: self.links.clone(), to: target, node: node.clone(), failed_opens: 0 }
    }
}

impl RaftNetworkV2<TypeConfig> for Client {
    type SnapshotData = SnapshotDir;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Client::append(self, rpc, option.hard_ttl()).await.map_err(unreachable)
    }

    /// Over gRPC, one stream per replication session with requests sent without waiting for
    /// the answers (a write is not held up behind the previous request's round trip); in
    /// memory, one request at a time, so that partitions and delays apply to each.
    fn stream_append<'s, S>(&'s mut self, input: S, option: RPCOption) -> BoxStreamFuture<'s>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        use futures::StreamExt as _;
        let channels = match &self.kind {
            Kind::Mem { .. } => return openraft::network::stream_append_sequential(self, input, option),
            Kind::Grpc(channels) => channels,
        };
        // openraft's deadline is a heartbeat interval; a stream is judged by its progress: it
        // fails only when no answer at all comes for several of them while requests wait.
        let heartbeat = option.hard_ttl();
        let stall = heartbeat * grpc::STALL_HEARTBEATS;
        let meter = self.links.meter(self.to);
        let opened = channels.client(&self.node).map(|client| grpc::append_stream(client, input.boxed(), stall, meter));
        Box::pin(async move {
            let answers: Result<AppendAnswers, String> = match opened {
                Ok(opening) => opening.await,
                Err(e) => Err(e),
            };
            match answers {
                Ok(answers) => {
                    self.failed_opens = 0;
                    let answers: openraft::base::BoxStream<'s, _> = Box::pin(answers.map(answer_to_rpc));
                    Ok(answers)
                }
                Err(e) => {
                    self.failed_opens = self.failed_opens.saturating_add(1);
                    tokio::time::sleep(open_backoff(heartbeat, self.failed_opens)).await;
                    Err(unreachable(e))
                }
            }
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Client::vote(self, Call::Vote(rpc), option.hard_ttl()).await.map_err(unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Client::vote(self, Call::PreVote(rpc), option.hard_ttl()).await.map_err(unreachable)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        Client::transfer_leader(self, req, option.hard_ttl()).await.map_err(unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = openraft::error::ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // No deadline on the whole transfer (a large snapshot takes long): openraft cancels it
        // when replication to this peer ends, and the transport detects a vanished peer.
        tokio::select! {
            result = Client::snapshot(self, vote, snapshot) => {
                result.map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e)))
            }
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::open_backoff;

    #[test]
    fn a_stream_that_cannot_open_waits_longer_each_time_up_to_five_heartbeats() {
        let beat = Duration::from_millis(100);
        let waits: Vec<u128> = (1..=6).map(|n| open_backoff(beat, n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500, 500]);
        assert_eq!(open_backoff(beat, u32::MAX), beat * 5);
    }
}
