//! The replicated state machine: every member applies the Raft log's [`Entry`]s here, in log
//! order, and the proposer answers from its own apply.
//!
//! [`Applier`] decodes an entry, checks its format version, and hands its command to the
//! applier of its domain — [`kv`] (the keyspace, keeping leases' key attachments in step),
//! [`lease`] (grant, revoke, checkpoint), [`membership`] (members' published attributes and the
//! cluster ID); auth joins as a fourth — with one engine batch per entry that also carries the
//! entry's Raft state and index. So after a crash the store sits at an entry boundary and Raft
//! resumes after the last applied entry, never re-applying or skipping one. The log and the
//! store share one engine: one write-ahead log orders both, and the log's group fsync also
//! makes the applied effects durable. [`snapshot`] writes and installs whole-state images.
//!
//! Only this module and its children write engine batches for the replicated state (a tidy
//! rule holds it so).

mod alarm;
mod auth;
mod kv;
mod lease;
mod membership;
mod snapshot;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrocd_engine::{Engine, WriteBatch};
use ferrocd_lease::Lessor;
use ferrocd_mvcc::{KvStore, WriteRequest};
use ferrocd_proto::mvccpb::Event;
use ferrocd_raft::{Apply, Committed, Payload};
use ferrocd_watch::Options as WatchOptions;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::oneshot;

pub use alarm::{ALARM_BUCKET, Alarms, request as alarm_request};
pub use auth::AuthApplied;
pub use lease::LeaseSetup;
pub use membership::MemberAttrs;

use crate::auth::Auth;
use crate::entry::{Entry, Header, entry::Command};
use crate::error::ServerError;
use crate::history::{Hub, StoreHistory};
use crate::replica::LeaseApplied;
use crate::storage::{self, APPLIED_INDEX, SERVER_BUCKET};

/// The Raft state blob of the last applied entry.
const RAFT_STATE: &[u8] = b"raft_state";

/// What an applied command answers, by domain.
#[derive(Debug)]
pub enum Reply {
    /// A keyspace change.
    Kv(ferrocd_mvcc::Applied),
    /// A lease command: the granted TTL (grant) and the store revision after it.
    Lease(LeaseApplied),
    /// An auth command (with the token an Authenticate issued).
    Auth(AuthApplied),
    /// An alarm request: the alarms it raised or cleared, or the ones it listed.
    Alarms(Vec<ferrocd_proto::etcdserverpb::AlarmMember>),
    /// A command that answers nothing but that it was applied (a member's attributes).
    Done,
}

/// The answer of an applied command to the member that proposed it.
#[derive(Debug)]
pub struct Outcome {
    result: Result<Reply, ServerError>,
    /// For a physical compaction: resolves when this member's compaction job has run.
    compacted: Option<oneshot::Receiver<Result<(), ferrocd_mvcc::Error>>>,
}

impl Outcome {
    fn done(result: Result<Reply, ServerError>) -> Self {
        Self { result, compacted: None }
    }

    /// The applied result, once a physical compaction asked for has finished.
    ///
    /// # Errors
    /// The refusal of the command; a compaction that failed.
    pub async fn finish(self) -> Result<Reply, ServerError> {
        let reply = self.result?;
        if let Some(done) = self.compacted {
            done.await.map_err(|_| ServerError::Stopped)??;
        }
        Ok(reply)
    }
}

/// One entry being applied: the engine batch it commits with (its Raft state and index
/// already in it) and the watch events it produced.
struct Step<'a, 'b> {
    entry: &'a Committed<'b>,
    record: WriteBatch,
    events: &'a mut Vec<(i64, Vec<Event>)>,
}

impl<'a, 'b> Step<'a, 'b> {
    fn new(entry: &'a Committed<'b>, events: &'a mut Vec<(i64, Vec<Event>)>) -> Self {
        Self { entry, record: Self::record(entry), events }
    }

