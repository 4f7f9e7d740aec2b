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
use crate::pending::Pending;
use crate::snapshot::SnapshotStore;
use crate::state_machine::StateMachine;
use crate::types::{Command, TypeConfig};
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
    /// How long a proposal, a read barrier or a membership change may take before it fails
    /// with [`Error::Timeout`] (etcd: 5 s plus two election timeouts).
    pub request_timeout: Duration,
}

impl RaftConfig {
    /// etcd's request timeout for an election timeout: 5 s plus two election timeouts.
    pub fn etcd_request_timeout(election_timeout: Duration) -> Duration {
        Duration::from_secs(5) + election_timeout * 2
    }

    /// etcd's defaults, with snapshots in `snapshot_dir`. Whoever changes the election
    /// timeout sets the request timeout too (see [`Self::etcd_request_timeout`]).
    pub fn new(snapshot_dir: impl Into<PathBuf>) -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 10_000,
            snapshot_dir: snapshot_dir.into(),
            request_timeout: Duration::from_secs(7),
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
    /// The request did not complete in time: its outcome is unknown.
    #[error("timed out ({cause:?}): {detail}")]
    Timeout { cause: TimeoutCause, detail: String },
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

/// What a timed-out request likely ran into (etcd tells its clients which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutCause {
    /// Nothing this member could tell (etcd: "request timed out").
    Unknown,
    /// A new leader was elected shortly after the request began: the previous one failed
    /// (etcd: "possibly due to previous leader failure").
    LeaderFailure,
    /// The connection to the leader (or, on the leader, to a quorum) broke while it waited
    /// (etcd: "possibly due to connection lost").
    ConnectionLost,
}

fn timeout(cause: TimeoutCause, detail: impl Into<String>) -> Error {
    Error::Timeout { cause, detail: detail.into() }
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
    /// This member's proposals waiting for their responses.
    pending: Arc<Pending<A::Response>>,
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
    /// When leadership changed, as this member saw it (see [`track_leadership`]).
    leadership: Arc<parking_lot::Mutex<Leadership>>,
}

/// When leadership last changed, as this member saw it.
#[derive(Debug, Default)]
struct Leadership {
    /// Since when this member leads, and in which term.
    leading_since: Option<(u64, std::time::Instant)>,
    /// The leader last seen elected (its ID and term), and when this member learned of it.
    elected: Option<((NodeId, u64), std::time::Instant)>,
}

