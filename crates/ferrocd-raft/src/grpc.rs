//! The gRPC transport between members (`ferrocd.raft.v1.RaftPeer`, served on the peer URLs).
//!
//! Raft messages travel as encoded payloads. Replication to a follower is one long-lived stream
//! (`AppendStream`) per replication session: the leader sends each batch as soon as openraft
//! produces it, without waiting for the answer to the previous one, so a write never queues
//! behind the round trip of the commit notice sent just before it. A snapshot streams as a header, then each file of
//! its directory as a start marker and chunks of at most 1 MiB, written to a scratch directory on
//! the receiver and installed from there — never held in memory whole. The receiver gives up on
//! a stream that stays idle for 30 s; the sender stops when openraft cancels the replication,
//! and HTTP/2 keepalives detect a peer that vanished.

#[allow(missing_debug_implementations, clippy::all, reason = "generated code")]
mod pb {
    include!("gen/ferrocd.raft.v1.rs");
}

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream, StreamExt as _};

use parking_lot::Mutex;
pub(crate) use pb::Payload;
pub(crate) use pb::raft_peer_client::RaftPeerClient;
use pb::raft_peer_server::{RaftPeer, RaftPeerServer};
use pb::snapshot_chunk::Kind as ChunkKind;
use pb::{FileStart, SnapshotChunk};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::Node;
use crate::network::{AppendAnswers, AppendRequests, Inbound, Links, Meter, Snapshot};
use crate::snapshot::{SnapshotDir, SnapshotStore};
use crate::types::{SnapshotMeta, TypeConfig, Vote, decode, encode};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult, VoteRequest};

const CHUNK: usize = 1 << 20;
const IDLE: Duration = Duration::from_secs(30);
/// Bounds one message. An AppendEntries batch is at most about 1 MiB (the log store bounds
/// what replication reads), but one entry can be as large as a request (`--max-request-bytes`).
const MAX_MESSAGE: usize = 256 << 20;
/// A pipelined append stream fails when requests wait and no answer at all has come for this
/// many heartbeat intervals. Answers to bounded batches come every few milliseconds from a
/// follower that keeps up; a follower catching up, or briefly starved of CPU, still answers
/// well within this; one that is gone, paused or cut off is given up on and replication
/// starts again from what it acknowledged.
pub(crate) const STALL_HEARTBEATS: u32 = 10;
/// Peer connections are pinged this often, and dropped when a ping goes unanswered for
/// [`PEER_KEEPALIVE_TIMEOUT`]: after a partition heals, a connection that died during it is
/// replaced within seconds rather than after TCP's retransmission backoff.
const PEER_KEEPALIVE: Duration = Duration::from_secs(1);
const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer service of one member, to be served on its peer URLs.
pub type PeerServer = RaftPeerServer<PeerService>;

/// Handles the peer RPCs addressed to one member.
pub struct PeerService {
    inbound: Arc<dyn Inbound>,
    snapshots: Arc<SnapshotStore>,
    /// Told the bytes each peer sends here.
    links: Links,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerService")
    }
}

