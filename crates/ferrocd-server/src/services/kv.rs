//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_mvcc::{WriteRequest, WriteResponse, validate};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::kv_server::Kv;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use tonic::transport::Channel;

use super::{Headed, Shared};
use crate::error::ServerError;

/// The KV service.
#[derive(Debug)]
pub struct KvService<E: Engine>(pub Arc<Shared<E>>);

impl<E: Engine> KvService<E> {
    /// Serves a write at the leader (see [`Shared::at_leader`]): checks it as etcd does
    /// (`check`, then the caller's permissions) and proposes it.
    async fn write<T: Clone + Send + Sync, R: Headed>(
        &self,
        request: Request<T>,
        forward: impl AsyncFn(Channel, Request<T>) -> Result<Response<R>, Status>,
        check: impl Fn(&T) -> Result<(), ServerError>,
        wrap: impl Fn(T) -> WriteRequest,
        unwrap: impl Fn(WriteResponse) -> Option<R>,
    ) -> Result<Response<R>, Status> {
        let (shared, check, wrap, unwrap) = (&*self.0, &check, &wrap, &unwrap);
        let local = |ctx: crate::context::RequestContext, req: T| async move {
            if let Err(e) = check(&req) {
                return Err(shared.refused(e).await);
            }
            let req = wrap(req);
            let lease_keys = |id| shared.lease_keys(id);
            shared.authorize(&ctx.caller, |c| c.write(&req, &lease_keys)).await?;
            let applied = shared.replica.propose_kv(&ctx, req).await?;
            unwrap(applied.response)
                .ok_or_else(|| ServerError::Storage("the write path answered with another kind of response".into()))
        };
        self.0.at_leader(request, forward, local).await
    }
}

#[tonic::async_trait]
impl<E: Engine> Kv for KvService<E> {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let caller = self.0.context(&request).caller;
        let req = request.into_inner();
        // Serializable reads are served from the local store as it is (learners included);
        // linearizable ones after the read barrier.
        if !req.serializable {
            self.0.read_barrier().await?;
        }
        validate::check_range(&req).map_err(ServerError::from)?;
        self.0.auth.check(&caller, |c| c.range(&req))?;
        let mut resp = self.0.kv.range(&req).map_err(ServerError::from)?;
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let check = |req: &PutRequest| {
            validate::check_put(req)?;
            self.0.check_size(req)?;
            self.0.check_quota(&super::QuotaRequest::Put(req))
        };
        let unwrap = |r| if let WriteResponse::Put(r) = r { Some(r) } else { None };
        self.write(request, async |c, r| KvClient::new(c).put(r).await, check, WriteRequest::Put, unwrap).await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let check = |req: &DeleteRangeRequest| {
            validate::check_delete(req)?;
            self.0.check_size(req)
        };
        let unwrap = |r| if let WriteResponse::DeleteRange(r) = r { Some(r) } else { None };
        let forward = async |c, r| KvClient::new(c).delete_range(r).await;
        self.write(request, forward, check, WriteRequest::DeleteRange, unwrap).await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let check = |req: &TxnRequest| {
            validate::check_txn(req, self.0.max_txn_ops)?;
            self.0.check_size(req)?;
            self.0.check_quota(&super::QuotaRequest::Txn(req))
        };
        let unwrap = |r| if let WriteResponse::Txn(r) = r { Some(r) } else { None };
        self.write(request, async |c, r| KvClient::new(c).txn(r).await, check, WriteRequest::Txn, unwrap).await
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let unwrap = |r| if let WriteResponse::Compact(r) = r { Some(r) } else { None };
        let forward = async |c, r| KvClient::new(c).compact(r).await;
        self.write(request, forward, |_| Ok(()), WriteRequest::Compact, unwrap).await
    }
}