/// Records leadership changes as soon as openraft reports them: when this member became leader
/// (a leader no follower has acknowledged yet is judged from the start of its term: one cut off
/// right after its election must not count as alive forever), and when any new leader was
/// elected (a request that timed out just before tells its client the previous leader failed).
/// Ends when Raft stops.
async fn track_leadership<A: Apply>(
    raft: openraft::Raft<TypeConfig, StateMachine<A>>,
    seen: Arc<parking_lot::Mutex<Leadership>>,
) {
    let mut metrics = raft.server_metrics();
    drop(raft);
    loop {
        {
            let m = metrics.borrow_watched();
            let mut seen = seen.lock();
            let term = m.vote.leader_id().term;
            let now = std::time::Instant::now();
            if m.state == ServerState::Leader {
                if seen.leading_since.is_none_or(|(t, _)| t != term) {
                    seen.leading_since = Some((term, now));
                }
            } else {
                seen.leading_since = None;
            }
            if let Some(leader) = m.current_leader
                && seen.elected.is_none_or(|(who, _)| who != (leader, term))
            {
                seen.elected = Some(((leader, term), now));
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
    network: Network,
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
        let pending = Arc::new(Pending::default());
        let sm = StateMachine::new(app, Arc::clone(&pending), snapshots.clone())?;
        let sm_alive = sm.liveness();
        let raft =
            openraft::Raft::new(id, Arc::new(openraft_config), network.clone(), log, sm).await.map_err(stopped)?;
        let contact = Arc::new(crate::network::Contact::new());
        if let Kind::Mem { router, .. } = &network.kind {
            router.register(id, Arc::new(Tracked { inner: raft.clone(), contact: Arc::clone(&contact) }));
        }
        let request_timeout = config.request_timeout;
        let leadership = Arc::new(parking_lot::Mutex::new(Leadership::default()));
        tokio::spawn(track_leadership(raft.clone(), Arc::clone(&leadership)));
        let (removal, removed) = tokio::sync::watch::channel(false);
        tokio::spawn(
            Removal {
                id,
                raft: raft.clone(),
                network: network.clone(),
                contact: Arc::clone(&contact),
                election_timeout: config.election_timeout,
            }
            .watch(removal),
        );
        Ok(Self {
            id,
            raft,
            pending,
            network,
            snapshots,
            sm_alive,
            changes: tokio::sync::Mutex::new(()),
            request_timeout,
            contact,
            election_timeout: config.election_timeout,
            heartbeat_interval: config.heartbeat_interval,
            removed,
            leadership,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The gRPC service the other members reach this one through (with [`Network::grpc`]):
    /// serve it on this member's peer URLs.
    pub fn peer_service(&self) -> crate::grpc::PeerServer {
        let inbound = Tracked { inner: self.raft.clone(), contact: Arc::clone(&self.contact) };
        crate::grpc::server(Arc::new(inbound), self.snapshots.clone(), self.network.links.clone())
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
    /// [`Error::NotLeader`] on a follower (nothing was appended); [`Error::Discarded`] or
    /// [`Error::Timeout`] (after the request timeout) when the outcome is unknown.
    pub async fn propose(&self, command: Vec<u8>) -> Result<A::Response, Error> {
        let started = std::time::Instant::now();
        let (tag, waiter) = self.pending.register();
        let command = Command { bytes: command, tag: Some(tag) };
        let write = async { self.raft.client_write(command).await.map_err(write_error) };
        let written = self.within(started, "proposal", write);
        written.await?;
        waiter.take().ok_or_else(|| Error::Stopped("the state machine gave no response".into()))
    }

    /// Replicates `command` from any member: the leader proposes it, a follower hands it to
    /// the leader. Returns once it is applied on the leader, without the application's response
    /// (for commands whose effect the caller only needs to have happened).
    ///
    /// # Errors
    /// [`Error::NotLeader`] when no leader is known; [`Error::Discarded`] or
    /// [`Error::Timeout`] when the outcome is unknown.
    pub async fn submit(&self, command: Vec<u8>) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let status = self.status();
        if status.leader == Some(self.id) {
            let write = async { self.raft.client_write(Command::untagged(command)).await.map_err(write_error) };
            return self.within(started, "proposal", write).await.map(drop);
        }
        let (leader, node) = self.leader_node(&status)?;
        match network::submit(&self.network, leader, &node, command, self.request_timeout).await {
            Ok(Submitted::Applied) => Ok(()),
            Ok(Submitted::NotLeader(leader)) => Err(Error::NotLeader { leader }),
            Ok(Submitted::Unknown(_)) => Err(Error::Discarded),
            Err(e) => Err(self.timed_out(started, format!("handing a command to leader {leader}: {e}"))),
        }
    }

    /// The leader `status` names, with how to reach it.
    fn leader_node(&self, status: &Status) -> Result<(NodeId, Node), Error> {
        let leader = status.leader.ok_or(Error::NotLeader { leader: None })?;
        let node = status.members.voters.get(&leader).or_else(|| status.members.learners.get(&leader));
        Ok((leader, node.cloned().ok_or(Error::NotLeader { leader: None })?))
    }

    /// A read barrier (ReadIndex): returns once the leader has confirmed its leadership with a
    /// quorum and this member (leader or follower) has applied everything committed before the
    /// call; reads of local state after it are linearizable. A follower asks the leader for the
    /// index over the peer transport. Answers the applied index. The whole of it takes at most
    /// the request timeout.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when no leader is known (or the one asked has stepped down);
    /// [`Error::NoQuorum`]; [`Error::Timeout`] when the leader does not answer or this member
    /// does not catch up in time.
    pub async fn read_barrier(&self) -> Result<u64, Error> {
        let started = std::time::Instant::now();
        let status = self.status();
        let index = if status.leader == Some(self.id) {
            let confirm = async {
                match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
                    Ok((read, _)) => Ok(read.index()),
                    Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                        Err(Error::NotLeader { leader: f.leader_id.zip(f.leader_node) })
                    }
                    Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => Err(Error::NoQuorum),
                    Err(RaftError::Fatal(f)) => Err(stopped(f)),
                }
            };
            self.within(started, "confirming leadership for a read", confirm).await?
        } else {
            let (leader, node) = self.leader_node(&status)?;
            match network::read_index(&self.network, leader, &node, self.request_timeout).await {
                Ok(ReadIndex::Ready(index)) => index,
                Ok(ReadIndex::NotLeader(leader)) => return Err(Error::NotLeader { leader }),
                Ok(ReadIndex::NoQuorum) => return Err(Error::NoQuorum),
                Err(e) => {
                    return Err(self.timed_out(started, format!("asking leader {leader} for a read index: {e}")));
                }
            }
        };
        self.applied_up_to(started, index).await
    }

    /// Waits until this member has applied `index`, up to the request timeout counted from
    /// `started`; answers the applied index.
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Stopped`] when Raft stops.
    pub async fn applied_up_to(&self, started: std::time::Instant, index: u64) -> Result<u64, Error> {
        let left = (started + self.request_timeout).saturating_duration_since(std::time::Instant::now());
        match self.wait_until(left, |s| s.applied >= index || s.role == Role::Stopped).await {
            Ok(s) if s.role == Role::Stopped => Err(Error::Stopped("raft stopped".into())),
            Ok(s) => Ok(s.applied),
            Err(Error::Stopped(e)) if self.status().role != Role::Stopped => {
                Err(self.timed_out(started, format!("applying up to {index}: {e}")))
            }
            Err(e) => Err(e),
        }
    }

    /// On the leader: the index up to which this member must apply before it answers from
    /// its own state what every committed entry may have changed (etcd's wait for the applied
    /// index), confirmed by the leader's lease rather than a round trip when it can be: at least
    /// the first entry of its own term, so whatever earlier leaders committed is included.
    ///
    /// # Errors
    /// [`Error::NotLeader`]; [`Error::NoQuorum`]; [`Error::Timeout`].
    pub async fn leader_read_index(&self) -> Result<u64, Error> {
        let started = std::time::Instant::now();
        let confirm = async {
            match self.raft.get_read_log_id(ReadPolicy::LeaseRead).await {
                Ok((read, _)) => Ok(read.index()),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                    Err(Error::NotLeader { leader: f.leader_id.zip(f.leader_node) })
                }
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => Err(Error::NoQuorum),
                Err(RaftError::Fatal(f)) => Err(stopped(f)),
            }
        };
        let index = self.within(started, "confirming leadership", confirm).await?;
        self.applied_up_to(started, index).await
    }

    /// Runs `op` for what is left of the request timeout counted from `started`; a request
    /// still running then fails with [`Error::Timeout`] (its outcome unknown).
    async fn within<T>(
        &self,
        started: std::time::Instant,
        what: &str,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let left = (started + self.request_timeout).saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, op).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(started, format!("{what}: no outcome within {:?}", self.request_timeout))),
        }
    }

    /// A request begun at `started` timed out: the error, with why, as etcd tells it.
    pub fn timed_out(&self, started: std::time::Instant, detail: impl Into<String>) -> Error {
        timeout(self.timeout_cause(started), detail)
    }

    /// etcd's reading of a timeout: a leader elected within two election timeouts after the
    /// request began means the previous one failed; a connection to the leader (or, on the
    /// leader, to a quorum of voters) that broke since it began means the connection was lost.
    fn timeout_cause(&self, started: std::time::Instant) -> TimeoutCause {
        if let Some((_, elected)) = self.leadership.lock().elected {
            let previous_lost = elected.checked_sub(self.election_timeout * 2);
            if started < elected && previous_lost.is_none_or(|lost| started > lost) {
                return TimeoutCause::LeaderFailure;
            }
        }
        let (leader, voters): (Option<NodeId>, Vec<NodeId>) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            (m.current_leader, m.membership_config.membership().voter_ids().collect())
        };
        let links = &self.network.links;
        let lost = match leader {
            None => false,
            Some(me) if me == self.id => {
                let connected = voters.iter().filter(|&&v| v == self.id || links.connected_since(v, started)).count();
                connected <= voters.len() / 2
            }
            Some(other) => !links.connected_since(other, started),
        };
        if lost { TimeoutCause::ConnectionLost } else { TimeoutCause::Unknown }
    }

    /// Adds `id` as a learner (it receives the log but does not vote); returns once the change
    /// is committed, without waiting for the learner to catch up.
    ///
    /// # Errors
    /// [`Error::NotLeader`]; [`Error::ChangeInProgress`].
    pub async fn add_learner(&self, id: NodeId, node: Node) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let change = async {
            let _one = self.changes.lock().await;
            let written = self.raft.add_learner(id, node, false).await.map_err(write_error)?;
            self.shows_membership_of(written.log_id.index()).await;
            Ok(())
        };
        self.within(started, "adding a learner", change).await
    }

    /// Makes learner `id` a voter (through joint consensus).
    ///
    /// # Errors
    /// [`Error::MemberNotFound`] when `id` is not a learner; [`Error::NotLeader`].
    pub async fn promote(&self, id: NodeId) -> Result<(), Error> {
        let started = std::time::Instant::now();
        self.within(started, "promoting a learner", self.promote_eventually(id)).await
    }

    /// As [`Self::promote`], without a deadline: the change completes once the new voter runs
    /// (joint consensus needs a quorum of the new configuration too, which a voter added to a
    /// one-member cluster is half of).
    ///
    /// # Errors
    /// As [`Self::promote`], but never a timeout.
    pub async fn promote_eventually(&self, id: NodeId) -> Result<(), Error> {
        let _one = self.changes.lock().await;
        let written = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        self.shows_membership_of(written.log_id.index()).await;
        Ok(())
    }

    /// Replaces how member `id` is reached (its peer URLs).
    ///
    /// # Errors
    /// [`Error::MemberNotFound`]; [`Error::NotLeader`].
    pub async fn update(&self, id: NodeId, node: Node) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let change = async {
            let _one = self.changes.lock().await;
            let members = self.status().members;
            if !members.voters.contains_key(&id) && !members.learners.contains_key(&id) {
                return Err(Error::MemberNotFound(id));
            }
            let written = self
                .raft
                .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), false)
                .await
                .map_err(write_error)?;
            self.shows_membership_of(written.log_id.index()).await;
            Ok(())
        };
        self.within(started, "updating a member", change).await
    }

    /// Removes member `id`, voter or learner.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`]; [`Error::NotLeader`].
    pub async fn remove(&self, id: NodeId) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let change = async {
            let _one = self.changes.lock().await;
            let members = self.status().members;
            let change = if members.voters.contains_key(&id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else if members.learners.contains_key(&id) {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            } else {
                return Err(Error::MemberNotFound(id));
            };
            let written = self.raft.change_membership(change, false).await.map_err(write_error)?;
            self.shows_membership_of(written.log_id.index()).await;
            Ok(())
        };
        self.within(started, "removing a member", change).await
    }

    /// Returns once this member's status shows the membership of the entry at `index` or a
    /// later one: a change is committed before the metrics behind [`Self::status`] show it, and
    /// the caller answers with the members it now lists (as etcd does, the changed ones).
    async fn shows_membership_of(&self, index: u64) {
        let mut metrics = self.raft.metrics();
        loop {
            let shown =
                metrics.borrow_watched().membership_config.log_id().as_ref().is_some_and(|id| id.index() >= index);
            if shown || metrics.changed().await.is_err() {
                return;
            }
        }
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
        network::is_member(&self.network, to, node, self.id, self.election_timeout)
            .await
            .map_err(|e| timeout(TimeoutCause::Unknown, format!("member {to} does not answer: {e}")))?;
        self.raft.trigger().transfer_leader(to).await.map_err(stopped)
    }

    /// Builds a snapshot now (and purges the log it covers, per the keep setting).
    ///
    /// # Errors
    /// When Raft has stopped.
    pub async fn snapshot(&self) -> Result<(), Error> {
        self.raft.trigger().snapshot().await.map_err(stopped)
    }

    /// Builds a snapshot of everything applied and removes the whole log it covers, then waits
    /// (up to `timeout`) until the log is purged that far. After it, a member that needs
    /// entries from before is sent the snapshot: the way to make a state this member was
    /// given outside the log (a restored backup) reach members that join later.
    ///
    /// # Errors
    /// When Raft has stopped; the purge did not happen within `timeout`.
    pub async fn purge_applied(&self, timeout: Duration) -> Result<(), Error> {
        let applied = self.wait_until(timeout, |st| st.applied > 0).await?.applied;
        self.raft.trigger().snapshot().await.map_err(stopped)?;
        let snapshotted =
            |m: &openraft::RaftMetrics<TypeConfig>| m.snapshot.as_ref().is_some_and(|s| s.index >= applied);
        self.raft
            .wait(Some(timeout))
            .metrics(snapshotted, "snapshot")
            .await
            .map_err(|e| Error::Stopped(e.to_string()))?;
        self.raft.trigger().purge_log(applied).await.map_err(stopped)?;
        self.wait_until(timeout, |st| st.purged >= applied).await.map(drop)
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
                    None => match self.leadership.lock().leading_since {
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

    /// Returns once this member's Raft has stopped by itself — a storage failure (disk full, an
    /// I/O error) or another fatal error — with why. A member in that state must not go on
    /// serving: its state no longer moves, so its reads grow stale and its watches silent.
    /// Never returns while Raft runs.
    pub async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "raft stopped".into();
            }
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
