//! The replica: all the services see of this member's Raft node and state machine — the
//! applied state to read, proposals, read barriers, Raft's status and membership changes — with
//! every Raft failure already mapped to etcd's error. Services never name the Raft node or the
//! applier (a tidy rule holds them to it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocd_engine::Engine;
use ferrocd_lease::Lessor;
use ferrocd_mvcc::{Applied, KvStore, WriteRequest};
use ferrocd_raft::RaftNode;
use parking_lot::Mutex;
use prost::Message;

pub use ferrocd_raft::{Node, Role, Status};

use crate::apply::{Applier, AuthApplied, MemberAttrs, Reply};
use crate::context::RequestContext;
use crate::entry::{Entry, entry::Command};
use crate::error::ServerError;
use crate::history::Hub;
use crate::metrics::Metrics;

/// A change of the lease table, as proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCommand {
    /// Grant lease `id` (chosen by the leader) for `ttl` seconds.
    Grant { id: i64, ttl: i64 },
    /// Revoke a lease and delete its keys.
    Revoke(i64),
    /// Revoke leases the leader found expired (each with its keys, at its own revision).
    Expire(Vec<i64>),
    /// Record leases' remaining TTLs `(id, seconds)`; 0 clears one.
    Checkpoint(Vec<(i64, i64)>),
}

/// What an applied lease command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseApplied {
    /// The TTL a grant gave (raised to the minimum); 0 for the other commands.
    pub ttl: i64,
    /// The store revision after it.
    pub revision: i64,
}

/// Maps a Raft failure to etcd's error.
pub(crate) fn raft_error(e: ferrocd_raft::Error) -> ServerError {
    use ferrocd_raft::Error as E;
    match e {
        E::NotLeader { leader: Some((id, node)) } => ServerError::NotLeader { id, urls: node.urls },
        E::NotLeader { leader: None } => ServerError::NoLeader,
        E::NoQuorum => ServerError::Timeout,
        E::Timeout { cause, .. } => match cause {
            ferrocd_raft::TimeoutCause::Unknown => ServerError::Timeout,
            ferrocd_raft::TimeoutCause::LeaderFailure => ServerError::TimeoutLeaderFailure,
            ferrocd_raft::TimeoutCause::ConnectionLost => ServerError::TimeoutConnectionLost,
        },
        E::Discarded => ServerError::LeaderChanged,
        E::Stopped(_) => ServerError::Stopped,
        E::MemberNotFound(_) => ServerError::MemberNotFound,
        E::ChangeInProgress => ServerError::Precondition("a membership change is in progress".into()),
        E::Config(why) => ServerError::Precondition(why),
        E::Io(e) => ServerError::Storage(e.to_string()),
    }
}

/// This member's replica of the cluster's state.
#[derive(Debug)]
pub struct Replica<E: Engine> {
    node: Arc<RaftNode<Applier<E>>>,
    machine: Arc<Applier<E>>,
    election_timeout: Duration,
    /// Proposals pending and failed are counted here.
    metrics: Arc<Metrics>,
}