    /// The entry's record alone: its Raft state and index, for a command refused or with
    /// nothing else to store.
    fn record(entry: &Committed<'_>) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(SERVER_BUCKET, RAFT_STATE, entry.raft_state);
        batch.put(SERVER_BUCKET, APPLIED_INDEX, entry.index.to_be_bytes());
        batch
    }
}

/// A storage failure: the member stops applying.
fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// etcd's keyspace, leases and membership records as a Raft state machine.
#[derive(Debug)]
pub struct Applier<E: Engine> {
    kv: Arc<KvStore<E>>,
    /// Gets every applied revision's events, once they are visible.
    hub: Hub<E>,
    /// The lease table; changed only by applied entries, except expiry times (the leader's).
    lessor: Mutex<Lessor>,
    lease_setup: LeaseSetup,
    /// Users, roles, permissions and tokens; changed only here, read by the services.
    auth: Arc<Auth>,
    /// The active alarms; changed only here, read by the services.
    alarms: Arc<Alarms>,
    members: membership::Members,
    applied: AtomicU64,
}

impl<E: Engine> Applier<E> {
    /// The state machine over `kv`; a snapshot install a crash interrupted is finished first.
    /// `cluster_id` is used until the log records one. `auth` is loaded from `kv`'s engine
    /// (see [`Self::load_auth`]).
    ///
    /// # Errors
    /// Engine failures; a snapshot to finish installing that is gone.
    pub fn open(
        kv: Arc<KvStore<E>>,
        cluster_id: u64,
        watch: WatchOptions,
        lease_setup: LeaseSetup,
        auth: Arc<Auth>,
    ) -> io::Result<Self> {
        snapshot::recover(&kv)?;
        let engine = Arc::clone(kv.engine());
        *auth.store_mut() = Self::load_auth(&kv)?;
        Ok(Self {
            auth,
            alarms: Arc::new(Alarms::load(&*engine)?),
            members: membership::Members::open(&*engine, cluster_id)?,
            applied: AtomicU64::new(storage::read_u64(&*engine, APPLIED_INDEX).map_err(io_error)?.unwrap_or(0)),
            hub: Hub::new(StoreHistory(Arc::clone(&kv)), kv.current_revision(), watch),
            lessor: Mutex::new(lease::load(&kv, &lease_setup)?),
            lease_setup,
            kv,
        })
    }

    pub fn kv(&self) -> &Arc<KvStore<E>> {
        &self.kv
    }

    /// The auth store as `kv`'s engine holds it.
    ///
    /// # Errors
    /// Engine failures; undecodable records.
    pub fn load_auth(kv: &KvStore<E>) -> io::Result<ferrocd_auth::AuthStore> {
        ferrocd_auth::AuthStore::load(&**kv.engine()).map_err(io_error)
    }

    /// The member's auth state.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// The active alarms.
    pub fn alarms(&self) -> &Arc<Alarms> {
        &self.alarms
    }

    /// The member's watch hub.
    pub fn hub(&self) -> &Hub<E> {
        &self.hub
    }

    /// The member's lease table.
    pub fn lessor(&self) -> &Mutex<Lessor> {
        &self.lessor
    }

    /// Makes the lease table primary when this member leads (every lease's expiry extended
    /// by an election timeout, so none expires early because leadership moved), and
    /// non-primary when it does not.
    pub fn sync_lease_role(&self, leader: bool) {
        let mut lessor = self.lessor.lock();
        if leader && !lessor.is_primary() {
            lessor.promote(self.lease_setup.extend);
        } else if !leader && lessor.is_primary() {
            lessor.demote();
        }
    }

    pub fn cluster_id(&self) -> u64 {
        self.members.cluster_id()
    }

    /// The index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The attributes every member published, by ID.
    ///
    /// # Errors
    /// Engine failures; undecodable records.
    pub fn member_attrs(&self) -> io::Result<std::collections::BTreeMap<u64, MemberAttrs>> {
        membership::attrs(&**self.kv.engine())
    }

