//! Maintenance: [`Client::status`], [`Client::alarms`], [`Client::alarm`],
//! [`Client::defragment`], [`Client::hash`], [`Client::hash_kv`], [`Client::move_leader`], and
//! [`Client::snapshot_to_file`] (a backup in etcd's format, its checksum verified).
//!
//! Status, defragmentation, hashes and snapshots are answered by the member asked: these
//! methods take the endpoint to ask (one of [`Client::endpoints`]).
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! let endpoint = client.endpoints()[0].clone();
//! let status = client.status(&endpoint).await?;
//! println!("leader {} at raft index {}", status.leader, status.raft_index);
//! let path = std::env::temp_dir().join(format!("backup-{}.db", std::process::id()));
//! let size = client.snapshot_to_file(&endpoint, &path, |saved| println!("{saved} bytes")).await?;
//! assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
//! # std::fs::remove_file(&path).unwrap();
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use std::io::Write as _;
use std::path::Path;

use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, StatusRequest,
    StatusResponse,
};
use sha2::Digest as _;
use tonic::transport::Channel;

use crate::{Client, Error, Repeat, Result};

impl Client {
    /// The channel of `endpoint`, which must be one of this client's.
    fn endpoint(&self, endpoint: &str) -> Result<Channel> {
        self.inner
            .endpoints
            .iter()
            .find(|(url, _)| url == endpoint)
            .map(|(_, channel)| channel.clone())
            .ok_or_else(|| Error::InvalidArgs(format!("{endpoint} is not one of this client's endpoints")))
    }

    /// Calls `endpoint` alone (no failover: the answer is that member's), with the deadline
    /// and token of every call.
    async fn call_at<T, R, F, Fut>(&self, endpoint: &str, message: T, f: F) -> Result<R>
    where
        F: FnOnce(Channel, tonic::Request<T>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let channel = self.endpoint(endpoint)?;
        let deadline = tokio::time::Instant::now() + self.options().timeout;
        let request = self.request(message, Some(deadline));
        match tokio::time::timeout_at(deadline, f(channel, request)).await {
            Ok(reply) => Ok(reply?.into_inner()),
            Err(_) => Err(Error::Grpc(tonic::Status::deadline_exceeded("no answer before the deadline"))),
        }
    }

    /// The status of the member at `endpoint`.
    ///
    /// # Errors
    /// The member is unreachable or refuses.
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse> {
        self.call_at(endpoint, StatusRequest {}, |ch, r| async move { MaintenanceClient::new(ch).status(r).await })
            .await
    }

    /// Every active alarm of the cluster.
    ///
    /// # Errors
    /// An unreachable cluster.
    pub async fn alarms(&self) -> Result<Vec<AlarmMember>> {
        Ok(self.alarm_response(AlarmAction::Get, AlarmType::None, 0).await?.alarms)
    }

    /// Raises (`Activate`) or clears (`Deactivate`) `alarm` for member `member_id`; the alarms
    /// it changed.
    ///
    /// # Errors
    /// etcd's (root only when auth is on); an unreachable cluster.
    pub async fn alarm(&self, action: AlarmAction, alarm: AlarmType, member_id: u64) -> Result<Vec<AlarmMember>> {
        Ok(self.alarm_response(action, alarm, member_id).await?.alarms)
    }

    /// [`Client::alarm`]'s whole answer, header included (`Get` lists every alarm).
    ///
    /// # Errors
    /// etcd's (root only when auth is on); an unreachable cluster.
    pub async fn alarm_response(&self, action: AlarmAction, alarm: AlarmType, member_id: u64) -> Result<AlarmResponse> {
        let request = AlarmRequest { action: action as i32, member_id, alarm: alarm as i32 };
        self.call(request, Repeat::Idempotent, |ch, r| async move { MaintenanceClient::new(ch).alarm(r).await }).await
    }

