//! etcd's Maintenance service: Status, HashKV, Defragment and alarm listing are served; the
//! rest answers `Unimplemented` until it is built.

use std::pin::Pin;
use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_proto::etcdserverpb::maintenance_server::Maintenance;
use ferrocd_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse, alarm_request::AlarmAction,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::config::{ETCD_VERSION, STORAGE_VERSION};
use crate::error::ServerError;

/// The Maintenance service.
#[derive(Debug)]
pub struct MaintenanceService<E: Engine>(pub Arc<Shared<E>>);

#[tonic::async_trait]
impl<E: Engine> Maintenance for MaintenanceService<E> {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        self.0.not_learner()?;
        let action = AlarmAction::try_from(request.get_ref().action);
        // Listing alarms is any user's; raising or clearing one is root's.
        if action == Ok(AlarmAction::Get) {
            self.0.user(&request)?
        } else {
            self.0.admin(&request)?
        }
        match action {
            // No alarm is ever raised by this build, so the list is truthfully empty.
            Ok(AlarmAction::Get) => Ok(Response::new(AlarmResponse {
                header: self.0.header(self.0.kv.current_revision()),
                alarms: Vec::new(),
            })),
            _ => Err(ServerError::Unimplemented("alarm activation and deactivation").into()),
        }
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = &self.0;
        s.user(&request)?;
        let size = s.kv.engine().size_bytes() as i64;
        let raft = s.replica.status();
        let mut errors = Vec::new();
        if raft.leader.is_none() {
            errors.push(ServerError::NoLeader.to_string());
        }
        Ok(Response::new(StatusResponse {
            header: s.header(s.kv.current_revision()),
            version: ETCD_VERSION.to_string(),
            db_size: size,
            leader: raft.leader.unwrap_or(0),
            raft_index: raft.committed.max(s.replica.applied_index()),
            raft_term: raft.term,
            raft_applied_index: s.replica.applied_index(),
            errors,
            db_size_in_use: size,
            is_learner: raft.members.learners.contains_key(&s.member_id),
            storage_version: STORAGE_VERSION.to_string(),
            db_size_quota: s.quota_bytes as i64,
            downgrade_info: None,
        }))
    }

    async fn defragment(&self, request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        self.0.admin(&request)?;
        self.0.not_learner()?;
        let kv = Arc::clone(&self.0.kv);
        // An online compaction of every bucket: reads and writes go on meanwhile.
        tokio::task::spawn_blocking(move || {
            for bucket in crate::storage::buckets() {
                kv.engine().compact_bucket(bucket)?;
            }
            Ok::<_, ferrocd_engine::Error>(())
        })
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))?
        .map_err(|e| ServerError::Storage(e.to_string()))?;
        Ok(Response::new(DefragmentResponse { header: self.0.header(self.0.kv.current_revision()) }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.0.admin(&request)?;
        Err(ServerError::Unimplemented("Hash (use HashKV)").into())
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.0.admin(&request)?;
        self.0.not_learner()?;
        let revision = request.into_inner().revision;
        let kv = Arc::clone(&self.0.kv);
        let h = tokio::task::spawn_blocking(move || kv.hash_kv(revision))
            .await
            .map_err(|e| ServerError::Storage(e.to_string()))?
            .map_err(ServerError::from)?;
        Ok(Response::new(HashKvResponse {
            header: self.0.header(self.0.kv.current_revision()),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.revision,
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(&self, request: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0.admin(&request)?;
        Err(ServerError::Unimplemented("Snapshot").into())
    }

    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        let s = &self.0;
        s.admin(&request)?;
        let target = request.into_inner().target_id;
        let raft = s.replica.status();
        if raft.leader != Some(s.member_id) {
            return Err(ServerError::NotLeaderToMove.into());
        }
        if !raft.members.voters.contains_key(&target) {
            return Err(ServerError::BadLeaderTransferee.into());
        }
        if target != s.member_id {
            let deadline = tokio::time::Instant::now() + s.request_timeout;
            s.replica.transfer_leader(target, deadline).await?;
        }
        Ok(Response::new(MoveLeaderResponse { header: s.header(s.kv.current_revision()) }))
    }

    async fn downgrade(&self, request: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        self.0.admin(&request)?;
        Err(ServerError::Unimplemented("Downgrade").into())
    }
}
