//! etcd's Lock and Election services, built as etcd builds them: the concurrency recipes
//! (a key per contender under the name's prefix, attached to a lease; the contender with the
//! oldest key holds the lock or leads; the others wait for the deletion of the key just ahead
//! of theirs, with a watch, never polling), run server-side through this member's own KV,
//! Watch and Lease services over a loopback connection, so they inherit forwarding to the
//! leader and every guarantee of those services.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_create_request::FilterType;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse, WatchCreateRequest, WatchRequest, request_op, response_op,
};
use ferrocd_proto::mvccpb::KeyValue;
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_proto::v3electionpb::election_server::Election;
use ferrocd_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse,
    ResignRequest, ResignResponse,
};
use ferrocd_proto::v3lockpb::lock_server::Lock;
use ferrocd_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::Credential;
use crate::context::{COMMON_NAME, RequestContext};
use crate::error::ServerError;

/// The TTL of the lease a Lock or Campaign without one gets (etcd's session default); it is
/// not kept alive.
const SESSION_TTL: i64 = 60;

/// A connection to this member's own client services, in process (no socket, no TLS), set
/// once they are built.
#[derive(Debug, Clone, Default)]
pub struct Loopback(Arc<OnceLock<Channel>>);

impl Loopback {
    /// Serves `router` (the client services behind [`crate::context::Edge::loopback`]) to this
    /// loopback's channel, over in-memory pipes, until `stopped` turns true.
    pub fn serve(
        &self,
        router: tonic::transport::server::Router,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(), tonic::transport::Error>> + use<> {
        let (tx, rx) = mpsc::channel::<std::io::Result<tokio::io::DuplexStream>>(16);
        let endpoint = tonic::transport::Endpoint::from_static("http://loopback");
        let _ = self.0.set(endpoint.connect_with_connector_lazy(Pipes(tx)));
        router.serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
    }

    /// The channel, once the loopback serves.
    ///
    /// # Errors
    /// `NotServing` before that.
    pub(crate) fn channel(&self) -> Result<Channel, Status> {
        self.0.get().cloned().ok_or_else(|| ServerError::NotServing.into())
    }

    fn kv(&self) -> Result<KvClient<Channel>, Status> {
        Ok(KvClient::new(self.channel()?).max_decoding_message_size(usize::MAX))
    }
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    ferrocd_types::prefix_end(prefix).unwrap_or_else(|| vec![0])
}

/// The loopback's connector: each connection is a pipe whose other end goes to the server.
#[derive(Debug, Clone)]
struct Pipes(mpsc::Sender<std::io::Result<tokio::io::DuplexStream>>);

/// Bytes a loopback pipe buffers each way.
const PIPE_BYTES: usize = 256 * 1024;

impl tower_service::Service<http::Uri> for Pipes {
    type Response = hyper_util::rt::TokioIo<tokio::io::DuplexStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
            server.send(Ok(theirs)).await.map_err(|_| std::io::Error::other("the server has stopped"))?;
            Ok(hyper_util::rt::TokioIo::new(ours))
        })
    }
}

/// `<prefix><lease in hex>`: a contender's key.
fn contender_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

fn with_slash(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        key: key.to_vec(),
        target: CompareTarget::Create as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::CreateRevision(rev)),
        range_end: Vec::new(),
    }
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

/// The oldest key under `prefix` (the lock holder, the leader).
fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_target: SortTarget::Create as i32,
        sort_order: SortOrder::Ascend as i32,
        limit: 1,
        ..Default::default()
    }
}

fn range_kvs(resp: &TxnResponse, i: usize) -> Vec<KeyValue> {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => r.kvs.clone(),
        _ => Vec::new(),
    }
}

/// The recipes' client side, over the loopback connection, as a caller: every request
/// carries the caller's token (or certificate name), so the recipes run with the caller's
/// permissions (as etcd's do), never the server's.
#[derive(Debug, Clone)]
struct Recipes {
    loopback: Loopback,
    credential: Option<Credential>,
}

/// A watch stream: its request sender (kept so the stream stays open) and its responses.
type Watching = (mpsc::UnboundedSender<WatchRequest>, tonic::Streaming<ferrocd_proto::etcdserverpb::WatchResponse>);

