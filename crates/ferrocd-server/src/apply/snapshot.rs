//! Whole-state images for Raft snapshots: written as an engine checkpoint, installed into the
//! live engine in bounded batches, and finished on the next start when a crash interrupted the
//! install.

use std::io;
use std::path::{Path, PathBuf};

use ferrocd_engine::{Bucket, Engine, Scan, WriteBatch};
use ferrocd_lease::LEASE_BUCKET;
use ferrocd_mvcc::{KEY_BUCKET, KvStore, META_BUCKET};

use super::membership::{CLUSTER_ID, MEMBER_PREFIX};
use super::{RAFT_STATE, io_error};
use crate::storage::{self, APPLIED_INDEX, SERVER_BUCKET};

/// Present while a snapshot is being installed: the directory it is installed from.
const INSTALLING: &[u8] = b"installing_snapshot";
/// The buckets a snapshot replaces (the Raft log's are Raft's own).
const REPLICATED: &[Bucket] = &[
    KEY_BUCKET,
    META_BUCKET,
    LEASE_BUCKET,
    SERVER_BUCKET,
    ferrocd_auth::AUTH_BUCKET,
    ferrocd_auth::USERS_BUCKET,
    ferrocd_auth::ROLES_BUCKET,
    super::alarm::ALARM_BUCKET,
];
/// The most bytes written to the engine in one batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Whether a key of the server bucket is replicated state (the member's own IDs are not).
fn replicated_server_key(key: &[u8]) -> bool {
    key == RAFT_STATE || key == APPLIED_INDEX || key == CLUSTER_ID || key.starts_with(MEMBER_PREFIX)
}

/// Finishes a snapshot install a crash interrupted, before the state is read.
///
/// # Errors
/// Engine failures; the snapshot to finish installing is gone.
pub(super) fn recover<E: Engine>(kv: &KvStore<E>) -> io::Result<()> {
    let engine = kv.engine();
    if let Some(dir) = engine.get(SERVER_BUCKET, INSTALLING).map_err(io_error)? {
        let dir = PathBuf::from(String::from_utf8_lossy(&dir).into_owned());
        tracing::warn!(dir = %dir.display(), "finishing a snapshot install a crash interrupted");
        install_from(&**engine, &dir)?;
        kv.reload().map_err(io_error)?;
    }
    Ok(())
}

/// Writes a checkpoint of the whole engine in place of the empty directory `dir` (cheap: hard
/// links on RocksDB), and answers the Raft state blob read back from it: exactly its point.
pub(super) fn write<E: Engine>(engine: &E, dir: &Path) -> io::Result<Vec<u8>> {
    std::fs::remove_dir(dir)?;
    engine.checkpoint(dir).map_err(io_error)?;
    let image = E::open_checkpoint(dir, &storage::buckets()).map_err(io_error)?;
    Ok(image.get(SERVER_BUCKET, RAFT_STATE).map_err(io_error)?.unwrap_or_default())
}

/// Replaces the replicated state of `kv` with the image in `dir`. Readers wait meanwhile: none
/// sees the keyspace half replaced.
pub(super) fn install<E: Engine>(kv: &KvStore<E>, dir: &Path) -> io::Result<()> {
    let engine = kv.engine();
    // A snapshot that does not open is refused before anything is changed.
    drop(E::open_checkpoint(dir, &storage::buckets()).map_err(io_error)?);
    let mut mark = WriteBatch::new();
    mark.put(SERVER_BUCKET, INSTALLING, dir.to_string_lossy().as_bytes().to_vec());
    engine.write(mark, true).map_err(io_error)?;
    kv.replace_contents(|| install_from(&**engine, dir)).map_err(io_error)?
}