pub(crate) fn server(inbound: Arc<dyn Inbound>, snapshots: Arc<SnapshotStore>, links: Links) -> PeerServer {
    RaftPeerServer::new(PeerService { inbound, snapshots, links })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

impl PeerService {
    /// A (pre-)vote request, its bytes counted as the candidate's.
    fn vote_request(&self, request: Request<Payload>) -> Result<VoteRequest<TypeConfig>, Status> {
        let data = request.into_inner().data;
        let rpc: VoteRequest<TypeConfig> = decode(&data).map_err(invalid)?;
        self.links.meter(rpc.vote.leader_id().voted_for).received(data.len());
        Ok(rpc)
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn reply<T: Serialize>(result: &Result<T, String>) -> Result<Response<Payload>, Status> {
    Ok(Response::new(Payload { data: encode(result).map_err(internal)? }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    type AppendStreamStream = BoxStream<'static, Result<Payload, Status>>;

    async fn append(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let data = request.into_inner().data;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&data).map_err(invalid)?;
        self.links.meter(rpc.vote.leader_id().voted_for).received(data.len());
        reply(&self.inbound.append(rpc).await)
    }

    async fn append_stream(
        &self,
        request: Request<Streaming<Payload>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        // Requests are decoded until the first that cannot be (or the stream fails); the
        // answers to those before it are sent, then the failure.
        let failure = Arc::new(Mutex::new(None::<Status>));
        let failed = Arc::clone(&failure);
        // The sender is known from its first request (the leader's vote names it).
        let meter = self.links.meter(0);
        let requests: AppendRequests = stream::unfold(request.into_inner(), move |mut incoming| {
            let failed = Arc::clone(&failed);
            let meter = meter.clone();
            async move {
                let next = incoming.message().await.and_then(|m| {
                    m.map(|p| {
                        let rpc: AppendEntriesRequest<TypeConfig> = decode(&p.data).map_err(invalid)?;
                        meter.of(rpc.vote.leader_id().voted_for).received(p.data.len());
                        Ok(rpc)
                    })
                    .transpose()
                });
                match next {
                    Ok(Some(rpc)) => Some((rpc, incoming)),
                    Ok(None) => None,
                    Err(status) => {
                        *failed.lock() = Some(status);
                        None
                    }
                }
            }
        })
        .boxed();
        let answers = self
            .inbound
            .stream_append(requests)
            .map(|answer| Ok(Payload { data: encode(&answer).map_err(internal)? }))
            .chain(stream::once(async move { failure.lock().take() }).filter_map(|f| async move { f.map(Err) }));
        Ok(Response::new(answers.boxed()))
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = self.vote_request(request)?;
        reply(&self.inbound.vote(rpc).await)
    }

    async fn pre_vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = self.vote_request(request)?;
        reply(&self.inbound.pre_vote(rpc).await)
    }

    async fn transfer_leader(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(&request.into_inner().data).map_err(invalid)?;
        reply(&self.inbound.transfer_leader(req).await)
    }

    async fn submit(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let command: Vec<u8> = decode(&request.into_inner().data).map_err(invalid)?;
        reply(&self.inbound.submit(command).await)
    }

    async fn read_index(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let () = decode(&request.into_inner().data).map_err(invalid)?;
        reply(&self.inbound.read_index().await)
    }

    async fn is_member(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let id = decode(&request.into_inner().data).map_err(invalid)?;
        reply(&self.inbound.is_member(id).await)
    }

    async fn snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<Payload>, Status> {
        let mut stream = request.into_inner();
        let Some(SnapshotChunk { kind: Some(ChunkKind::Header(header)) }) = next_chunk(&mut stream).await? else {
            return Err(invalid("a snapshot stream must start with its header"));
        };
        let (vote, meta): (Vote, SnapshotMeta) = decode(&header).map_err(invalid)?;
        let dir = self.snapshots.scratch().map_err(internal)?;
        let received = receive_files(&mut stream, &dir).await;
        if let Err(e) = received {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        let snapshot = Snapshot { meta, snapshot: SnapshotDir { path: dir.clone() } };
        // Raft adopts a snapshot it installs (moving its directory away) before it answers;
        // one it declines (older than what this member has, from a stale leader) is dropped
        // with the directory still here. The call runs on its own task, so a sender that goes
        // away midway neither cancels an install nor leaves the directory behind.
        let inbound = Arc::clone(&self.inbound);
        let answer = tokio::spawn(async move {
            let answer = inbound.snapshot(vote, snapshot).await;
            if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
            answer
        });
        reply(&answer.await.map_err(internal)?)
    }
}

/// An open file of a snapshot being received: the file, its announced size, the bytes written.
type Receiving = (tokio::fs::File, u64, u64);

/// Finishes a received file: checks it has its announced size, makes it durable.
async fn close_file(file: Option<Receiving>) -> Result<(), Status> {
    if let Some((file, size, written)) = file {
        if size != written {
            return Err(invalid(format!("snapshot file cut short: {written} of {size} bytes")));
        }
        file.sync_all().await.map_err(internal)?;
    }
    Ok(())
}

/// Writes the files of a snapshot stream into `dir`, up to and including its end marker.
async fn receive_files(stream: &mut Streaming<SnapshotChunk>, dir: &Path) -> Result<(), Status> {
    let mut file: Option<Receiving> = None;
    let mut files = 0u64;
    while let Some(chunk) = next_chunk(stream).await? {
        match chunk.kind {
            Some(ChunkKind::File(FileStart { name, size })) => {
                close_file(file.take()).await?;
                let mut parts = Path::new(&name).components();
                if !matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None)) {
                    return Err(invalid(format!("snapshot file name {name:?} is not a plain name")));
                }
                file = Some((tokio::fs::File::create(dir.join(&name)).await.map_err(internal)?, size, 0));
                files += 1;
            }
            Some(ChunkKind::Data(data)) => match file.as_mut() {
                Some((f, _, written)) => {
                    f.write_all(&data).await.map_err(internal)?;
                    *written += data.len() as u64;
                }
                None => return Err(invalid("snapshot data before any file")),
            },
            Some(ChunkKind::End(count)) => {
                close_file(file.take()).await?;
                if count != files {
                    return Err(invalid(format!("snapshot stream ended after {files} of {count} files")));
                }
                return Ok(());
            }
            Some(ChunkKind::Header(_)) | None => return Err(invalid("unexpected snapshot chunk")),
        }
    }
    Err(invalid("the snapshot stream ended without its end marker"))
}

/// The next chunk of a snapshot stream, or an error once it has been idle for [`IDLE`].
async fn next_chunk(stream: &mut Streaming<SnapshotChunk>) -> Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(IDLE, stream.message()).await {
        Ok(message) => message,
        Err(_) => Err(Status::deadline_exceeded("the snapshot stream stalled")),
    }
}

/// Client connections to members' peer listeners, one lazily connected channel per URL, with
/// keepalives (the application reuses them for its own peer services). An `https` URL is
/// reached over TLS with the configuration given to [`Channels::tls`].
#[derive(Debug, Clone, Default)]
pub struct Channels {
    cache: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ferrocd_tls::Connector>,
}

impl Channels {
    /// Channels that reach `https` URLs through `connector` (TLS with the member's peer
    /// certificate and CAs).
    pub fn tls(connector: ferrocd_tls::Connector) -> Self {
        Self { cache: Arc::default(), tls: Some(connector) }
    }

    /// The channel to the first of `urls`.
    ///
    /// # Errors
    /// No URL, one tonic cannot use, or an `https` one without TLS configured.
    pub fn channel(&self, urls: &[String]) -> Result<Channel, String> {
        let url = urls.first().ok_or("the member has no peer URL")?;
        let mut cache = self.cache.lock();
        if let Some(channel) = cache.get(url) {
            return Ok(channel.clone());
        }
        // TLS is the connector's business: tonic sees plain `http` either way.
        let (plain, tls) = match url.strip_prefix("https://") {
            Some(rest) => (format!("http://{rest}"), true),
            None => (url.clone(), false),
        };
        let endpoint = Endpoint::from_shared(plain)
            .map_err(|e| format!("peer URL {url}: {e}"))?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(PEER_KEEPALIVE)
            .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = match (tls, &self.tls) {
            (false, _) => endpoint.connect_lazy(),
            (true, Some(connector)) => endpoint.connect_with_connector_lazy(connector.clone()),
            (true, None) => return Err(format!("peer URL {url} needs TLS, and this member has no peer TLS set up")),
        };
        cache.insert(url.clone(), channel.clone());
        Ok(channel)
    }

    pub(crate) fn client(&self, node: &Node) -> Result<RaftPeerClient<Channel>, String> {
        Ok(RaftPeerClient::new(self.channel(&node.urls)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}

/// Why an RPC to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RpcError {
    /// No answer in time (the peer may be paused, slow, or cut off without a reset).
    Timeout(String),
    /// The connection could not be made or broke: the peer is down or unreachable.
    Transport(String),
    /// The peer answered with an error.
    Remote(String),
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(e) | Self::Transport(e) | Self::Remote(e) => f.write_str(e),
        }
    }
}

impl From<RpcError> for String {
    fn from(e: RpcError) -> Self {
        e.to_string()
    }
}

/// Whether a status a call ended with came from the connection rather than from the peer's
/// service (which answers every request with a payload, or `InvalidArgument`/`Internal`).
fn transport_failure(status: &Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
}

/// Sends one unary RPC: encodes `req`, calls, decodes the remote result.
pub(crate) async fn unary<Req, Resp, F, Fut>(
    req: &Req,
    timeout: Duration,
    meter: &Meter,
    call: F,
) -> Result<Resp, RpcError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    F: FnOnce(Payload) -> Fut,
    Fut: Future<Output = Result<Response<Payload>, Status>>,
{
    let payload = Payload { data: encode(req).map_err(|e| RpcError::Remote(e.to_string()))? };
    let sent = Instant::now();
    meter.sent(payload.data.len());
    let response = match tokio::time::timeout(timeout, call(payload)).await {
        Ok(Ok(response)) => response,
        Ok(Err(s)) => {
            let e = format!("{}: {}", s.code(), s.message());
            if transport_failure(&s) {
                meter.failed();
                return Err(RpcError::Transport(e));
            }
            return Err(RpcError::Remote(e));
        }
        Err(_) => return Err(RpcError::Timeout(format!("no answer within {timeout:?}"))),
    };
    meter.round_trip(sent.elapsed());
    let data = response.into_inner().data;
    meter.received(data.len());
    let result: Result<Resp, String> = decode(&data).map_err(|e| RpcError::Remote(e.to_string()))?;
    result.map_err(RpcError::Remote)
}

/// How a pipelined append stream is doing: requests sent, answers received, and since when
/// the oldest unanswered request has waited without any answer.
struct Progress {
    sent: u64,
    answered: u64,
    since: Instant,
}

/// Opens a pipelined append stream to a peer: `requests` are sent as they come; the answers
/// come back in order. The stream fails when a request stays unanswered, with no answer in
/// between, for `ttl` (an idle stream may stay open indefinitely).
pub(crate) fn append_stream(
    mut client: RaftPeerClient<Channel>,
    requests: AppendRequests,
    ttl: Duration,
    meter: Meter,
) -> futures::future::BoxFuture<'static, Result<AppendAnswers, String>> {
    let progress = Arc::new(Mutex::new(Progress { sent: 0, answered: 0, since: Instant::now() }));
    let outgoing = Outgoing { requests, progress: Arc::clone(&progress), meter: meter.clone() };
    Box::pin(async move {
        let answers = match tokio::time::timeout(ttl, client.append_stream(outgoing)).await {
            Ok(answers) => answers.map_err(|s| format!("{}: {}", s.code(), s.message()))?.into_inner(),
            Err(_) => return Err(format!("no answer within {ttl:?}")),
        };
        Ok(stream::unfold(Some((answers, progress)), move |state| next_answer(state, ttl, meter.clone())).boxed())
    })
}

