//! etcd's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases.
//!
//! Grants and revokes go through Raft like any write. Keep-alives and time-to-live are the
//! leader's: only its lease table knows expiry times, so followers forward them (a keep-alive
//! is no log entry, as in etcd).

use std::pin::Pin;
use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_lease::{IdGenerator, MAX_LEASE_TTL};
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::lease_server::Lease;
use ferrocd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::{Route, Shared};
use crate::context::{Listener, RequestContext};
use crate::error::ServerError;
use crate::replica::LeaseCommand;

/// The Lease service.
#[derive(Debug)]
pub struct LeaseService<E: Engine> {
    shared: Arc<Shared<E>>,
    ids: Arc<Mutex<IdGenerator>>,
}

impl<E: Engine> LeaseService<E> {
    pub fn new(shared: Arc<Shared<E>>) -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let ids = Arc::new(Mutex::new(IdGenerator::new(shared.member_id, millis)));
        Self { shared, ids }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// Renews lease `id` at the leader: here when this member leads, else forwarded (unless the
/// stream (`stream`: its context) already was). Each renewal has a request timeout of its own.
/// An unknown or expired lease answers TTL 0, as etcd does.
async fn keep_alive_once<E: Engine>(
    shared: &Shared<E>,
    id: i64,
    stream: &RequestContext,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<LeaseKeepAliveResponse, Status> {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + shared.request_timeout;
    let mut ctx = RequestContext { deadline, ..stream.clone() };
    if ctx.listener == Listener::Client {
        // Each renewal is checked at the store's revision now (the stream may be old).
        ctx.caller = shared.auth.resolve(ctx.credential.as_ref());
    }
    // etcd's `checkLeaseRenew`: a user, with WRITE on the lease's keys unless root.
    shared.auth.check(&ctx.caller, |c| {
        c.user()?;
        c.lease_keys(&shared.lease_keys(id))
    })?;
    loop {
        let retry = match shared.route(&ctx).await? {
            Route::Local => match shared.renew(&ctx, id).await {
                Ok(ttl) => {
                    let header = shared.header(shared.kv.current_revision());
                    return Ok(LeaseKeepAliveResponse { header, id, ttl });
                }
                Err(ServerError::Lease(ferrocd_lease::Error::NotPrimary))
                | Err(ServerError::NotLeader { .. } | ServerError::NoLeader) => true,
                Err(e) => return Err(e.into()),
            },
            Route::Leader(channel, _) => {
                let once = futures::stream::once(async move { LeaseKeepAliveRequest { id } });
                let left = ctx.left();
                let sent = async {
                    let request = ctx.forward(metadata, once);
                    let mut responses = LeaseClient::new(channel).lease_keep_alive(request).await?.into_inner();
                    responses.message().await?.ok_or_else(|| ServerError::LeaderChanged.into())
                };
                let Ok(sent) = tokio::time::timeout(left, sent).await else {
                    return Err(shared.timed_out(started, "forwarding a keep-alive to the leader").into());
                };
                match sent {
                    Ok(resp) => {
                        return Ok(LeaseKeepAliveResponse {
                            header: shared.header(resp.header.map_or(0, |h| h.revision)),
                            ..resp
                        });
                    }
                    Err(status) if super::unsent(&status) => true,
                    Err(status) if super::lost_in_transit(&status) => {
                        return Err(ServerError::TimeoutConnectionLost.into());
                    }
                    Err(status) => return Err(status),
                }
            }
        };
        if retry && tokio::time::Instant::now() < deadline {
            shared.next_change(deadline).await;
        } else {
            return Err(shared.timed_out(started, "renewing a lease").into());
        }
    }
}

#[tonic::async_trait]
impl<E: Engine> Lease for LeaseService<E> {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let (shared, ids) = (&*self.shared, &self.ids);
        let local = |ctx: RequestContext, req: LeaseGrantRequest| async move {
            shared.auth.check(&ctx.caller, |c| c.user())?;
            if req.ttl > MAX_LEASE_TTL {
                return Err(ferrocd_lease::Error::TtlTooLarge.into());
            }
            if let Err(e) = shared.check_quota(&crate::services::QuotaRequest::LeaseGrant) {
                return Err(shared.refused(e).await);
            }
            let id = if req.id != 0 {
                req.id
            } else {
                let lessor = shared.replica.lessor().lock();
                lessor.fresh_id(&mut ids.lock())
            };
            let done = shared.replica.propose_lease(&ctx, LeaseCommand::Grant { id, ttl: req.ttl }).await?;
            Ok(LeaseGrantResponse { header: shared.header(done.revision), id, ttl: done.ttl, error: String::new() })
        };
        shared.at_leader(request, async |c, r| LeaseClient::new(c).lease_grant(r).await, local).await
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let shared = &*self.shared;
        let local = |ctx: RequestContext, req: LeaseRevokeRequest| async move {
            // A user, with WRITE on every key of the lease (checked again at apply).
            let check = |c: &crate::auth::Check<'_>| {
                c.user()?;
                c.lease_keys(&shared.lease_keys(req.id))
            };
            shared.authorize(&ctx.caller, check).await?;
            let done = shared.replica.propose_lease(&ctx, LeaseCommand::Revoke(req.id)).await?;
            Ok(LeaseRevokeResponse { header: shared.header(done.revision) })
        };
        shared.at_leader(request, async |c, r| LeaseClient::new(c).lease_revoke(r).await, local).await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        self.shared.not_learner()?;
        let ctx = self.shared.context(&request);
        let (metadata, _, mut inbound) = request.into_parts();
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let resp = keep_alive_once(&shared, req.id, &ctx, &metadata).await;
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let shared = &*self.shared;
        let local = |ctx: RequestContext, req: LeaseTimeToLiveRequest| async move {
            // A user; with the keys, READ on each of them.
            shared.auth.check(&ctx.caller, |c| {
                c.user()?;
                if req.keys { c.read_keys(&shared.lease_keys(req.id)) } else { Ok(()) }
            })?;
            shared.lease_barrier().await?;
            shared.primary_lessor();
            let ttl = shared.replica.lessor().lock().time_to_live(req.id, req.keys);
            let header = shared.header(shared.kv.current_revision());
            Ok(match ttl {
                Some(t) => LeaseTimeToLiveResponse {
                    header,
                    id: req.id,
                    ttl: t.remaining_secs,
                    granted_ttl: t.granted_ttl,
                    keys: t.keys,
                },
                // etcd 3.6: an unknown lease is no error, it has TTL -1.
                None => LeaseTimeToLiveResponse { header, id: req.id, ttl: -1, granted_ttl: 0, keys: Vec::new() },
            })
        };
        shared.at_leader(request, async |c, r| LeaseClient::new(c).lease_time_to_live(r).await, local).await
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let ctx = self.shared.context(&request);
        self.shared.read_barrier().await?;
        let leases = self.shared.replica.lessor().lock().leases();
        // A user; unless root, with READ on every key of every lease (etcd 3.6).
        self.shared.auth.check(&ctx.caller, |c| {
            c.user()?;
            if c.store.is_admin(c.caller) {
                return Ok(());
            }
            leases.iter().try_for_each(|id| c.read_keys(&self.shared.lease_keys(*id)))
        })?;
        Ok(Response::new(LeaseLeasesResponse {
            header: self.shared.header(self.shared.kv.current_revision()),
            leases: leases.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}