/// Replaces the replicated state in `engine` with the checkpoint in `dir`, in bounded batches;
/// the last batch clears the install mark. Idempotent, so a crash midway is finished on open.
fn install_from<E: Engine>(engine: &E, dir: &Path) -> io::Result<()> {
    let image = E::open_checkpoint(dir, &storage::buckets()).map_err(io_error)?;
    let mut batch = WriteBatch::new();
    for bucket in REPLICATED.iter().filter(|b| **b != SERVER_BUCKET) {
        batch.delete_range(*bucket, Vec::new(), vec![0xff; 64]);
    }
    engine
        .scan(SERVER_BUCKET, &[], None, false, &mut |k, _| {
            if replicated_server_key(k) {
                batch.delete(SERVER_BUCKET, k.to_vec());
            }
            Ok(Scan::Continue)
        })
        .map_err(io_error)?;
    for bucket in REPLICATED {
        let mut failed = None;
        image
            .scan(*bucket, &[], None, false, &mut |k, v| {
                if *bucket == SERVER_BUCKET && !replicated_server_key(k) {
                    return Ok(Scan::Continue);
                }
                batch.put(*bucket, k.to_vec(), v.to_vec());
                if batch.payload_bytes() >= INSTALL_BATCH_BYTES
                    && let Err(e) = engine.write(std::mem::take(&mut batch), false)
                {
                    failed = Some(e);
                    return Ok(Scan::Stop);
                }
                Ok(Scan::Continue)
            })
            .map_err(io_error)?;
        if let Some(e) = failed {
            return Err(io_error(e));
        }
    }
    batch.delete(SERVER_BUCKET, INSTALLING);
    engine.write(batch, true).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use ferrocd_engine::{Engine, ReadView, WriteBatch};
    use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction as Action;
    use ferrocd_proto::etcdserverpb::{AlarmType, LeaseGrantRequest, PutRequest, RangeRequest};
    use ferrocd_raft::Apply;

    use super::super::testing::Fixture;
    use super::{INSTALLING, SERVER_BUCKET};
    use crate::entry::{MemberAttrs, entry::Command};

    fn put(f: &mut Fixture, key: &str, value: &str) {
        let req = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        f.apply(Command::Put(req)).unwrap();
    }

    fn value(f: &Fixture, key: &str) -> Option<Vec<u8>> {
        let resp = f.applier.kv().range(&RangeRequest { key: key.into(), ..Default::default() }).unwrap();
        resp.kvs.first().map(|kv| kv.value.clone())
    }

    /// A leader's state with a key, a lease and a member, and its image in `dir`.
    fn leader_image(dir: &std::path::Path) -> (Fixture, Vec<u8>) {
        let mut leader = Fixture::new();
        put(&mut leader, "a", "1");
        leader.apply(Command::LeaseGrant(LeaseGrantRequest { id: 3, ttl: 60 })).unwrap();
        let attrs = MemberAttrs { id: 9, name: "n".into(), client_urls: vec![], cluster_id: 55 };
        leader.apply(Command::MemberAttrs(attrs)).unwrap();
        std::fs::create_dir(dir).unwrap();
        let blob = leader.applier.snapshot(dir).unwrap();
        (leader, blob)
    }

    #[test]
    fn an_installed_image_replaces_the_replicated_state_and_keeps_the_members_own() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("snap");
        let (leader, blob) = leader_image(&dir);
        assert_eq!(blob, b"state 3");
        // The follower has a key of its own history, and its own identity records.
        let mut follower = Fixture::new();
        put(&mut follower, "b", "2");
        // ... and a user and an alarm the leader's state does not have.
        let user = ferrocd_proto::etcdserverpb::AuthUserAddRequest { name: "gone".into(), ..Default::default() };
        follower.apply(Command::UserAdd(user)).unwrap();
        follower.apply(Command::Alarm(super::super::alarm::request(Action::Activate, 11, AlarmType::Nospace))).unwrap();
        crate::storage::identity(&*follower.engine, (11, 12)).unwrap();
        follower.applier.install(&dir).unwrap();
        assert_eq!(value(&follower, "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(value(&follower, "b"), None);
        assert_eq!(follower.applier.kv().current_revision(), leader.applier.kv().current_revision());
        assert!(follower.applier.lessor().lock().exists(3));
        assert_eq!(follower.applier.cluster_id(), 55);
        assert_eq!(follower.applier.applied_index(), 3);
        assert_eq!(follower.applier.raft_state().unwrap(), Some(b"state 3".to_vec()));
        assert_eq!(crate::storage::stored_identity(&*follower.engine).unwrap(), Some((11, 12)));
        assert_eq!(follower.engine.get(SERVER_BUCKET, INSTALLING).unwrap(), None);
        assert!(follower.applier.auth().store().user("gone").is_err(), "records the image lacks are removed");
        assert!(follower.applier.alarms().list(AlarmType::None).is_empty());
    }

    #[test]
    fn an_install_a_crash_interrupted_is_finished_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("snap");
        let (_leader, _) = leader_image(&dir);
        let mut follower = Fixture::new();
        put(&mut follower, "b", "2");
        // The crash came right after the mark was written.
        let mut mark = WriteBatch::new();
        mark.put(SERVER_BUCKET, INSTALLING, dir.to_string_lossy().as_bytes().to_vec());
        follower.engine.write(mark, true).unwrap();
        let reopened = Fixture::on(follower.engine.clone());
        assert_eq!(value(&reopened, "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(value(&reopened, "b"), None);
        assert_eq!(reopened.applier.applied_index(), 3);
    }

    #[test]
    fn an_image_that_does_not_open_is_refused_before_anything_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut follower = Fixture::new();
        put(&mut follower, "b", "2");
        assert!(follower.applier.install(tmp.path()).is_err());
        assert_eq!(value(&follower, "b").as_deref(), Some(&b"2"[..]));
        assert_eq!(follower.engine.get(SERVER_BUCKET, INSTALLING).unwrap(), None);
    }
}
