//! etcd's gRPC services, over the shared server state.
//!
//! Services that are not built yet are simply not registered: tonic answers their methods with
//! gRPC `Unimplemented`, never with a fake success.

pub mod auth;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod recipes;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrocd_engine::Engine;
use ferrocd_mvcc::KvStore;
use ferrocd_proto::etcdserverpb::{self, ResponseHeader};
use prost::Message;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::context::RequestContext;
use crate::error::ServerError;
use crate::peers::Peers;
use crate::replica::{LeaseCommand, Replica, Role};

/// What every service shares.
#[derive(Debug)]
pub struct Shared<E: Engine> {
    /// The keyspace as applied here (the replica's), for reads.
    pub kv: Arc<KvStore<E>>,
    pub replica: Replica<E>,
    /// Connections to other members' peer listeners, for forwarding to the leader.
    pub peers: Peers,
    pub member_id: u64,
    /// etcd's `--initial-cluster-token`, which new member IDs are derived from.
    pub cluster_token: String,
    /// How long a request waits for a leader to be elected.
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
    pub quota_bytes: u64,
    /// The member's data directory (snapshots for clients are built under it).
    pub data_dir: std::path::PathBuf,
    pub db_size: SizeCache,
    /// Users, roles, permissions and tokens, as applied here.
    pub auth: Arc<crate::auth::Auth>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The store's size for the quota check, re-read at most every [`SizeCache::TTL`]: asking
/// RocksDB for it takes locks and cost 4% of a write's CPU when done per request. A quota is a
/// soft limit (etcd's too lets the last batch through), so a few milliseconds of staleness only
/// moves where writes stop by a few writes.
#[derive(Debug)]
pub struct SizeCache {
    born: Instant,
    /// Milliseconds after `born` of the last refresh, plus one (0: never).
    refreshed: AtomicU64,
    bytes: AtomicU64,
}

impl Default for SizeCache {
    fn default() -> Self {
        Self { born: Instant::now(), refreshed: AtomicU64::new(0), bytes: AtomicU64::new(0) }
    }
}

impl SizeCache {
    pub const TTL: Duration = Duration::from_millis(20);