impl<E: Engine> Clone for Replica<E> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            machine: Arc::clone(&self.machine),
            election_timeout: self.election_timeout,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl<E: Engine> Replica<E> {
    /// The replica of `node`, whose state machine is `machine`, with Raft's election timeout,
    /// counting its proposals into `metrics`.
    pub fn new(
        node: Arc<RaftNode<Applier<E>>>,
        machine: Arc<Applier<E>>,
        election_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { node, machine, election_timeout, metrics }
    }

    /// Raft's election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout
    }

    // The applied state.

    /// The keyspace, as applied here.
    pub fn kv(&self) -> &Arc<KvStore<E>> {
        self.machine.kv()
    }

    /// The member's watch hub.
    pub fn hub(&self) -> &Hub<E> {
        self.machine.hub()
    }

    /// The member's lease table.
    pub fn lessor(&self) -> &Mutex<Lessor> {
        self.machine.lessor()
    }

    /// Brings the lease table in step with this member's role: primary (with expiry times)
    /// while it leads.
    pub fn sync_lease_role(&self) {
        self.machine.sync_lease_role(self.node.leader() == Some(self.node.id()));
    }

    /// The active alarms, as applied here.
    pub fn alarms(&self) -> &Arc<crate::apply::Alarms> {
        self.machine.alarms()
    }

    pub fn cluster_id(&self) -> u64 {
        self.machine.cluster_id()
    }

    /// The index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.machine.applied_index()
    }

    /// The attributes every member published, by ID.
    ///
    /// # Errors
    /// A storage failure.
    pub fn member_attrs(&self) -> Result<BTreeMap<u64, MemberAttrs>, ServerError> {
        self.machine.member_attrs().map_err(|e| ServerError::Storage(e.to_string()))
    }

    // Raft's view.

    pub fn member_id(&self) -> u64 {
        self.node.id()
    }

    pub fn status(&self) -> Status {
        self.node.status()
    }

    pub fn term(&self) -> u64 {
        self.node.term()
    }

    pub fn role(&self) -> Role {
        self.node.role()
    }

    /// The leader, as this member knows it.
    pub fn leader(&self) -> Option<u64> {
        self.node.leader()
    }

    /// On the leader: the members it heard from within `window` (itself included).
    pub fn active_members(&self, window: Duration) -> Option<BTreeSet<u64>> {
        self.node.active_members(window)
    }

    /// Waits until `cond` holds for this member's status, or `timeout`; the status then.
    pub async fn wait_until(&self, timeout: Duration, cond: impl FnMut(&Status) -> bool) -> Option<Status> {
        self.node.wait_until(timeout, cond).await.ok()
    }

    /// A request begun at `started` ran out of time: etcd's error for why.
    pub fn timed_out(&self, started: Instant, what: &str) -> ServerError {
        raft_error(self.node.timed_out(started, what))
    }

    /// etcd's linearizable read barrier: returns once this member has applied everything
    /// committed before the call, as confirmed by the leader.
    ///
    /// # Errors
    /// etcd's no-leader and timeout errors.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        self.node.read_barrier().await.map(drop).map_err(raft_error)
    }

    /// On the leader: waits until it has applied everything committed (at least through the
    /// first entry of its term).
    ///
    /// # Errors
    /// etcd's routing errors when this member no longer leads; a timeout.
    pub async fn leader_applied(&self) -> Result<(), ServerError> {
        self.node.leader_read_index().await.map(drop).map_err(raft_error)
    }

    // Proposals.

    /// Proposes `command` on behalf of `ctx` (here, at the leader) and answers its reply once
    /// applied here.
    async fn propose(&self, ctx: &RequestContext, command: Command) -> Result<Reply, ServerError> {
        let entry = Entry::new(command, ctx).encode_to_vec();
        let outcome = match self.node.propose(entry).await.map_err(raft_error) {
            Ok(outcome) => outcome,
            // Not the leader: nothing was proposed (the request goes to the leader).
            Err(e @ (ServerError::NotLeader { .. } | ServerError::NoLeader)) => return Err(e),
            Err(e) => {
                self.metrics.proposals_failed.inc();
                return Err(e);
            }
        };
        // Pending from the proposal until its answer (etcd counts the same span).
        self.metrics.proposals_pending.inc();
        let answer = outcome.finish().await;
        self.metrics.proposals_pending.dec();
        if matches!(answer, Err(ServerError::Timeout | ServerError::TimeoutLeaderFailure | ServerError::LeaderChanged))
        {
            self.metrics.proposals_failed.inc();
        }
        answer
    }

    /// Proposes a keyspace change.
    ///
    /// # Errors
    /// etcd's error refusing it; [`ServerError::NotLeader`] on a follower (nothing was
    /// proposed); a timeout.
    pub async fn propose_kv(&self, ctx: &RequestContext, request: WriteRequest) -> Result<Applied, ServerError> {
        match self.propose(ctx, request.into()).await? {
            Reply::Kv(applied) => Ok(applied),
            other => Err(ServerError::Storage(format!("a keyspace change answered {other:?}"))),
        }
    }

    /// Proposes a change of the lease table.
    ///
    /// # Errors
    /// As [`Self::propose_kv`].
    pub async fn propose_lease(&self, ctx: &RequestContext, cmd: LeaseCommand) -> Result<LeaseApplied, ServerError> {
        match self.propose(ctx, cmd.into()).await? {
            Reply::Lease(done) => Ok(done),
            other => Err(ServerError::Storage(format!("a lease command answered {other:?}"))),
        }
    }

    /// Proposes an auth change (or an Authenticate) on behalf of `ctx`.
    ///
    /// # Errors
    /// As [`Self::propose_kv`].
    pub async fn propose_auth(&self, ctx: &RequestContext, command: Command) -> Result<AuthApplied, ServerError> {
        match self.propose(ctx, command).await? {
            Reply::Auth(done) => Ok(done),
            other => Err(ServerError::Storage(format!("an auth command answered {other:?}"))),
        }
    }

    /// Proposes an alarm request on behalf of `ctx`; answers the alarms it raised or cleared.
    ///
    /// # Errors
    /// As [`Self::propose_kv`].
    pub async fn propose_alarm(
        &self,
        ctx: &RequestContext,
        request: ferrocd_proto::etcdserverpb::AlarmRequest,
    ) -> Result<Vec<ferrocd_proto::etcdserverpb::AlarmMember>, ServerError> {
        match self.propose(ctx, Command::Alarm(request)).await? {
            Reply::Alarms(changed) => Ok(changed),
            other => Err(ServerError::Storage(format!("an alarm request answered {other:?}"))),
        }
    }

    /// Raises alarm `alarm` for this member from any member (a follower hands it to the
    /// leader), as the server's own request; returns once it is applied on the leader.
    ///
    /// # Errors
    /// No leader; the outcome is unknown.
    pub async fn raise_alarm(
        &self,
        alarm: ferrocd_proto::etcdserverpb::AlarmType,
        timeout: Duration,
    ) -> Result<(), ServerError> {
        self.raise_alarm_for(self.member_id(), alarm, timeout).await
    }

    /// As [`Self::raise_alarm`], for member `member` (0: the whole cluster).
    ///
    /// # Errors
    /// No leader; the outcome is unknown.
    pub async fn raise_alarm_for(
        &self,
        member: u64,
        alarm: ferrocd_proto::etcdserverpb::AlarmType,
        timeout: Duration,
    ) -> Result<(), ServerError> {
        use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
        let request = crate::apply::alarm_request(AlarmAction::Activate, member, alarm);
        let entry = Entry::new(Command::Alarm(request), &RequestContext::internal(timeout));
        self.node.submit(entry.encode_to_vec()).await.map_err(raft_error)
    }

    /// Publishes this member's attributes from any member (a follower hands them to the
    /// leader); returns once they are applied on the leader.
    ///
    /// # Errors
    /// No leader; the outcome is unknown.
    pub async fn publish(&self, attrs: MemberAttrs, timeout: Duration) -> Result<(), ServerError> {
        let entry = Entry::new(Command::MemberAttrs(attrs), &RequestContext::internal(timeout));
        self.node.submit(entry.encode_to_vec()).await.map_err(raft_error)
    }

    // Membership.

    /// Adds member `id` (at `urls`) as a learner.
    ///
    /// # Errors
    /// etcd's membership errors.
    pub async fn add_learner(&self, id: u64, urls: Vec<String>) -> Result<(), ServerError> {
        self.node.add_learner(id, Node { urls }).await.map_err(raft_error)
    }

    /// Promotes learner `id` to a voter.
    ///
    /// # Errors
    /// etcd's membership errors.
    pub async fn promote(&self, id: u64) -> Result<(), ServerError> {
        self.node.promote(id).await.map_err(raft_error)
    }

    /// Promotes learner `id` once it has caught up.
    ///
    /// # Errors
    /// etcd's membership errors.
    pub async fn promote_eventually(&self, id: u64) -> Result<(), ServerError> {
        self.node.promote_eventually(id).await.map_err(raft_error)
    }

    /// Changes member `id`'s peer URLs.
    ///
    /// # Errors
    /// etcd's membership errors.
    pub async fn update(&self, id: u64, urls: Vec<String>) -> Result<(), ServerError> {
        self.node.update(id, Node { urls }).await.map_err(raft_error)
    }

    /// Removes member `id`.
    ///
    /// # Errors
    /// etcd's membership errors.
    pub async fn remove(&self, id: u64) -> Result<(), ServerError> {
        self.node.remove(id).await.map_err(raft_error)
    }

    /// Hands leadership to voter `to` and waits until it leads, until `deadline`. A transferee
    /// that does not answer is waited for (etcd's leader keeps leading meanwhile): leadership
    /// goes only to a member that answers.
    ///
    /// # Errors
    /// etcd's leader-transfer timeout; Raft's failures.
    pub async fn transfer_leader(&self, to: u64, deadline: tokio::time::Instant) -> Result<(), ServerError> {
        loop {
            match self.node.transfer_leader(to).await {
                Ok(()) => break,
                Err(ferrocd_raft::Error::Timeout { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.election_timeout / 10).await;
                }
                Err(ferrocd_raft::Error::Timeout { .. }) => return Err(ServerError::LeaderTransferTimeout),
                Err(e) => return Err(raft_error(e)),
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.node.wait_until(left, |st| st.leader == Some(to)).await.map_err(|_| ServerError::LeaderTransferTimeout)?;
        Ok(())
    }
}
