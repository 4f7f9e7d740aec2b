//! [`RaftNode`]: one member's Raft, with the application's state machine plugged in.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::Engine;
use openraft::async_runtime::WatchReceiver as _;
use openraft::error::{ChangeMembershipError, ClientWriteError, LinearizableReadError, RaftError};
use openraft::{ChangeMembers, ReadPolicy, ServerState, SnapshotPolicy};

use crate::log_store::LogStore;
use crate::network::{self, Kind, Network, ReadIndex, Submitted, Tracked};
use crate::snapshot::SnapshotStore;
use crate::state_machine::StateMachine;
use crate::types::TypeConfig;
use crate::{Apply, Members, Node, NodeId};

/// Timing and snapshot settings (etcd's flags of the same names).
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// How often a leader sends heartbeats (`--heartbeat-interval`, etcd's default 100 ms).
    pub heartbeat_interval: Duration,
    /// How long a follower waits for a leader before campaigning (`--election-timeout`, etcd's
    /// default 1000 ms); each campaign waits a random time between this and twice this.
    pub election_timeout: Duration,
    /// Applied entries between snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Where snapshots are kept.
    pub snapshot_dir: PathBuf,
}

impl RaftConfig {
    /// etcd's defaults, with snapshots in `snapshot_dir`.
    pub fn new(snapshot_dir: impl Into<PathBuf>) -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 10_000,
            snapshot_dir: snapshot_dir.into(),
        }
    }
}

/// Why a Raft operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Only the leader does this; `leader` is the current one, when known.
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, Node)> },
    /// The leader could not confirm its leadership with a quorum.
    #[error("no quorum")]
    NoQuorum,
    /// Another membership change has not finished yet.
    #[error("a membership change is in progress")]
    ChangeInProgress,
    /// The leader did not answer, or this member did not catch up, in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The member is not in the cluster (or not a learner, for a promotion).
    #[error("member {0} not found")]
    MemberNotFound(NodeId),
    /// The entry was appended but lost to a leader change: its outcome is unknown.
    #[error("the proposal was discarded by a leader change")]
    Discarded,
    /// This member's Raft has stopped (storage failure or shutdown).
    #[error("raft stopped: {0}")]
    Stopped(String),
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Candidate,
    Follower,
    Learner,
    Stopped,
}

/// What a member knows about the cluster, from its own point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// Index of the last entry in this member's log.
    pub last_log_index: u64,
    /// Index of the last entry known committed.
    pub committed: u64,
    /// Index of the last entry applied to the state machine.
    pub applied: u64,
    /// Index of the last entry removed from the log (covered by a snapshot); 0: none.
    pub purged: u64,
    /// The membership in effect (the latest one in the log).
    pub members: Members,
    /// On the leader: the last log index known replicated to each member (itself included).
    pub matched: BTreeMap<NodeId, u64>,
}

/// One member's Raft.
pub struct RaftNode<A: Apply> {
    id: NodeId,
    raft: openraft::Raft<TypeConfig, StateMachine<A>>,
    network: Network,
    snapshots: Arc<SnapshotStore>,
    /// Dropped when openraft has let go of the state machine.
    sm_alive: std::sync::Weak<()>,
    /// Membership changes one at a time (openraft refuses overlapping ones).
    changes: tokio::sync::Mutex<()>,
    /// How long a read barrier waits for the leader and for this member to catch up.
    request_timeout: Duration,
    /// When a leader was last heard from.
    contact: Arc<crate::network::Contact>,
    /// Without contact for this long, a follower names no leader.
    election_timeout: Duration,
    heartbeat_interval: Duration,
    /// Turns true once this member knows it was removed from the cluster.
    removed: tokio::sync::watch::Receiver<bool>,
    /// Since when this member leads, and in which term (see [`track_leadership`]).
    leading_since: Arc<parking_lot::Mutex<Option<(u64, std::time::Instant)>>>,
}