/// The requests of an append stream as payloads, counted as they go. (A named type rather than
/// a boxed stream: the compiler cannot prove a future holding a boxed `dyn Stream` sendable.)
struct Outgoing {
    requests: AppendRequests,
    progress: Arc<Mutex<Progress>>,
    meter: Meter,
}

impl futures::Stream for Outgoing {
    type Item = Payload;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Payload>> {
        let Some(rpc) = std::task::ready!(self.requests.poll_next_unpin(cx)) else {
            return std::task::Poll::Ready(None);
        };
        let mut p = self.progress.lock();
        if p.sent == p.answered {
            p.since = Instant::now();
        }
        p.sent += 1;
        // An unencodable request goes as an empty payload, which the peer refuses.
        let data = encode(&rpc).unwrap_or_default();
        self.meter.sent(data.len());
        std::task::Poll::Ready(Some(Payload { data }))
    }
}

type AnswerState = Option<(Streaming<Payload>, Arc<Mutex<Progress>>)>;

/// The next answer of a pipelined append stream (see [`append_stream`]).
async fn next_answer(
    state: AnswerState,
    ttl: Duration,
    meter: Meter,
) -> Option<(Result<StreamAppendResult<TypeConfig>, String>, AnswerState)> {
    let (mut answers, progress) = state?;
    loop {
        let waited = {
            let p = progress.lock();
            (p.sent > p.answered).then(|| p.since.elapsed())
        };
        let limit = match waited {
            Some(waited) if waited >= ttl => return Some((Err(format!("no answer within {ttl:?}")), None)),
            Some(waited) => ttl - waited,
            None => ttl,
        };
        let Ok(next) = tokio::time::timeout(limit, answers.message()).await else { continue };
        let answer = match next {
            Ok(Some(payload)) => {
                meter.received(payload.data.len());
                let mut p = progress.lock();
                p.answered += 1;
                p.since = Instant::now();
                decode::<Result<_, String>>(&payload.data).map_err(|e| e.to_string()).and_then(|a| a)
            }
            Ok(None) => return None,
            Err(status) => Err(format!("{}: {}", status.code(), status.message())),
        };
        let more = answer.is_ok();
        return Some((answer, more.then_some((answers, progress))));
    }
}