impl Recipes {
    /// The recipes as the caller of `request`.
    fn as_caller<T>(&self, request: &Request<T>) -> Self {
        let credential = request.extensions().get::<RequestContext>().and_then(|c| c.credential.clone());
        Self { loopback: self.loopback.clone(), credential }
    }

    /// `message` as a request of the caller.
    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let (key, value) = match &self.credential {
            Some(Credential::Token(token)) => ("token", token),
            Some(Credential::CommonName(name)) => (COMMON_NAME, name),
            None => return request,
        };
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            request.metadata_mut().insert(key, value);
        }
        request
    }

    /// Opens a watch stream on this member with one watcher.
    async fn watch(&self, create: WatchCreateRequest) -> Result<Watching, Status> {
        let (requests, rx) = mpsc::unbounded_channel();
        let _ = requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) });
        let responses = WatchClient::new(self.loopback.channel()?)
            .watch(self.req(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok((requests, responses))
    }

    /// The lease to hold the key with: the caller's, or a new one (etcd's session default).
    async fn session(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let mut leases = LeaseClient::new(self.loopback.channel()?);
        Ok(leases.lease_grant(self.req(LeaseGrantRequest { ttl: SESSION_TTL, id: 0 })).await?.into_inner().id)
    }

    /// Creates `key` with `value` under `lease` unless it exists. Returns its create revision,
    /// whether it existed (and then its value), the oldest key under `prefix`, and the header.
    async fn enqueue(
        &self,
        prefix: &[u8],
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<(i64, Option<Vec<u8>>, Option<KeyValue>, Option<ResponseHeader>), Status> {
        let put = PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() };
        let get = RangeRequest { key: key.to_vec(), ..Default::default() };
        let txn = TxnRequest {
            compare: vec![created_at(key, 0)],
            success: vec![
                op(request_op::Request::RequestPut(put)),
                op(request_op::Request::RequestRange(first_created(prefix))),
            ],
            failure: vec![
                op(request_op::Request::RequestRange(get)),
                op(request_op::Request::RequestRange(first_created(prefix))),
            ],
        };
        let resp = self.loopback.kv()?.txn(self.req(txn)).await?.into_inner();
        let owner = range_kvs(&resp, 1).into_iter().next();
        if resp.succeeded {
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            Ok((rev, None, owner, resp.header))
        } else {
            let mine =
                range_kvs(&resp, 0).into_iter().next().ok_or_else(|| Status::from(ServerError::SessionExpired))?;
            Ok((mine.create_revision, Some(mine.value), owner, resp.header))
        }
    }

    /// Waits until no key under `prefix` created at or below `max_create_rev` is left: for the
    /// newest such key, wait for its deletion; again until none is left.
    async fn wait_deletes(&self, prefix: &[u8], max_create_rev: i64) -> Result<(), Status> {
        loop {
            let req = RangeRequest {
                sort_order: SortOrder::Descend as i32,
                max_create_revision: max_create_rev,
                ..first_created(prefix)
            };
            let resp = self.loopback.kv()?.range(self.req(req)).await?.into_inner();
            let Some(ahead) = resp.kvs.first() else { return Ok(()) };
            let rev = resp.header.map_or(0, |h| h.revision);
            self.wait_delete(&ahead.key, rev + 1).await?;
        }
    }

    /// Waits for the deletion of `key` at `from` or later.
    async fn wait_delete(&self, key: &[u8], from: i64) -> Result<(), Status> {
        let create = WatchCreateRequest {
            key: key.to_vec(),
            start_revision: from,
            filters: vec![FilterType::Noput as i32],
            ..Default::default()
        };
        let (_requests, mut watch) = self.watch(create).await?;
        while let Some(resp) = watch.message().await? {
            if resp.canceled {
                return Err(ServerError::WatchCanceled(resp.cancel_reason).into());
            }
            if resp.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                return Ok(());
            }
        }
        Err(ServerError::WatchCanceled(String::new()).into())
    }

    /// The header of a read of `key`, failing when the key is gone (its lease expired).
    async fn still_held(&self, key: &[u8]) -> Result<Option<ResponseHeader>, Status> {
        let resp = self
            .loopback
            .kv()?
            .range(self.req(RangeRequest { key: key.to_vec(), ..Default::default() }))
            .await?
            .into_inner();
        if resp.kvs.is_empty() { Err(Status::from(ServerError::SessionExpired)) } else { Ok(resp.header) }
    }

    async fn delete(&self, key: &[u8]) -> Result<Option<ResponseHeader>, Status> {
        let req = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
        Ok(self.loopback.kv()?.delete_range(self.req(req)).await?.into_inner().header)
    }

    /// Waits until the key created at `rev` under `prefix` is the oldest; on failure or
    /// cancellation (the call dropped) the key is deleted, as etcd's clients do, so a
    /// contender that gave up does not hold its place.
    async fn wait_turn(&self, prefix: &[u8], key: &[u8], rev: i64, owner: Option<&KeyValue>) -> Result<(), Status> {
        if owner.is_none_or(|o| o.create_revision == rev) {
            return Ok(());
        }
        let mut guard = DeleteOnDrop { recipes: Some(self.clone()), key: key.to_vec() };
        self.wait_deletes(prefix, rev - 1).await?;
        guard.recipes = None;
        Ok(())
    }
}

