//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_mvcc::{WriteRequest, WriteResponse, validate};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::kv_server::Kv;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse, request_op,
};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::error::ServerError;
use crate::write_path::WritePath;

/// The KV service.
#[derive(Debug)]
pub struct KvService<E: Engine, W: WritePath>(pub Arc<Shared<E, W>>);

fn has_puts(ops: &[ferrocd_proto::etcdserverpb::RequestOp]) -> bool {
    ops.iter().any(|op| match &op.request {
        Some(request_op::Request::RequestPut(_)) => true,
        Some(request_op::Request::RequestTxn(t)) => has_puts(&t.success) || has_puts(&t.failure),
        _ => false,
    })
}

impl<E: Engine, W: WritePath> KvService<E, W> {
    async fn write(&self, cmd: WriteRequest) -> Result<WriteResponse, Status> {
        Ok(self.0.writes.propose(cmd).await?.response)
    }
}

fn mismatch() -> Status {
    Status::internal("etcdserver: the write path answered with another kind of response")
}

#[tonic::async_trait]
impl<E: Engine, W: WritePath> Kv for KvService<E, W> {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        // Serializable reads are served from the local store as it is (learners included);
        // linearizable ones after the read barrier.
        if !req.serializable {
            self.0.read_barrier().await?;
        }
        let mut resp = self.0.kv.range(&req).map_err(ServerError::from)?;
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        if let Some(mut resp) = self.0.forward(&request, async |c, r| KvClient::new(c).put(r).await).await? {
            self.0.caught_up(resp.header.as_ref()).await;
            self.0.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let req = request.into_inner();
        validate::check_put(&req).map_err(ServerError::from)?;
        self.0.check_size(&req)?;
        self.0.check_quota(&req)?;
        let WriteResponse::Put(mut resp) = self.write(WriteRequest::Put(req)).await? else { return Err(mismatch()) };
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        if let Some(mut resp) = self.0.forward(&request, async |c, r| KvClient::new(c).delete_range(r).await).await? {
            self.0.caught_up(resp.header.as_ref()).await;
            self.0.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let req = request.into_inner();
        validate::check_delete(&req).map_err(ServerError::from)?;
        self.0.check_size(&req)?;
        let WriteResponse::DeleteRange(mut resp) = self.write(WriteRequest::DeleteRange(req)).await? else {
            return Err(mismatch());
        };
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        if let Some(mut resp) = self.0.forward(&request, async |c, r| KvClient::new(c).txn(r).await).await? {
            self.0.caught_up(resp.header.as_ref()).await;
            self.0.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let req = request.into_inner();
        validate::check_txn(&req, self.0.max_txn_ops).map_err(ServerError::from)?;
        self.0.check_size(&req)?;
        if has_puts(&req.success) || has_puts(&req.failure) {
            self.0.check_quota(&req)?;
        }
        let WriteResponse::Txn(mut resp) = self.write(WriteRequest::Txn(req)).await? else { return Err(mismatch()) };
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        if let Some(mut resp) = self.0.forward(&request, async |c, r| KvClient::new(c).compact(r).await).await? {
            self.0.caught_up(resp.header.as_ref()).await;
            self.0.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let req = request.into_inner();
        let WriteResponse::Compact(mut resp) = self.write(WriteRequest::Compact(req)).await? else {
            return Err(mismatch());
        };
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }
}
