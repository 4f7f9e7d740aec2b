//! etcd's Maintenance service: Status, alarms, Hash and HashKV, Defragment, MoveLeader, and
//! snapshots in etcd's format; Downgrade answers `Unimplemented` (see its method).

use std::pin::Pin;
use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::maintenance_server::Maintenance;
use ferrocd_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
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
        let s = &*self.0;
        s.not_learner()?;
        // Listing alarms is any user's (a linearizable read of the applied alarms); raising or
        // clearing one is root's, through the log.
        if AlarmAction::try_from(request.get_ref().action) == Ok(AlarmAction::Get) {
            s.user(&request)?;
            s.read_barrier().await?;
            let alarm = AlarmType::try_from(request.get_ref().alarm).unwrap_or(AlarmType::None);
            let alarms = s.replica.alarms().list(alarm);
            return Ok(Response::new(AlarmResponse { header: s.header(s.kv.current_revision()), alarms }));
        }
        s.admin(&request)?;
        let local = |ctx: crate::context::RequestContext, req: AlarmRequest| async move {
            let alarms = s.replica.propose_alarm(&ctx, req).await?;
            Ok(AlarmResponse { header: None, alarms })
        };
        s.at_leader(request, async |c, r| MaintenanceClient::new(c).alarm(r).await, local).await
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
        // One line per active alarm, as etcd words it.
        errors.extend(s.replica.alarms().texts());
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
        // etcd answers a defragmentation with no header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.0.admin(&request)?;
        let shared = Arc::clone(&self.0);
        let hash = tokio::task::spawn_blocking(move || crate::backup::backend_hash(&shared))
            .await
            .map_err(|e| ServerError::Storage(e.to_string()))??;
        Ok(Response::new(HashResponse { header: self.0.header(self.0.kv.current_revision()), hash }))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        // Another member's corruption check is answered as its Raft messages are, without
        // auth; a client's request (forwarded or not) needs root.
        let ctx = self.0.context(&request);
        if ctx.listener != crate::context::Listener::Peer || ctx.forwarded {
            self.0.admin(&request)?;
        }
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
        let shared = Arc::clone(&self.0);
        // Built from one engine snapshot into a file (memory stays flat however big the
        // store), then streamed; the file is gone once the stream ends, and a crash's leftover
        // is removed at the next start with Raft's own (`tmp-` in the snapshot directory).
        let file = tokio::task::spawn_blocking(move || {
            let dir = shared.data_dir.join("member").join("snap");
            std::fs::create_dir_all(&dir).map_err(|e| ServerError::Storage(format!("{}: {e}", dir.display())))?;
            let file = tempfile::Builder::new()
                .prefix("tmp-client-snapshot-")
                .tempfile_in(&dir)
                .map_err(|e| ServerError::Storage(e.to_string()))?;
            let size = crate::backup::write_snapshot(&shared, file.path())?;
            tracing::info!(size, "sending a snapshot to a client");
            Ok::<_, ServerError>((file, size))
        })
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))??;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_snapshot(file.0, file.1, &tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
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
        // etcd answers a leader transfer with no header, done or not needed.
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }

    async fn downgrade(&self, request: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        use ferrocd_proto::etcdserverpb::downgrade_request::DowngradeAction;
        let s = &*self.0;
        s.admin(&request)?;
        let req = request.into_inner();
        match DowngradeAction::try_from(req.action) {
            // etcd 3.6: cancelling with no downgrade in progress (none ever is) fails, after a
            // read barrier.
            Ok(DowngradeAction::Cancel) => {
                s.read_barrier().await?;
                Err(ServerError::NoInflightDowngrade.into())
            }
            Ok(DowngradeAction::Validate | DowngradeAction::Enable) => {
                let target = downgrade_target(&req.version).ok_or(ServerError::WrongDowngradeVersionFormat)?;
                let current = downgrade_target(ETCD_VERSION).ok_or(ServerError::WrongDowngradeVersionFormat)?;
                if current.1 == 0 || target != (current.0, current.1 - 1) {
                    return Err(ServerError::InvalidDowngradeTarget.into());
                }
                // The one valid target is etcd's previous minor version, whose storage a
                // ferrocd data directory cannot be turned into: a downgrade is a migration
                // back to etcd (a snapshot restored with etcdutl), never an online one.
                Err(ServerError::Unsupported(
                    "downgrade: a ferrocd cluster cannot run an earlier etcd version's storage; migrate back with a snapshot (etcdutl snapshot restore)",
                )
                .into())
            }
            _ => Err(ServerError::UnknownMethod.into()),
        }
    }
}

/// A downgrade target's major and minor version (`3.5`, `3.5.0`, `v3.5.1`); `None` when it is
/// not a version.
fn downgrade_target(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    match parts.next() {
        None => Some((major, minor)),
        Some(patch) if patch.split(['-', '+']).next()?.parse::<u64>().is_ok() && parts.next().is_none() => {
            Some((major, minor))
        }
        Some(_) => None,
    }
}

/// etcd's snapshot chunks.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// Sends the database in `file` as etcd does: 32 KiB chunks with the bytes left after each,
/// then one message holding the SHA-256 of all of them. Stops when the client goes away.
fn stream_snapshot(
    file: tempfile::NamedTempFile,
    size: u64,
    tx: &tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
) {
    use sha2::Digest;
    use std::io::Read;
    let mut reader = std::io::BufReader::with_capacity(SNAPSHOT_CHUNK, file.as_file());
    let mut hasher = sha2::Sha256::new();
    let mut sent = 0u64;
    let version = STORAGE_VERSION.to_string();
    loop {
        let mut blob = vec![0; SNAPSHOT_CHUNK];
        let n = match read_full(&mut reader, &mut blob) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(ServerError::Storage(e.to_string()).into()));
                return;
            }
        };
        if n == 0 {
            break;
        }
        blob.truncate(n);
        hasher.update(&blob);
        sent += n as u64;
        let chunk = SnapshotResponse {
            header: None,
            remaining_bytes: size.saturating_sub(sent),
            blob,
            version: version.clone(),
        };
        if tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
    }
    let digest = SnapshotResponse { header: None, remaining_bytes: 0, blob: hasher.finalize().to_vec(), version };
    let _ = tx.blocking_send(Ok(digest));
    // `file` is removed when dropped here.
    fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}