/// Deletes a contender's key unless disarmed.
struct DeleteOnDrop {
    recipes: Option<Recipes>,
    key: Vec<u8>,
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(recipes) = self.recipes.take() {
            let key = std::mem::take(&mut self.key);
            tokio::spawn(async move {
                if let Err(e) = recipes.delete(&key).await {
                    tracing::warn!(error = %e, "cannot withdraw an abandoned lock or campaign key");
                }
            });
        }
    }
}

/// The Lock service.
#[derive(Debug, Clone)]
pub struct LockService(Recipes);

impl LockService {
    pub fn new(loopback: Loopback) -> Self {
        Self(Recipes { loopback, credential: None })
    }
}

impl LockService {
    async fn serve_lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let r = &self.0.as_caller(&request);
        let req = request.into_inner();
        let lease = r.session(req.lease).await?;
        let prefix = with_slash(&req.name);
        let key = contender_key(&prefix, lease);
        let (rev, _, owner, _) = r.enqueue(&prefix, &key, b"", lease).await?;
        r.wait_turn(&prefix, &key, rev, owner.as_ref()).await?;
        let header = r.still_held(&key).await?;
        Ok(Response::new(LockResponse { header, key }))
    }

    async fn serve_unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let r = self.0.as_caller(&request);
        let header = r.delete(&request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header }))
    }
}

/// The Election service.
#[derive(Debug, Clone)]
pub struct ElectionService(Recipes);