/// Opens every file of a snapshot directory, by name, with its size. Every file is opened
/// before the first is sent: a newer snapshot replacing this one deletes its directory, and
/// open files stay readable, so a long transfer completes.
async fn open_files(dir: &Path) -> Result<Vec<(String, tokio::fs::File, u64)>, String> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await.map_err(|e| e.to_string())?;
    while let Some(entry) = entries.next_entry().await.map_err(|e| e.to_string())? {
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let file = tokio::fs::File::open(dir.join(&name)).await.map_err(|e| e.to_string())?;
        let size = file.metadata().await.map_err(|e| e.to_string())?.len();
        files.push((name, file, size));
    }
    Ok(files)
}

/// Streams `snapshot` to a peer.
pub(crate) async fn send_snapshot<Resp: DeserializeOwned>(
    mut client: RaftPeerClient<Channel>,
    vote: Vote,
    snapshot: Snapshot,
    meter: Meter,
) -> Result<Resp, String> {
    let header = encode(&(vote, &snapshot.meta)).map_err(|e| e.to_string())?;
    let dir = snapshot.snapshot.path.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
    let producer = tokio::spawn(async move {
        let send = |kind| tx.send(SnapshotChunk { kind: Some(kind) });
        send(ChunkKind::Header(header)).await.map_err(|_| "the stream closed".to_string())?;
        let files = open_files(&dir).await?;
        let count = files.len() as u64;
        for (name, mut file, size) in files {
            send(ChunkKind::File(FileStart { name, size })).await.map_err(|_| "the stream closed".to_string())?;
            loop {
                let mut buf = vec![0; CHUNK];
                let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                meter.sent(n);
                send(ChunkKind::Data(buf)).await.map_err(|_| "the stream closed".to_string())?;
            }
        }
        send(ChunkKind::End(count)).await.map_err(|_| "the stream closed".to_string())?;
        Ok::<(), String>(())
    });
    let response = client
        .snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()));
    let produced = producer.await.map_err(|e| e.to_string())?;
    let response = response?;
    produced?;
    let result: Result<Resp, String> = decode(&response.into_inner().data).map_err(|e| e.to_string())?;
    result
}