    pub fn get(&self, engine: &impl Engine) -> u64 {
        let now = self.born.elapsed().as_millis() as u64 + 1;
        let last = self.refreshed.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= Self::TTL.as_millis() as u64 {
            self.refreshed.store(now, Ordering::Relaxed);
            self.bytes.store(engine.size_bytes(), Ordering::Relaxed);
        }
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Where a request that must be served by the leader goes.
#[derive(Debug)]
pub enum Route {
    /// This member leads: serve it here.
    Local,
    /// Forward it to the leader (`id`) at its peer listener.
    Leader(Channel, u64),
}

/// A response with etcd's header.
pub trait Headed {
    fn header(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! headed {
    ($($t:ty),*) => {$(
        impl Headed for $t {
            fn header(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}

headed!(
    etcdserverpb::AlarmResponse,
    etcdserverpb::PutResponse,
    etcdserverpb::DeleteRangeResponse,
    etcdserverpb::TxnResponse,
    etcdserverpb::CompactionResponse,
    etcdserverpb::LeaseGrantResponse,
    etcdserverpb::LeaseRevokeResponse,
    etcdserverpb::LeaseTimeToLiveResponse,
    etcdserverpb::LeaseLeasesResponse,
    etcdserverpb::AuthEnableResponse,
    etcdserverpb::AuthDisableResponse,
    etcdserverpb::AuthenticateResponse,
    etcdserverpb::AuthUserAddResponse,
    etcdserverpb::AuthUserDeleteResponse,
    etcdserverpb::AuthUserChangePasswordResponse,
    etcdserverpb::AuthUserGrantRoleResponse,
    etcdserverpb::AuthUserRevokeRoleResponse,
    etcdserverpb::AuthRoleAddResponse,
    etcdserverpb::AuthRoleDeleteResponse,
    etcdserverpb::AuthRoleGrantPermissionResponse,
    etcdserverpb::AuthRoleRevokePermissionResponse
);

/// Whether a Txn puts anything, in any branch (nested ones too): only such a Txn adds data, so
/// only it meets the quota and the NOSPACE alarm.
pub(crate) fn txn_has_puts(txn: &etcdserverpb::TxnRequest) -> bool {
    txn_any(txn, &|op| matches!(op, etcdserverpb::request_op::Request::RequestPut(_)))
}

/// Whether a Txn changes anything (a put or a delete in any branch): one that does not is a
/// read, which etcd serves even under the CORRUPT alarm.
pub(crate) fn txn_writes(txn: &etcdserverpb::TxnRequest) -> bool {
    use etcdserverpb::request_op::Request as Op;
    txn_any(txn, &|op| matches!(op, Op::RequestPut(_) | Op::RequestDeleteRange(_)))
}

fn txn_any(txn: &etcdserverpb::TxnRequest, wanted: &dyn Fn(&etcdserverpb::request_op::Request) -> bool) -> bool {
    txn.success.iter().chain(&txn.failure).filter_map(|op| op.request.as_ref()).any(|op| match op {
        etcdserverpb::request_op::Request::RequestTxn(t) => txn_any(t, wanted),
        op => wanted(op),
    })
}

/// etcd's quota cost of a request: what it may add to the store (a put: 256 bytes of overhead
/// plus its key and value; a lease: 64; a Txn: its costlier branch); 0 for what adds nothing.
pub(crate) fn quota_cost(request: &QuotaRequest<'_>) -> u64 {
    use etcdserverpb::request_op::Request as Op;
    fn branch(ops: &[etcdserverpb::RequestOp]) -> u64 {
        ops.iter()
            .filter_map(|op| op.request.as_ref())
            .map(|op| match op {
                Op::RequestPut(p) => quota_cost(&QuotaRequest::Put(p)),
                Op::RequestTxn(t) => quota_cost(&QuotaRequest::Txn(t)),
                _ => 0,
            })
            .sum()
    }
    match request {
        QuotaRequest::Put(p) => 256 + (p.key.len() + p.value.len()) as u64,
        QuotaRequest::Txn(t) => branch(&t.success).max(branch(&t.failure)),
        QuotaRequest::LeaseGrant => 64,
    }
}

/// A request the quota weighs.
pub(crate) enum QuotaRequest<'a> {
    Put(&'a etcdserverpb::PutRequest),
    Txn(&'a etcdserverpb::TxnRequest),
    LeaseGrant,
}

/// Whether a forwarded request failed before it left this member (so retrying cannot apply it
/// twice): the connection to the leader could not be made (tonic's `ConnectError` is in the
/// status's error chain).
pub(crate) fn unsent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether a forwarded request failed in transit — the connection to the leader broke after
/// it was sent (a keep-alive timed out, the stream was reset), so its outcome is unknown —
/// rather than with the leader's own answer. Every answer the leader's services give is one of
/// etcd's errors, `etcdserver: ...`; tonic's own statuses for a broken connection are not.
pub(crate) fn lost_in_transit(status: &Status) -> bool {
    use tonic::Code;
    let transport_code = matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal);
    std::error::Error::source(status).is_some() || (transport_code && !crate::error::is_server_answer(status.message()))
}

impl<E: Engine> Shared<E> {
    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.replica.cluster_id(),
            member_id: self.member_id,
            revision,
            raft_term: self.replica.term(),
        })
    }

    /// etcd's learners serve only Status, serializable Range and Snapshot.
    ///
    /// # Errors
    /// `etcdserver: rpc not supported for learner` on a learner.
    pub fn not_learner(&self) -> Result<(), ServerError> {
        if self.replica.role() == Role::Learner { Err(ServerError::Learner) } else { Ok(()) }
    }

    /// etcd's root-role check for `request`'s caller (passes while auth is off).
    ///
    /// # Errors
    /// `user name is empty`, `invalid auth token`, `user name not found`, `permission denied`.
    pub fn admin<T>(&self, request: &Request<T>) -> Result<(), ServerError> {
        self.auth.check(&self.context(request).caller, |c| c.admin())
    }

    /// Checks `f` for `caller` before a change is proposed (it is checked again at apply). A
    /// refusal for want of permission is checked once more after the read barrier: a member
    /// that has not applied a grant that returned before the request was sent (a leader just
    /// elected) must not refuse what the grant allows.
    ///
    /// # Errors
    /// The check's error; the read barrier's.
    pub async fn authorize(
        &self,
        caller: &crate::auth::Caller,
        f: impl Fn(&crate::auth::Check<'_>) -> Result<(), ferrocd_auth::Error>,
    ) -> Result<(), ServerError> {
        match self.auth.check(caller, &f) {
            Err(ServerError::Auth(ferrocd_auth::Error::PermissionDenied)) => {
                self.read_barrier().await?;
                self.auth.check(caller, &f)
            }
            checked => checked,
        }
    }

    /// etcd's check that `request` names a caller (passes while auth is off).
    ///
    /// # Errors
    /// `user name is empty`, `invalid auth token`.
    pub fn user<T>(&self, request: &Request<T>) -> Result<(), ServerError> {
        self.auth.check(&self.context(request).caller, |c| c.user())
    }

    /// The context the edge gave `request` (see [`RequestContext::of`]).
    pub fn context<T>(&self, request: &Request<T>) -> RequestContext {
        RequestContext::of(request, self.request_timeout)
    }

    /// Where a request that changes the cluster's state is served: here when this member leads,
    /// else at the leader (a request already forwarded once is not forwarded again). Waits for
    /// a leader to be elected until the request's deadline.
    ///
    /// # Errors
    /// etcd's learner, no-leader and leader-changed errors.
    pub async fn route(&self, ctx: &RequestContext) -> Result<Route, ServerError> {
        self.not_learner()?;
        let leader = match self.replica.leader() {
            Some(leader) => leader,
            None => self
                .replica
                .wait_until(ctx.left(), |s| s.leader.is_some())
                .await
                .and_then(|s| s.leader)
                .ok_or(ServerError::NoLeader)?,
        };
        if leader == self.member_id {
            return Ok(Route::Local);
        }
        if ctx.forwarded {
            return Err(ServerError::LeaderChanged);
        }
        let members = self.replica.status().members;
        let node =
            members.voters.get(&leader).or_else(|| members.learners.get(&leader)).ok_or(ServerError::NoLeader)?;
        Ok(Route::Leader(self.peers.channel(&node.urls)?, leader))
    }

    /// Serves `request` at the leader when another member leads: forwards it with `call` and
    /// answers the leader's response; `None` when this member leads and serves it itself. When
    /// the leader cannot be reached, waits for the next one and forwards there.
    ///
    /// # Errors
    /// [`Self::route`]'s errors; the leader's answer.
    pub async fn forward<T: Clone, R>(
        &self,
        request: &Request<T>,
        call: &impl AsyncFn(Channel, Request<T>) -> Result<Response<R>, Status>,
    ) -> Result<Option<R>, Status> {
        let started = std::time::Instant::now();
        let ctx = self.context(request);
        let deadline = ctx.deadline;
        loop {
            let Route::Leader(channel, leader) = self.route(&ctx).await? else { return Ok(None) };
            // The leader gets what is left of the deadline as the call's own, with the caller's
            // metadata, and this member stops waiting then too (a leader that is paused or cut
            // off answers nothing).
            let forward = ctx.forward(request.metadata(), request.get_ref().clone());
            match tokio::time::timeout(ctx.left(), call(channel, forward)).await {
                Err(_) => return Err(self.timed_out(started, "forwarding to the leader").into()),
                Ok(Ok(resp)) => return Ok(Some(resp.into_inner())),
                Ok(Err(status)) if unsent(&status) && tokio::time::Instant::now() < deadline => {
                    let wait = deadline - tokio::time::Instant::now();
                    let _ = self.replica.wait_until(wait, |s| s.leader.is_some_and(|l| l != leader)).await;
                }
                Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                    return Err(self.timed_out(started, "forwarding to the leader").into());
                }
                // Sent, and then the connection broke: etcd's answer when it lost the
                // connection to the leader while waiting.
                Ok(Err(status)) if lost_in_transit(&status) => {
                    tracing::debug!(%status, "a forwarded request was lost in transit");
                    return Err(ServerError::TimeoutConnectionLost.into());
                }
                Ok(Err(status)) => return Err(status),
            }
        }
    }

    /// Serves a request that must be served by the leader: forwards it (`forward`) when
    /// another member leads, else serves it here (`local`). A request refused here because
    /// leadership moved (nothing was appended, so nothing can apply twice) is routed again
    /// until the request timeout. A member that forwarded answers once it has applied the
    /// result itself.
    ///
    /// # Errors
    /// etcd's routing errors; the leader's answer; `local`'s error.
    pub async fn at_leader<T: Clone + Send + Sync, R: Headed, F: Future<Output = Result<R, ServerError>>>(
        &self,
        request: Request<T>,
        forward: impl AsyncFn(Channel, Request<T>) -> Result<Response<R>, Status>,
        local: impl Fn(RequestContext, T) -> F,
    ) -> Result<Response<R>, Status> {
        let ctx = self.context(&request);
        let deadline = ctx.deadline;
        loop {
            if let Some(mut resp) = self.forward(&request, &forward).await? {
                self.caught_up(resp.header().as_ref()).await;
                self.fill(resp.header());
                return Ok(Response::new(resp));
            }
            match local(ctx.clone(), request.get_ref().clone()).await {
                Ok(mut resp) => {
                    self.fill(resp.header());
                    return Ok(Response::new(resp));
                }
                Err(ServerError::NotLeader { .. } | ServerError::NoLeader)
                    if tokio::time::Instant::now() < deadline =>
                {
                    self.next_change(deadline).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A request begun at `started` ran out of time: etcd's error for why.
    pub fn timed_out(&self, started: std::time::Instant, what: &str) -> ServerError {
        self.replica.timed_out(started, what)
    }

    /// Waits for the next change of this member's Raft status (a new leader, a new term, ...),
    /// or `deadline`.
    pub async fn next_change(&self, deadline: tokio::time::Instant) {
        let mut first = true;
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = self.replica.wait_until(wait, |_| !std::mem::replace(&mut first, false)).await;
    }

    /// Waits (up to the request timeout) until this member's store has reached `revision`: a
    /// member that forwarded a write answers, as in etcd, once it has applied it too, so its
    /// own serializable reads see it.
    pub async fn caught_up(&self, header: Option<&ResponseHeader>) {
        let revision = header.map_or(0, |h| h.revision);
        if self.kv.current_revision() >= revision {
            return;
        }
        let kv = &self.kv;
        let _ = self.replica.wait_until(self.request_timeout, |_| kv.current_revision() >= revision).await;
    }

    /// etcd's linearizable read barrier: returns once this member has applied everything
    /// committed before the call, as confirmed by the leader.
    ///
    /// # Errors
    /// etcd's learner, no-leader and timeout errors.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        // Test builds only: `read-barrier=return` serves linearizable reads without the
        // barrier, a known-wrong server the fault suite must catch.
        fail::fail_point!("read-barrier", |_| Ok(()));
        self.not_learner()?;
        if self.replica.leader().is_none() {
            let _ = self.replica.wait_until(self.request_timeout, |s| s.leader.is_some()).await;
        }
        self.replica.read_barrier().await
    }

    /// On the leader, before it answers from its lease table: waits until it has applied
    /// everything committed (at least through the first entry of its term), as etcd 3.5+ waits
    /// for the applied index. A revoke an earlier leader acknowledged is then in the table, so
    /// a keep-alive or time-to-live here cannot contradict it.
    ///
    /// # Errors
    /// etcd's routing errors when this member no longer leads; a timeout.
    pub async fn lease_barrier(&self) -> Result<(), ServerError> {
        self.replica.leader_applied().await
    }

    /// Brings this member's lease table in step with its role: primary (with expiry times)
    /// while it leads. The lease ticker does this too; calls that need the primary table do
    /// it at once rather than wait for a tick.
    pub fn primary_lessor(&self) {
        self.replica.sync_lease_role();
    }

    /// Renews a lease here, at the leader: its TTL, or 0 for a lease that is unknown or
    /// expired (etcd answers a keep-alive so, not with an error).
    ///
    /// # Errors
    /// [`ferrocd_lease::Error::NotPrimary`] when this member no longer leads.
    pub async fn renew(&self, ctx: &RequestContext, id: i64) -> Result<i64, ServerError> {
        self.lease_barrier().await?;
        self.primary_lessor();
        let renewal = self.replica.lessor().lock().renew(id);
        match renewal {
            Ok(renewal) => {
                if renewal.clear_checkpoint {
                    // The checkpointed remaining TTL is stale now: every member drops it.
                    let clear = LeaseCommand::Checkpoint(vec![(id, 0)]);
                    if let Err(e) = self.replica.propose_lease(ctx, clear).await {
                        tracing::warn!(lease = %format!("{id:x}"), error = %e, "cannot clear a lease checkpoint");
                    }
                }
                Ok(renewal.ttl)
            }
            Err(ferrocd_lease::Error::LeaseNotFound) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// The keys attached to lease `id` here (none for an unknown lease).
    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.replica.lessor().lock().time_to_live(id, true).map(|t| t.keys).unwrap_or_default()
    }

    /// Fills the cluster fields of a header the store set the revision of.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or_else(|| self.kv.current_revision(), |h| h.revision);
        *header = self.header(revision);
    }

    /// etcd's size limit on a request that goes through the log.
    pub fn check_size(&self, req: &impl Message) -> Result<(), ServerError> {
        if req.encoded_len() > self.max_request_bytes { Err(ServerError::RequestTooLarge) } else { Ok(()) }
    }

    /// etcd's backend quota: a write that adds data fails once the store is past its quota
    /// (and [`Self::refused`] raises the NOSPACE alarm).
    pub(crate) fn check_quota(&self, req: &QuotaRequest<'_>) -> Result<(), ServerError> {
        let cost = quota_cost(req);
        if cost == 0 {
            return Ok(());
        }
        let size = self.db_size.get(self.kv.engine().as_ref());
        if size.saturating_add(cost) >= self.quota_bytes { Err(ServerError::NoSpace) } else { Ok(()) }
    }

    /// A request refused by its checks: a refusal for space raises this member's NOSPACE alarm
    /// first (through the log, so every member refuses what adds data), as etcd's quota does.
    pub async fn refused(&self, e: ServerError) -> ServerError {
        if matches!(e, ServerError::NoSpace)
            && !self.replica.alarms().active(etcdserverpb::AlarmType::Nospace)
            && let Err(failed) = self.replica.raise_alarm(etcdserverpb::AlarmType::Nospace, self.request_timeout).await
        {
            tracing::warn!(error = %failed, "could not raise the NOSPACE alarm");
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use ferrocd_engine::{Bucket, Engine, MemEngine, WriteBatch};
    use ferrocd_proto::etcdserverpb::RangeRequest;
    use ferrocd_proto::etcdserverpb::kv_client::KvClient;

    use super::{SizeCache, unsent};

    #[tokio::test]
    async fn a_request_to_a_member_that_cannot_be_reached_is_known_unsent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
        let status = KvClient::new(channel).range(RangeRequest::default()).await.unwrap_err();
        assert!(unsent(&status), "{status:?}");
        // The same words from a server that was reached mean nothing.
        assert!(!unsent(&tonic::Status::unavailable("tcp connect error")));
    }

    #[test]
    fn size_cache_follows_the_engine() {
        let bucket = Bucket("key");
        let engine = MemEngine::new(&[bucket]);
        let cache = SizeCache::default();
        let empty = cache.get(&engine);
        let mut batch = WriteBatch::new();
        batch.put(bucket, b"k".to_vec(), vec![0; 4096]);
        engine.write(batch, true).unwrap();
        let grown = engine.size_bytes();
        assert!(grown > empty);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cache.get(&engine) != grown {
            assert!(std::time::Instant::now() < deadline, "the cache never saw the write");
            std::thread::yield_now();
        }
    }
}