    /// Applies one entry; the events of a change are added to `events` (for watchers).
    fn apply_one(&self, entry: &Committed<'_>, events: &mut Vec<(i64, Vec<Event>)>) -> io::Result<Option<Outcome>> {
        let engine = self.kv.engine();
        let Payload::Command(bytes) = entry.payload else {
            // Membership lives in the Raft state blob; noops change nothing else.
            engine.write(Step::record(entry), false).map_err(io_error)?;
            return Ok(None);
        };
        let (command, header) = decode(bytes, entry.index)?;
        let mut step = Step::new(entry, events);
        if let Err(refused) = auth::authorize(&self.auth, &self.lessor, &header, &command) {
            return auth::refuse(&self.kv, &step, refused).map(Some);
        }
        if let Some(refused) = self.alarms.refusal(&command) {
            return auth::refuse(&self.kv, &step, refused).map(Some);
        }
        let outcome = match command {
            Command::Put(r) => self.write(WriteRequest::Put(r), step)?,
            Command::DeleteRange(r) => self.write(WriteRequest::DeleteRange(r), step)?,
            Command::Txn(r) => self.write(WriteRequest::Txn(r), step)?,
            Command::DeleteKeys(list) => self.write(WriteRequest::DeleteKeys(list.keys), step)?,
            Command::Compact(r) => {
                // A compaction must not overtake unpublished writes: readers would meet its
                // compacted revision while the revisions below it are not visible to them yet.
                self.kv.publish();
                self.write(WriteRequest::Compact(r), step)?
            }
            Command::MemberAttrs(attrs) => {
                self.members.publish(&**engine, &attrs, &mut step.record)?;
                engine.write(step.record, false).map_err(io_error)?;
                Outcome::done(Ok(Reply::Done))
            }
            Command::LeaseGrant(r) => lease::grant(&self.kv, &mut self.lessor.lock(), &r, step)?,
            Command::LeaseRevoke(r) => {
                // Tests: a member slow to apply a revoke it has committed.
                fail::fail_point!("apply-lease-revoke");
                lease::revoke(&self.kv, &mut self.lessor.lock(), &r, step)?
            }
            Command::LeaseCheckpoint(r) => lease::checkpoint(&self.kv, &mut self.lessor.lock(), &r, step)?,
            Command::Alarm(r) => alarm::apply(&self.kv, &self.alarms, &r, step)?,
            command => auth::apply(&self.kv, &self.auth, command, step)?,
        };
        Ok(Some(outcome))
    }

    /// Applies a keyspace command; a physical compaction answers once it has run here.
    fn write(&self, request: WriteRequest, step: Step<'_, '_>) -> io::Result<Outcome> {
        let physical = matches!(&request, WriteRequest::Compact(c) if c.physical);
        let mut applied = {
            let mut lessor = self.lessor.lock();
            match kv::apply(&self.kv, &mut lessor, request, step.record, step.events)? {
                Ok(applied) => applied,
                Err(refused) => {
                    // A refused request changes nothing but still consumes its entry.
                    self.kv.engine().write(Step::record(step.entry), false).map_err(io_error)?;
                    return Ok(Outcome::done(Err(refused.into())));
                }
            }
        };
        let compacted = match applied.compaction.take() {
            Some(job) => {
                // Every member runs its own compaction, off the apply thread.
                self.kv.publish();
                Some(kv::compact(Arc::clone(&self.kv), job)?).filter(|_| physical)
            }
            None => None,
        };
        Ok(Outcome { result: Ok(Reply::Kv(applied)), compacted })
    }
}