/// Records when this member became leader (term, instant) as soon as openraft reports it, so
/// that a leader no follower has acknowledged yet is judged from the start of its term: one cut
/// off right after its election must not count as alive forever. Ends when Raft stops.
async fn track_leadership<A: Apply>(
    raft: openraft::Raft<TypeConfig, StateMachine<A>>,
    since: Arc<parking_lot::Mutex<Option<(u64, std::time::Instant)>>>,
) {
    let mut metrics = raft.server_metrics();
    drop(raft);
    loop {
        {
            let m = metrics.borrow_watched();
            let mut since = since.lock();
            if m.state == ServerState::Leader {
                let term = m.vote.leader_id().term;
                if since.is_none_or(|(t, _)| t != term) {
                    *since = Some((term, std::time::Instant::now()));
                }
            } else {
                *since = None;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Watches for this member's removal from the cluster (see [`RaftNode::removed`]).
struct Removal<A: Apply> {
    id: NodeId,
    raft: openraft::Raft<TypeConfig, StateMachine<A>>,
    network: Kind,
    contact: Arc<crate::network::Contact>,
    election_timeout: Duration,
}

impl<A: Apply> Removal<A> {
    /// Sets `removed` once this member is known removed; ends when Raft stops. It looks at
    /// each change of Raft's server metrics (membership, leader, role: rare, not at every
    /// write) and, for the time-dependent "cut off" case, once per election timeout.
    async fn watch(self, removed: tokio::sync::watch::Sender<bool>) {
        let mut metrics = self.raft.server_metrics();
        let mut was_member = false;
        loop {
            let (inside, committed_out, cut_off, known) = {
                let m = metrics.borrow_watched();
                let contains =
                    |s: &openraft::alias::StoredMembershipOf<TypeConfig>| s.membership().get_node(&self.id).is_some();
                let committed = &m.committed_membership_config;
                let committed_out = committed.log_id().is_some() && !contains(committed);
                let inside = contains(&m.membership_config) || contains(committed);
                let cut_off = m.state != ServerState::Leader && !self.contact.within(self.election_timeout);
                // Whom to ask, only when it may come to asking.
                let known: Vec<(NodeId, Node)> = if cut_off {
                    let others = m.membership_config.membership().nodes().filter(|(id, _)| **id != self.id);
                    others.map(|(id, n)| (*id, n.clone())).collect()
                } else {
                    Vec::new()
                };
                (inside, committed_out, cut_off, known)
            };
            was_member |= inside;
            let gone = was_member && ((!inside && committed_out) || (cut_off && self.ask(&known).await));
            if gone {
                let _ = removed.send(true);
                return;
            }
            match tokio::time::timeout(self.election_timeout, metrics.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_)) => return,
            }
        }
    }

    /// Whether the leader among `known` says this member was removed.
    async fn ask(&self, known: &[(NodeId, Node)]) -> bool {
        for (id, node) in known {
            let answer = network::is_member(&self.network, *id, node, self.id, self.election_timeout).await;
            if answer == Ok(network::MemberCheck::Removed) {
                return true;
            }
        }
        false
    }
}

impl<A: Apply> std::fmt::Debug for RaftNode<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode").field("id", &self.id).finish()
    }
}

fn role(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Candidate => Role::Candidate,
        ServerState::Follower => Role::Follower,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Stopped,
    }
}

fn stopped(e: impl std::fmt::Display) -> Error {
    Error::Stopped(e.to_string())
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Error::NotLeader { leader: f.leader_id.zip(f.leader_node) }
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Error::Discarded,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(_) => Error::ChangeInProgress,
            ChangeMembershipError::LearnerNotFound(l) => Error::MemberNotFound(l.node_id),
            other => Error::Config(other.to_string()),
        },
        RaftError::APIError(other) => Error::Config(other.to_string()),
        RaftError::Fatal(f) => stopped(f),
    }
}

