//! etcd's KV API over gRPC (ferrocd's own generated client), as a [`KvApi`] for the shared
//! semantics suite.

use ferrocd_mvcc::testing::{Failure, KvApi};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use ferrocd_types::ErrorCode;
use tonic::transport::Channel;

/// A blocking gRPC client for one endpoint.
pub struct Grpc {
    pub rt: tokio::runtime::Runtime,
    pub kv: KvClient<Channel>,
    pub maintenance: MaintenanceClient<Channel>,
    pub channel: Channel,
}

impl Grpc {
    pub fn connect(endpoint: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let channel =
            rt.block_on(Channel::from_shared(format!("http://{endpoint}")).expect("a URI").connect()).expect("connect");
        let kv =
            KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX).max_encoding_message_size(usize::MAX);
        let maintenance = MaintenanceClient::new(channel.clone());
        Self { rt, kv, maintenance, channel }
    }
}

pub fn failure(status: tonic::Status) -> Failure {
    Failure {
        code: ErrorCode::from_i32(status.code() as i32).unwrap_or(ErrorCode::Unknown),
        message: status.message().to_string(),
    }
}

impl KvApi for Grpc {
    fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, Failure> {
        self.rt.block_on(self.kv.range(req)).map(tonic::Response::into_inner).map_err(failure)
    }
    fn put(&mut self, req: PutRequest) -> Result<PutResponse, Failure> {
        self.rt.block_on(self.kv.put(req)).map(tonic::Response::into_inner).map_err(failure)
    }
    fn delete_range(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, Failure> {
        self.rt.block_on(self.kv.delete_range(req)).map(tonic::Response::into_inner).map_err(failure)
    }
    fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, Failure> {
        self.rt.block_on(self.kv.txn(req)).map(tonic::Response::into_inner).map_err(failure)
    }
    fn compact(&mut self, req: CompactionRequest) -> Result<CompactionResponse, Failure> {
        self.rt.block_on(self.kv.compact(req)).map(tonic::Response::into_inner).map_err(failure)
    }
}