/// Decodes the command of the entry at `index`.
///
/// # Errors
/// An entry that does not decode, is of a newer format version, or carries a command this
/// member does not know: applying stops rather than misapply or skip it.
fn decode(bytes: &[u8], index: u64) -> io::Result<(Command, Header)> {
    let entry = Entry::decode(bytes).map_err(|e| io_error(format!("log entry {index} does not decode: {e}")))?;
    if entry.version > crate::entry::VERSION {
        return Err(io_error(format!(
            "log entry {index} is of format version {} (this member knows up to {}): upgrade this member",
            entry.version,
            crate::entry::VERSION
        )));
    }
    let command = entry.command.ok_or_else(|| {
        io_error(format!("log entry {index} carries a command this member does not know: upgrade this member"))
    })?;
    Ok((command, entry.header.unwrap_or_default()))
}

impl<E: Engine> Apply for Applier<E> {
    type Response = Outcome;

    fn apply(&self, entries: &[Committed<'_>]) -> io::Result<Vec<Option<Outcome>>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut events = Vec::new();
        for entry in entries {
            out.push(self.apply_one(entry, &mut events)?);
        }
        // Committed entries may be shown before their effects reach the disk here: a crash
        // re-applies them from the log.
        self.kv.publish();
        // Watchers get revisions once readers can see them; the hub never waits for them.
        for (revision, events) in events {
            self.hub.notify(revision, events);
        }
        if let Some(last) = entries.last() {
            self.applied.store(last.index, Ordering::Release);
        }
        Ok(out)
    }

    fn raft_state(&self) -> io::Result<Option<Vec<u8>>> {
        self.kv.engine().get(SERVER_BUCKET, RAFT_STATE).map_err(io_error)
    }

    fn snapshot(&self, dir: &Path) -> io::Result<Vec<u8>> {
        snapshot::write(&**self.kv.engine(), dir)
    }

    fn install(&self, dir: &Path) -> io::Result<()> {
        snapshot::install(&self.kv, dir)?;
        self.hub.reset(self.kv.current_revision());
        {
            let mut lessor = self.lessor.lock();
            let primary = lessor.is_primary();
            *lessor = lease::load(&self.kv, &self.lease_setup)?;
            if primary {
                lessor.promote(self.lease_setup.extend);
            }
        }
        *self.auth.store_mut() = Self::load_auth(&self.kv)?;
        let engine = self.kv.engine();
        self.alarms.reload(&**engine)?;
        self.members.reload(&**engine)?;
        self.applied
            .store(storage::read_u64(&**engine, APPLIED_INDEX).map_err(io_error)?.unwrap_or(0), Ordering::Release);
        tracing::info!(
            applied_index = self.applied_index(),
            revision = self.kv.current_revision(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! An applier on [`MemEngine`], fed entries as Raft would.

    use std::sync::Arc;

    use ferrocd_engine::MemEngine;
    use ferrocd_mvcc::{KvStore, Options};
    use ferrocd_raft::{Apply, Committed, Payload};
    use prost::Message;

    use super::{Applier, LeaseSetup, Outcome, Reply};
    use crate::entry::{Entry, entry::Command};
    use crate::error::ServerError;

    pub(crate) struct Fixture {
        pub applier: Applier<MemEngine>,
        pub engine: Arc<MemEngine>,
        pub index: u64,
    }

    impl Fixture {
        pub fn new() -> Self {
            Self::on(Arc::new(MemEngine::new(&crate::storage::buckets())))
        }

        /// An applier opened on `engine` (as after a restart).
        pub fn on(engine: Arc<MemEngine>) -> Self {
            let kv = Arc::new(KvStore::open(Arc::clone(&engine), Options::default()).unwrap());
            let setup = LeaseSetup { options: ferrocd_lease::Options::default(), extend: std::time::Duration::ZERO };
            let auth = crate::auth::Auth::new(
                ferrocd_auth::AuthStore::default(),
                &ferrocd_auth::TokenOptions::Simple,
                std::time::Duration::from_secs(300),
                4,
            )
            .unwrap();
            let applier = Applier::open(kv, 7, ferrocd_watch::Options::default(), setup, Arc::new(auth)).unwrap();
            let index = applier.applied_index();
            Self { applier, engine, index }
        }

        /// Applies `bytes` as the next entry.
        pub fn apply_bytes(&mut self, bytes: &[u8]) -> std::io::Result<Option<Outcome>> {
            self.index += 1;
            let state = format!("state {}", self.index).into_bytes();
            let entry = Committed { index: self.index, term: 1, payload: Payload::Command(bytes), raft_state: &state };
            Ok(self.applier.apply(&[entry])?.pop().flatten())
        }

        /// Applies `command` as the next entry (the server's own) and answers its reply.
        pub fn apply(&mut self, command: Command) -> Result<Reply, ServerError> {
            let ctx = crate::context::RequestContext::internal(std::time::Duration::from_secs(5));
            self.apply_with(command, &ctx)
        }

        /// Applies `command` as a client's request, made by `caller`.
        pub fn apply_as(
            &mut self,
            command: Command,
            caller: Option<ferrocd_auth::AuthInfo>,
        ) -> Result<Reply, ServerError> {
            let mut ctx = crate::context::RequestContext::internal(std::time::Duration::from_secs(5));
            ctx.listener = crate::context::Listener::Client;
            ctx.caller = caller.map_or(crate::auth::Caller::Anonymous, crate::auth::Caller::User);
            self.apply_with(command, &ctx)
        }

        fn apply_with(&mut self, command: Command, ctx: &crate::context::RequestContext) -> Result<Reply, ServerError> {
            let bytes = Entry::new(command, ctx).encode_to_vec();
            let outcome = self.apply_bytes(&bytes).unwrap().expect("a command answers");
            futures::executor::block_on(outcome.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use ferrocd_proto::etcdserverpb::PutRequest;
    use prost::Message;

    use super::testing::Fixture;
    use super::{Reply, storage};
    use crate::entry::{Entry, VERSION, entry::Command};

    #[test]
    fn every_entry_records_its_index_and_raft_state_with_its_effects() {
        let mut f = Fixture::new();
        let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
        assert!(matches!(f.apply(Command::Put(put)), Ok(Reply::Kv(_))));
        // A refused command consumes its entry too.
        let bad = Command::LeaseRevoke(crate::entry::LeaseIds { ids: vec![99], expired: false });
        assert!(f.apply(bad).is_err());
        assert_eq!(f.applier.applied_index(), 2);
        let reopened = Fixture::on(f.engine.clone());
        assert_eq!(reopened.applier.applied_index(), 2);
        assert_eq!(ferrocd_raft::Apply::raft_state(&reopened.applier).unwrap(), Some(b"state 2".to_vec()));
        assert_eq!(storage::read_u64(&*f.engine, storage::APPLIED_INDEX).unwrap(), Some(2));
    }

    #[test]
    fn an_entry_written_before_the_header_existed_still_applies() {
        // Field 1 (put) holding key "a", value "b": an entry as members wrote it before the
        // format had a version or a header.
        let old = [0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b'];
        let mut f = Fixture::new();
        let outcome = f.apply_bytes(&old).unwrap().unwrap();
        assert!(matches!(futures::executor::block_on(outcome.finish()), Ok(Reply::Kv(a)) if a.revision == 2));
    }

    #[test]
    fn an_entry_from_a_newer_format_stops_apply_rather_than_being_skipped() {
        let mut f = Fixture::new();
        let newer = Entry { version: VERSION + 1, ..Entry::default() }.encode_to_vec();
        let e = f.apply_bytes(&newer).unwrap_err();
        assert!(e.to_string().contains("upgrade this member"), "{e}");
        // A command this member does not know (a oneof field it has no number for).
        let unknown = [0xa2, 0x06, 0x00]; // field 100, empty message
        let e = f.apply_bytes(&unknown).unwrap_err();
        assert!(e.to_string().contains("does not know"), "{e}");
        // Nothing was recorded for either.
        assert_eq!(storage::read_u64(&*f.engine, storage::APPLIED_INDEX).unwrap(), None);
    }
}