impl<A: Apply> RaftNode<A> {
    /// Starts member `id`: its log on `engine` (opened with [`crate::BUCKETS`]), its state in
    /// `app`, its peers through `network`. A restarted member resumes from its log and snapshot.
    ///
    /// # Errors
    /// Invalid timings; storage errors.
    pub async fn start<E: Engine>(
        id: NodeId,
        config: &RaftConfig,
        engine: Arc<E>,
        app: Arc<A>,
        network: Network,
    ) -> Result<Self, Error> {
        let millis = |d: Duration| d.as_millis() as u64;
        let openraft_config = openraft::Config {
            cluster_name: "ferrocd".into(),
            heartbeat_interval: millis(config.heartbeat_interval),
            election_timeout_min: millis(config.election_timeout),
            election_timeout_max: millis(config.election_timeout) * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count.max(1)),
            // Followers a little behind catch up from the log, not by snapshot.
            max_in_snapshot_log_to_keep: config.snapshot_count.clamp(1, 5_000),
            replication_lag_threshold: config.snapshot_count.max(1) * 2,
            install_snapshot_timeout: millis(config.election_timeout) * 4,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
        let log = LogStore::new(engine)?;
        let snapshots = Arc::new(SnapshotStore::open(&config.snapshot_dir)?);
        let sm = StateMachine::new(app, snapshots.clone())?;
        let sm_alive = sm.liveness();
        let raft =
            openraft::Raft::new(id, Arc::new(openraft_config), network.clone(), log, sm).await.map_err(stopped)?;
        let contact = Arc::new(crate::network::Contact::new());
        if let Kind::Mem { router, .. } = &network.kind {
            router.register(id, Arc::new(Tracked { inner: raft.clone(), contact: Arc::clone(&contact) }));
        }
        let request_timeout = config.election_timeout * 5;
        let leading_since = Arc::new(parking_lot::Mutex::new(None));
        tokio::spawn(track_leadership(raft.clone(), Arc::clone(&leading_since)));
        let (removal, removed) = tokio::sync::watch::channel(false);
        tokio::spawn(
            Removal {
                id,
                raft: raft.clone(),
                network: network.kind.clone(),
                contact: Arc::clone(&contact),
                election_timeout: config.election_timeout,
            }
            .watch(removal),
        );
        Ok(Self {
            id,
            raft,
            network,
            snapshots,
            sm_alive,
            changes: tokio::sync::Mutex::new(()),
            request_timeout,
            contact,
            election_timeout: config.election_timeout,
            heartbeat_interval: config.heartbeat_interval,
            removed,
            leading_since,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The gRPC service the other members reach this one through (with [`Network::grpc`]):
    /// serve it on this member's peer URLs.
    pub fn peer_service(&self) -> crate::grpc::PeerServer {
        let inbound = Tracked { inner: self.raft.clone(), contact: Arc::clone(&self.contact) };
        crate::grpc::server(Arc::new(inbound), self.snapshots.clone())
    }

    /// Forms a new cluster of `voters` (call it on one member of a new cluster); does nothing
    /// on a member that already has a log.
    ///
    /// # Errors
    /// When this member is not among `voters`; when Raft has stopped.
    pub async fn bootstrap(&self, voters: BTreeMap<NodeId, Node>) -> Result<(), Error> {
        if self.raft.is_initialized().await.map_err(stopped)? {
            return Ok(());
        }
        match self.raft.initialize(voters).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Config(e.to_string())),
        }
    }

    /// Replicates `command`; answers the application's response once it is committed and
    /// applied on this member (the leader).
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower (nothing was appended); [`Error::Discarded`] when the
    /// outcome is unknown.
    pub async fn propose(&self, command: Vec<u8>) -> Result<A::Response, Error> {
        let written = self.raft.client_write(crate::types::Command(command)).await.map_err(write_error)?;
        let reply = written.data.0.ok_or_else(|| Error::Stopped("the state machine gave no response".into()))?;
        reply
            .downcast::<A::Response>()
            .map(|r| *r)
            .map_err(|_| Error::Stopped("the state machine's response has another type".into()))
    }

    /// Replicates `command` from any member: the leader proposes it, a follower hands it to
    /// the leader. Returns once it is applied on the leader, without the application's response
    /// (for commands whose effect the caller only needs to have happened).
    ///
    /// # Errors
    /// [`Error::NotLeader`] when no leader is known; [`Error::Discarded`] or
    /// [`Error::Timeout`] when the outcome is unknown.
    pub async fn submit(&self, command: Vec<u8>) -> Result<(), Error> {
        let status = self.status();
        if status.leader == Some(self.id) {
            return self.raft.client_write(crate::types::Command(command)).await.map(drop).map_err(write_error);
        }
        let leader = status.leader.ok_or(Error::NotLeader { leader: None })?;
        let node = status.members.voters.get(&leader).or_else(|| status.members.learners.get(&leader));
        let node = node.cloned().ok_or(Error::NotLeader { leader: None })?;
        match network::submit(&self.network.kind, leader, &node, command, self.request_timeout).await {
            Ok(Submitted::Applied) => Ok(()),
            Ok(Submitted::NotLeader(leader)) => Err(Error::NotLeader { leader }),
            Ok(Submitted::Unknown(_)) => Err(Error::Discarded),
            Err(e) => Err(Error::Timeout(format!("handing a command to leader {leader}: {e}"))),
        }
    }

    /// A read barrier (ReadIndex): returns once the leader has confirmed its leadership with a
    /// quorum and this member (leader or follower) has applied everything committed before the
    /// call; reads of local state after it are linearizable. A follower asks the leader for the
    /// index over the peer transport. Answers the applied index.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when no leader is known (or the one asked has stepped down);
    /// [`Error::NoQuorum`]; [`Error::Timeout`] when the leader does not answer or this member
    /// does not catch up in time.
    pub async fn read_barrier(&self) -> Result<u64, Error> {
        let status = self.status();
        let index = if status.leader == Some(self.id) {
            match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
                Ok((read, _)) => read.index(),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                    return Err(Error::NotLeader { leader: f.leader_id.zip(f.leader_node) });
                }
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => return Err(Error::NoQuorum),
                Err(RaftError::Fatal(f)) => return Err(stopped(f)),
            }
        } else {
            let leader = status.leader.ok_or(Error::NotLeader { leader: None })?;
            let node = status.members.voters.get(&leader).or_else(|| status.members.learners.get(&leader));
            let node = node.cloned().ok_or(Error::NotLeader { leader: None })?;
            match network::read_index(&self.network.kind, leader, &node, self.request_timeout).await {
                Ok(ReadIndex::Ready(index)) => index,
                Ok(ReadIndex::NotLeader(leader)) => return Err(Error::NotLeader { leader }),
                Ok(ReadIndex::NoQuorum) => return Err(Error::NoQuorum),
                Err(e) => return Err(Error::Timeout(format!("asking leader {leader} for a read index: {e}"))),
            }
        };
        match self.wait_until(self.request_timeout, |s| s.applied >= index || s.role == Role::Stopped).await {
            Ok(s) if s.role == Role::Stopped => Err(Error::Stopped("raft stopped".into())),
            Ok(s) => Ok(s.applied),
            Err(Error::Stopped(e)) if self.status().role != Role::Stopped => Err(Error::Timeout(e)),
            Err(e) => Err(e),
        }
    }

    /// Adds `id` as a learner (it receives the log but does not vote); returns once the change
    /// is committed, without waiting for the learner to catch up.
    ///
    /// # Errors
    /// [`Error::NotLeader`]; [`Error::ChangeInProgress`].
    pub async fn add_learner(&self, id: NodeId, node: Node) -> Result<(), Error> {
        let _one = self.changes.lock().await;
        self.raft.add_learner(id, node, false).await.map_err(write_error).map(drop)
    }

    /// Makes learner `id` a voter (through joint consensus).
    ///
    /// # Errors
    /// [`Error::MemberNotFound`] when `id` is not a learner; [`Error::NotLeader`].
    pub async fn promote(&self, id: NodeId) -> Result<(), Error> {
        let _one = self.changes.lock().await;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)
            .map(drop)
    }

    /// Replaces how member `id` is reached (its peer URLs).
    ///
    /// # Errors
    /// [`Error::MemberNotFound`]; [`Error::NotLeader`].
    pub async fn update(&self, id: NodeId, node: Node) -> Result<(), Error> {
        let _one = self.changes.lock().await;
        let members = self.status().members;
        if !members.voters.contains_key(&id) && !members.learners.contains_key(&id) {
            return Err(Error::MemberNotFound(id));
        }
        self.raft
            .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), false)
            .await
            .map_err(write_error)
            .map(drop)
    }

    /// Removes member `id`, voter or learner.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`]; [`Error::NotLeader`].
    pub async fn remove(&self, id: NodeId) -> Result<(), Error> {
        let _one = self.changes.lock().await;
        let members = self.status().members;
        let change = if members.voters.contains_key(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if members.learners.contains_key(&id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(Error::MemberNotFound(id));
        };
        self.raft.change_membership(change, false).await.map_err(write_error).map(drop)
    }

    /// Asks the leader (this member) to hand leadership to `to`. openraft's leader stops
    /// leading as soon as it hands over, so `to` is asked first whether it answers at all: a
    /// member that is down does not cost the cluster its leader.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`] for a member not in the cluster; [`Error::Timeout`] when `to`
    /// does not answer within an election timeout; [`Error::Stopped`] when Raft has stopped.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), Error> {
        let members = self.status().members;
        let node = members.voters.get(&to).or(members.learners.get(&to)).ok_or(Error::MemberNotFound(to))?;
        network::is_member(&self.network.kind, to, node, self.id, self.election_timeout)
            .await
            .map_err(|e| Error::Timeout(format!("member {to} does not answer: {e}")))?;
        self.raft.trigger().transfer_leader(to).await.map_err(stopped)
    }

    /// Builds a snapshot now (and purges the log it covers, per the keep setting).
    ///
    /// # Errors
    /// When Raft has stopped.
    pub async fn snapshot(&self) -> Result<(), Error> {
        self.raft.trigger().snapshot().await.map_err(stopped)
    }

    /// The leader this member knows of (cheaper than [`Self::status`]): none while it is a
    /// candidate, when it has not heard from its leader for an election timeout, or when it
    /// leads but has had no acknowledgement from a quorum for an election timeout (etcd's
    /// check-quorum: such a leader steps down).
    pub fn leader(&self) -> Option<NodeId> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        self.live_leader(&metrics)
    }

    fn live_leader(&self, metrics: &openraft::RaftMetrics<TypeConfig>) -> Option<NodeId> {
        use openraft::Instant as _;
        match metrics.state {
            ServerState::Leader => {
                let alone = metrics.membership_config.membership().voter_ids().count() <= 1;
                let heard = match metrics.last_quorum_acked.as_ref() {
                    Some(acked) => acked.elapsed() <= self.election_timeout,
                    // No acknowledgement yet in this term: alive for an election timeout from its
                    // start (a leader not yet seen by the tracker has only just started).
                    None => match *self.leading_since.lock() {
                        Some((term, since)) if term == metrics.current_term => since.elapsed() <= self.election_timeout,
                        _ => true,
                    },
                };
                metrics.current_leader.filter(|_| alone || heard)
            }
            ServerState::Candidate | ServerState::Shutdown => None,
            ServerState::Follower | ServerState::Learner => {
                metrics.current_leader.filter(|_| self.contact.within(self.election_timeout))
            }
        }
    }

    /// On the leader: the members that acknowledged it within `window`, itself included; none
    /// on any other member.
    pub fn active_members(&self, window: Duration) -> Option<BTreeSet<NodeId>> {
        use openraft::Instant as _;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.state != ServerState::Leader {
            return None;
        }
        let acked = metrics.heartbeat.iter().flatten();
        let mut active: BTreeSet<NodeId> =
            acked.filter(|(_, at)| at.as_ref().is_some_and(|t| t.elapsed() <= window)).map(|(id, _)| *id).collect();
        active.insert(self.id);
        Some(active)
    }

    /// The current term (cheaper than [`Self::status`]).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// This member's role (cheaper than [`Self::status`]).
    pub fn role(&self) -> Role {
        role(self.raft.metrics().borrow_watched().state)
    }

    /// This member's view of the cluster.
    pub fn status(&self) -> Status {
        let metrics = self.raft.metrics().borrow_watched().clone();
        Status {
            id: self.id,
            role: role(metrics.state),
            leader: self.live_leader(&metrics),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed: metrics.local_committed.as_ref().map_or(0, |c| c.index),
            applied: metrics.last_applied.as_ref().map_or(0, |a| a.index),
            purged: metrics.purged.as_ref().map_or(0, |p| p.index),
            members: Members::from_membership(metrics.membership_config.membership()),
            matched: metrics
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, log)| (*id, log.as_ref().map_or(0, |l| l.index))).collect())
                .unwrap_or_default(),
        }
    }

    /// Waits until `cond` holds for this member's status, or `timeout` passes.
    ///
    /// # Errors
    /// [`Error::Stopped`] on timeout (with the last status) or when Raft stops.
    pub async fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&Status) -> bool) -> Result<Status, Error> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status();
            if cond(&status) {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Stopped(format!("timed out after {timeout:?}; status: {status:?}")));
            }
            // Woken by every change of Raft's metrics, and each heartbeat interval too: whether
            // the leader is still heard from changes with time alone.
            let wake = deadline.min(tokio::time::Instant::now() + self.heartbeat_interval);
            match tokio::time::timeout_at(wake, metrics.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) => return Err(stopped(e)),
            }
        }
    }

    /// Whether this member knows it has been removed from the cluster (see [`Self::removed`]).
    pub fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    /// Returns once this member knows it has been removed from the cluster: a committed
    /// membership it has applied leaves it out, or — cut off from any leader for an election
    /// timeout, as a removed member is once the leader stops replicating to it — the leader of
    /// the members it knows says so. A member that was never in a membership it knows of (one
    /// still catching up to join) is not removed. Never returns if Raft stops first.
    pub async fn removed(&self) {
        let mut removed = self.removed.clone();
        if removed.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops this member's Raft (its storage stays as it is). When it returns, the application
    /// is no longer called (a snapshot being built is waited for, up to 60 s), so a new
    /// `RaftNode` may be started on the same storage.
    pub async fn shutdown(&self) {
        if let Kind::Mem { router, .. } = &self.network.kind {
            router.unregister(self.id);
        }
        let _ = self.raft.shutdown().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.sm_alive.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