    /// Defragments the backend of the member at `endpoint`.
    ///
    /// # Errors
    /// The member is unreachable or refuses.
    pub async fn defragment(&self, endpoint: &str) -> Result<DefragmentResponse> {
        self.call_at(
            endpoint,
            DefragmentRequest {},
            |ch, r| async move { MaintenanceClient::new(ch).defragment(r).await },
        )
        .await
    }

    /// The hash of the whole backend of the member at `endpoint`.
    ///
    /// # Errors
    /// The member is unreachable or refuses.
    pub async fn hash(&self, endpoint: &str) -> Result<HashResponse> {
        self.call_at(endpoint, HashRequest {}, |ch, r| async move { MaintenanceClient::new(ch).hash(r).await }).await
    }

    /// The hash of the keys and their history up to `revision` (0: now) on the member at
    /// `endpoint`; equal revisions give equal hashes on every healthy member.
    ///
    /// # Errors
    /// etcd's ([`crate::EtcdError::Compacted`], [`crate::EtcdError::FutureRev`]); the member is
    /// unreachable.
    pub async fn hash_kv(&self, endpoint: &str, revision: i64) -> Result<HashKvResponse> {
        self.call_at(endpoint, HashKvRequest { revision }, |ch, r| async move {
            MaintenanceClient::new(ch).hash_kv(r).await
        })
        .await
    }

    /// Hands leadership to member `target`; `endpoint` must be the leader's.
    ///
    /// # Errors
    /// etcd's: [`crate::EtcdError::NotLeader`], [`crate::EtcdError::BadLeaderTransferee`].
    pub async fn move_leader(&self, endpoint: &str, target: u64) -> Result<MoveLeaderResponse> {
        self.call_at(endpoint, MoveLeaderRequest { target_id: target }, |ch, r| async move {
            MaintenanceClient::new(ch).move_leader(r).await
        })
        .await
    }

    /// Saves a snapshot of the member at `endpoint` to `path` as `etcdctl snapshot save` does:
    /// streamed into `<path>.part`, its SHA-256 trailer checked, fsynced, then renamed to
    /// `path`. `progress` is told the bytes saved after each chunk. The size saved.
    ///
    /// # Errors
    /// The member is unreachable or refuses; the stream ends early or its checksum does not
    /// match (nothing is left at `path` then); the file cannot be written.
    pub async fn snapshot_to_file(&self, endpoint: &str, path: &Path, mut progress: impl FnMut(u64)) -> Result<u64> {
        let channel = self.endpoint(endpoint)?;
        let io = |context: String| move |source| Error::Io { context, source };
        let part = path.with_extension("part");
        let mut file = std::fs::File::create(&part).map_err(io(format!("creating {}", part.display())))?;
        let request = self.request(SnapshotRequest {}, None);
        let result = async {
            let mut stream = MaintenanceClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .snapshot(request)
                .await?
                .into_inner();
            let mut hasher = sha2::Sha256::new();
            let mut saved = 0u64;
            let mut last: Vec<u8> = Vec::new();
            while let Some(message) = stream.message().await? {
                // The last message is the checksum of everything before it.
                if !last.is_empty() {
                    hasher.update(&last);
                    file.write_all(&last).map_err(io(format!("writing {}", part.display())))?;
                    saved += last.len() as u64;
                    progress(saved);
                }
                last = message.blob;
            }
            if last.as_slice() != hasher.finalize().as_slice() {
                return Err(Error::Snapshot("its SHA-256 does not match its data".into()));
            }
            // etcdctl keeps the trailer in the file (etcdutl checks it on restore).
            file.write_all(&last).map_err(io(format!("writing {}", part.display())))?;
            saved += last.len() as u64;
            file.sync_all().map_err(io(format!("syncing {}", part.display())))?;
            Ok(saved)
        }
        .await;
        match result {
            Ok(saved) => {
                std::fs::rename(&part, path).map_err(io(format!("renaming {}", part.display())))?;
                Ok(saved)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                Err(e)
            }
        }
    }
}