#[cfg(test)]
mod tests {
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, VoteRequest};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

    use super::*;
    use crate::network::{MemberCheck, ReadIndex, Submitted};

    /// A peer that answers an append stream only once it holds `batch` requests (then each of
    /// them, in order), or never (`batch` 0).
    struct Batching {
        batch: usize,
    }

    fn unused<T>() -> futures::future::BoxFuture<'static, Result<T, String>> {
        Box::pin(async { Err("not used by these tests".to_string()) })
    }

    impl Inbound for Batching {
        fn append(
            &self,
            _: AppendEntriesRequest<TypeConfig>,
        ) -> futures::future::BoxFuture<'static, Result<AppendEntriesResponse<TypeConfig>, String>> {
            unused()
        }

        fn stream_append(&self, requests: AppendRequests) -> AppendAnswers {
            let batch = self.batch;
            stream::unfold((requests, Vec::new()), move |(mut requests, mut held)| async move {
                while batch == 0 || held.len() < batch {
                    held.push(requests.next().await?);
                }
                let answers: Vec<Result<StreamAppendResult<TypeConfig>, String>> =
                    held.drain(..).map(|r: AppendEntriesRequest<TypeConfig>| Ok(Ok(r.prev_log_id))).collect();
                Some((stream::iter(answers), (requests, held)))
            })
            .flatten()
            .boxed()
        }

        fn vote(
            &self,
            _: VoteRequest<TypeConfig>,
        ) -> futures::future::BoxFuture<'static, Result<openraft::raft::VoteResponse<TypeConfig>, String>> {
            unused()
        }

        fn pre_vote(
            &self,
            _: VoteRequest<TypeConfig>,
        ) -> futures::future::BoxFuture<'static, Result<openraft::raft::VoteResponse<TypeConfig>, String>> {
            unused()
        }

        fn snapshot(
            &self,
            _: Vote,
            _: Snapshot,
        ) -> futures::future::BoxFuture<'static, Result<openraft::raft::SnapshotResponse<TypeConfig>, String>> {
            unused()
        }

        fn read_index(&self) -> futures::future::BoxFuture<'static, Result<ReadIndex, String>> {
            unused()
        }

        fn transfer_leader(
            &self,
            _: TransferLeaderRequest<TypeConfig>,
        ) -> futures::future::BoxFuture<'static, Result<openraft::raft::TransferLeaderResponse<TypeConfig>, String>>
        {
            unused()
        }

        fn submit(&self, _: Vec<u8>) -> futures::future::BoxFuture<'static, Result<Submitted, String>> {
            unused()
        }

        fn is_member(&self, _: crate::NodeId) -> futures::future::BoxFuture<'static, Result<MemberCheck, String>> {
            unused()
        }
    }

    async fn peer(batch: usize, dir: &Path) -> RaftPeerClient<Channel> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service =
            server(Arc::new(Batching { batch }), Arc::new(SnapshotStore::open(dir).unwrap()), Links::default());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Channels::default().client(&crate::Node { urls: vec![url] }).unwrap()
    }

    /// A request with `index` as its previous log id, which the peer echoes.
    fn request(index: u64) -> AppendEntriesRequest<TypeConfig> {
        let vote = Vote::new(1, 1);
        let prev = Some(openraft::LogId::new(openraft::vote::leader_id_std::CommittedLeaderId::new(1), index));
        AppendEntriesRequest { vote, prev_log_id: prev, leader_commit: None, entries: vec![] }
    }

    fn echoed(answer: Option<Result<StreamAppendResult<TypeConfig>, String>>) -> u64 {
        answer.expect("an answer").expect("no failure").expect("accepted").expect("a log id").index
    }

    #[tokio::test]
    async fn a_snapshot_being_sent_survives_the_deletion_of_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        std::fs::write(snap.join("b.sst"), vec![7u8; 3 * CHUNK + 5]).unwrap();
        std::fs::write(snap.join("a.meta"), b"meta").unwrap();
        let files = open_files(&snap).await.unwrap();
        std::fs::remove_dir_all(&snap).unwrap();
        let mut read = Vec::new();
        for (name, mut file, size) in files {
            let mut data = Vec::new();
            file.read_to_end(&mut data).await.unwrap();
            assert_eq!(data.len() as u64, size);
            read.push((name, data));
        }
        assert_eq!(read, [("a.meta".to_string(), b"meta".to_vec()), ("b.sst".to_string(), vec![7u8; 3 * CHUNK + 5])]);
    }

    #[tokio::test]
    async fn a_snapshot_the_receiver_declines_leaves_no_scratch_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        // The peer's Raft refuses every snapshot (as it declines one older than its state).
        let client = peer(1, &store).await;
        let snap = dir.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        std::fs::write(snap.join("data.sst"), vec![1u8; 2 * CHUNK + 3]).unwrap();
        let snapshot = Snapshot {
            meta: SnapshotMeta { last_log_id: None, last_membership: Default::default() },
            snapshot: SnapshotDir { path: snap },
        };
        let answer: Result<openraft::raft::SnapshotResponse<TypeConfig>, String> =
            send_snapshot(client, Vote::new(1, 1), snapshot, Links::default().meter(1)).await;
        assert!(answer.is_err(), "the fake peer refuses snapshots");
        let left: Vec<String> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("tmp-"))
            .collect();
        assert!(left.is_empty(), "scratch directories left behind: {left:?}");
    }

    #[tokio::test]
    async fn requests_are_pipelined_and_answered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // The peer answers only once it holds 8 requests: a transport that waited for each
        // answer before sending the next would time out.
        let client = peer(8, dir.path()).await;
        let (tx, rx) = mpsc::channel(64);
        let mut answers =
            append_stream(client, ReceiverStream::new(rx).boxed(), Duration::from_secs(5), Links::default().meter(1))
                .await
                .unwrap();
        for i in 0..16 {
            tx.send(request(i)).await.unwrap();
        }
        for i in 0..16 {
            assert_eq!(echoed(answers.next().await), i);
        }
        drop(tx);
        assert!(answers.next().await.is_none(), "the answers end with the requests");
    }

    #[tokio::test]
    async fn an_idle_stream_stays_open_and_an_unanswered_request_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_millis(200);
        let client = peer(1, dir.path()).await;
        let (tx, rx) = mpsc::channel(4);
        let mut answers =
            append_stream(client, ReceiverStream::new(rx).boxed(), ttl, Links::default().meter(1)).await.unwrap();
        // Nothing outstanding: waiting longer than the ttl is no failure.
        assert!(tokio::time::timeout(ttl * 3, answers.next()).await.is_err());
        tx.send(request(7)).await.unwrap();
        assert_eq!(echoed(answers.next().await), 7);

        let client = peer(0, dir.path()).await;
        let (tx, rx) = mpsc::channel(4);
        let mut answers =
            append_stream(client, ReceiverStream::new(rx).boxed(), ttl, Links::default().meter(1)).await.unwrap();
        tx.send(request(1)).await.unwrap();
        let began = Instant::now();
        let failure = answers.next().await.expect("a failure").unwrap_err();
        assert!(failure.contains("no answer within"), "{failure}");
        assert!(began.elapsed() >= ttl / 2 && began.elapsed() < ttl * 5, "{:?}", began.elapsed());
        assert!(answers.next().await.is_none(), "the stream ends after a failure");
    }
}