impl ElectionService {
    pub fn new(loopback: Loopback) -> Self {
        Self(Recipes { loopback, credential: None })
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

impl Recipes {
    /// Puts `value` on the leader's key if it still leads.
    async fn proclaim(&self, leader: &LeaderKey, value: &[u8]) -> Result<Option<ResponseHeader>, Status> {
        let put =
            PutRequest { key: leader.key.clone(), value: value.to_vec(), lease: leader.lease, ..Default::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op(request_op::Request::RequestPut(put))],
            failure: Vec::new(),
        };
        let resp = self.loopback.kv()?.txn(self.req(txn)).await?.into_inner();
        if resp.succeeded { Ok(resp.header) } else { Err(Status::from(ServerError::ElectionNotLeader)) }
    }

    /// Sends the election's leader and each change of it (a new value, a new leader) to `tx`
    /// until the receiver is gone.
    async fn observe(&self, prefix: Vec<u8>, tx: mpsc::Sender<Result<LeaderResponse, Status>>) -> Result<(), Status> {
        loop {
            let resp = self.loopback.kv()?.range(self.req(first_created(&prefix))).await?.into_inner();
            let from = resp.header.as_ref().map_or(0, |h| h.revision) + 1;
            let (leader, header) = match resp.kvs.into_iter().next() {
                Some(kv) => (kv, resp.header),
                None => match self.next_put(&prefix, from).await? {
                    Some(found) => found,
                    None => return Ok(()),
                },
            };
            if tx.send(Ok(LeaderResponse { header, kv: Some(leader.clone()) })).await.is_err() {
                return Ok(());
            }
            // Follow the leader's key until it is deleted.
            let create = WatchCreateRequest {
                key: leader.key.clone(),
                start_revision: leader.mod_revision + 1,
                ..Default::default()
            };
            let (_requests, mut watch) = self.watch(create).await?;
            'leader: while let Some(resp) = watch.message().await? {
                for event in resp.events {
                    if event.r#type == EventType::Delete as i32 {
                        break 'leader;
                    }
                    if tx.send(Ok(LeaderResponse { header: resp.header, kv: event.kv })).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The first key put under `prefix` from revision `from` on, with its response header.
    async fn next_put(&self, prefix: &[u8], from: i64) -> Result<Option<(KeyValue, Option<ResponseHeader>)>, Status> {
        let create = WatchCreateRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            start_revision: from,
            filters: vec![FilterType::Nodelete as i32],
            ..Default::default()
        };
        let (_requests, mut watch) = self.watch(create).await?;
        while let Some(resp) = watch.message().await? {
            if let Some(kv) = resp.events.into_iter().find_map(|e| e.kv) {
                return Ok(Some((kv, resp.header)));
            }
        }
        Ok(None)
    }
}

impl ElectionService {
    async fn serve_campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let r = &self.0.as_caller(&request);
        let req = request.into_inner();
        let lease = r.session(req.lease).await?;
        let prefix = with_slash(&req.name);
        let key = contender_key(&prefix, lease);
        let (rev, existing, owner, _) = r.enqueue(&prefix, &key, &req.value, lease).await?;
        let leader = LeaderKey { name: req.name.clone(), key: key.clone(), rev, lease };
        if existing.is_some_and(|v| v != req.value) {
            // Campaigning again with another value proclaims it (etcd's recipe).
            r.proclaim(&leader, &req.value).await?;
        }
        r.wait_turn(&prefix, &key, rev, owner.as_ref()).await?;
        let header = r.still_held(&key).await.map_err(|_| Status::from(ServerError::ElectionNotLeader))?;
        Ok(Response::new(CampaignResponse { header, leader: Some(leader) }))
    }

    async fn serve_proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let r = self.0.as_caller(&request);
        let req = request.into_inner();
        let leader = req.leader.ok_or_else(|| Status::from(ServerError::MissingLeaderField))?;
        let header = r.proclaim(&leader, &req.value).await?;
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn serve_leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let r = self.0.as_caller(&request);
        let prefix = with_slash(&request.into_inner().name);
        let resp = r.loopback.kv()?.range(r.req(first_created(&prefix))).await?.into_inner();
        let kv = resp.kvs.into_iter().next().ok_or_else(|| Status::from(ServerError::ElectionNoLeader))?;
        Ok(Response::new(LeaderResponse { header: resp.header, kv: Some(kv) }))
    }

    async fn serve_observe(&self, request: Request<LeaderRequest>) -> Result<Response<ObserveStream>, Status> {
        let recipes = self.0.as_caller(&request);
        let prefix = with_slash(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(16);

        tokio::spawn(async move {
            // Ends when the observer goes away, even while the election is quiet.
            let gone = tx.clone();
            tokio::select! {
                result = recipes.observe(prefix, tx.clone()) => {
                    if let Err(status) = result {
                        let _ = tx.send(Err(status)).await;
                    }
                }
                _ = gone.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn serve_resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let r = self.0.as_caller(&request);
        let leader = request.into_inner().leader.ok_or_else(|| Status::from(ServerError::MissingLeaderField))?;
        let txn = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: leader.key.clone(),
                ..Default::default()
            }))],
            failure: Vec::new(),
        };
        let resp = r.loopback.kv()?.txn(r.req(txn)).await?.into_inner();
        Ok(Response::new(ResignResponse { header: resp.header }))
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.serve_lock(request).await.map_err(crate::error::through_in_process_client)
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        self.serve_unlock(request).await.map_err(crate::error::through_in_process_client)
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        self.serve_campaign(request).await.map_err(crate::error::through_in_process_client)
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        self.serve_proclaim(request).await.map_err(crate::error::through_in_process_client)
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        self.serve_leader(request).await.map_err(crate::error::through_in_process_client)
    }

    type ObserveStream = ObserveStream;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<ObserveStream>, Status> {
        self.serve_observe(request).await.map_err(crate::error::through_in_process_client)
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        self.serve_resign(request).await.map_err(crate::error::through_in_process_client)
    }
}
