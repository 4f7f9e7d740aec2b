//! Clusters of in-process members on the in-memory transport, with the example state machine:
//! elections, replication, leader loss, partitions, membership changes, restarts and snapshot
//! catch-up. Every wait is on a condition with a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::MemEngine;
use ferrocd_raft::mem::MemRouter;
use ferrocd_raft::testing::MemKv;
use ferrocd_raft::{BUCKETS, Error, Network, Node, NodeId, RaftConfig, RaftNode, Role};

const WAIT: Duration = Duration::from_secs(20);

struct Member {
    node: RaftNode<MemKv>,
    kv: Arc<MemKv>,
    engine: Arc<MemEngine>,
}

/// Members on one router; each keeps its engine and state across restarts.
struct TestCluster {
    router: MemRouter,
    dir: tempfile::TempDir,
    members: BTreeMap<NodeId, Member>,
    snapshot_count: u64,
}

fn node(id: NodeId) -> Node {
    Node { urls: vec![format!("mem://{id}")] }
}

impl TestCluster {
    async fn new(voters: &[NodeId], snapshot_count: u64) -> Self {
        let mut cluster = Self {
            router: MemRouter::new(),
            dir: tempfile::tempdir().unwrap(),
            members: BTreeMap::new(),
            snapshot_count,
        };
        for &id in voters {
            cluster.start(id, Arc::new(MemEngine::new(BUCKETS)), Arc::new(MemKv::default())).await;
        }
        let all = voters.iter().map(|&id| (id, node(id))).collect();
        cluster.members[&voters[0]].node.bootstrap(all).await.unwrap();
        cluster.leader().await;
        cluster
    }

    fn config(&self, id: NodeId) -> RaftConfig {
        let mut config = RaftConfig::new(self.dir.path().join(format!("snap-{id}")));
        config.heartbeat_interval = Duration::from_millis(20);
        config.election_timeout = Duration::from_millis(150);
        config.snapshot_count = self.snapshot_count;
        config
    }

    async fn start(&mut self, id: NodeId, engine: Arc<MemEngine>, kv: Arc<MemKv>) {
        let network = Network::mem(&self.router, id);
        let node = RaftNode::start(id, &self.config(id), engine.clone(), kv.clone(), network).await.unwrap();
        self.members.insert(id, Member { node, kv, engine });
    }

    /// Stops a member (as a crash: its storage stays).
    async fn stop(&mut self, id: NodeId) -> (Arc<MemEngine>, Arc<MemKv>) {
        let member = self.members.remove(&id).unwrap();
        member.node.shutdown().await;
        (member.engine, member.kv)
    }

    async fn restart(&mut self, id: NodeId) {
        let (engine, kv) = self.stop(id).await;
        self.start(id, engine, kv).await;
    }

    /// The leader: a running member that leads and that a majority of the running members
    /// follow (waits for one).
    async fn leader(&self) -> NodeId {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        self.leader_among(&ids).await
    }

    async fn leader_among(&self, ids: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // The leader of the newest term (a cut-off old leader may still think it leads).
            let statuses: Vec<_> = ids.iter().map(|id| self.members[id].node.status()).collect();
            let newest = statuses.iter().map(|s| s.term).max().unwrap_or(0);
            if let Some(s) = statuses.iter().find(|s| s.role == Role::Leader && s.term == newest) {
                return s.id;
            }
            if tokio::time::Instant::now() >= deadline {
                let statuses: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        let s = self.members[id].node.status();
                        (s.id, s.role, s.leader, s.term, s.applied)
                    })
                    .collect();
                panic!("no leader among {ids:?}: {statuses:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Proposes through the leader, retrying while leadership moves.
    async fn put(&self, key: &str, value: &str) -> Result<Option<String>, Error> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leader = self.leader().await;
            match self.members[&leader].node.propose(MemKv::set(key, value)).await {
                Err(Error::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {}
                other => return other,
            }
        }
    }

    /// The leader's committed index: every write it acknowledged is at or below it.
    async fn committed(&self) -> u64 {
        self.members[&self.leader().await].node.status().committed
    }

    /// Waits until every running member applied index `index`.
    async fn converge(&self, index: u64) {
        for member in self.members.values() {
            member.node.wait_until(WAIT, |s| s.applied >= index).await.unwrap();
        }
    }
}

fn applied_once(kv: &MemKv) {
    let applied = kv.applied();
    let mut sorted = applied.clone();
    sorted.dedup();
    assert_eq!(applied, sorted, "an entry was applied twice or out of order");
    assert!(applied.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_and_followers_name_the_leader() {
    let cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    for i in 0..20 {
        assert_eq!(cluster.put(&format!("k{i}"), "v").await.unwrap(), None);
    }
    assert_eq!(cluster.put("k0", "w").await.unwrap(), Some("v".into()));
    let leader = cluster.leader().await;
    let index = cluster.committed().await;
    cluster.converge(index).await;
    for member in cluster.members.values() {
        assert_eq!(member.kv.get("k0").as_deref(), Some("w"));
        assert_eq!(member.kv.len(), 20);
        applied_once(&member.kv);
    }
    let follower = cluster.members.keys().copied().find(|&id| id != leader).unwrap();
    match cluster.members[&follower].node.propose(MemKv::set("x", "y")).await {
        Err(Error::NotLeader { leader: Some((id, n)) }) => {
            assert_eq!(id, leader);
            assert_eq!(n, node(leader));
        }
        other => panic!("a follower accepted a proposal: {other:?}"),
    }
    assert!(matches!(cluster.members[&follower].node.read_barrier().await, Err(Error::NotLeader { .. })));
    assert!(cluster.members[&leader].node.read_barrier().await.unwrap() >= index);
    let status = cluster.members[&leader].node.status();
    assert_eq!(status.members.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert!(status.term >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_under_writes_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    let mut acked = Vec::new();
    for i in 0..30 {
        cluster.put(&format!("a{i}"), "v").await.unwrap();
        acked.push(format!("a{i}"));
    }
    let old = cluster.leader().await;
    let (engine, kv) = cluster.stop(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    for i in 0..30 {
        cluster.put(&format!("b{i}"), "v").await.unwrap();
        acked.push(format!("b{i}"));
    }
    let index = cluster.committed().await;
    cluster.converge(index).await;
    for member in cluster.members.values() {
        for key in &acked {
            assert_eq!(member.kv.get(key).as_deref(), Some("v"), "{key} lost");
        }
        applied_once(&member.kv);
    }
    // The old leader comes back as a follower and catches up.
    cluster.start(old, engine, kv).await;
    cluster.converge(index).await;
    assert_eq!(cluster.members[&old].kv.len(), acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_refuses_and_then_converges() {
    let cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    cluster.put("before", "v").await.unwrap();
    let old = cluster.leader().await;
    let majority: Vec<NodeId> = cluster.members.keys().copied().filter(|&id| id != old).collect();
    cluster.router.partition(&[&[old], &majority]);
    // The majority elects a leader and keeps serving.
    let new = cluster.leader_among(&majority).await;
    cluster.members[&new].node.propose(MemKv::set("during", "v")).await.unwrap();
    cluster.members[&new].node.read_barrier().await.unwrap();
    // The cut-off old leader can neither confirm a read nor commit a write.
    let minority = &cluster.members[&old].node;
    let read = tokio::time::timeout(Duration::from_secs(2), minority.read_barrier()).await;
    assert!(!matches!(read, Ok(Ok(_))), "a minority member served a linearizable read: {read:?}");
    let write = tokio::time::timeout(Duration::from_secs(2), minority.propose(MemKv::set("lost", "v"))).await;
    assert!(!matches!(write, Ok(Ok(_))), "a minority member committed a write: {write:?}");
    cluster.router.heal();
    let leader = cluster.leader().await;
    cluster.members[&leader].node.propose(MemKv::set("after", "v")).await.unwrap();
    let index = cluster.committed().await;
    cluster.converge(index).await;
    for member in cluster.members.values() {
        assert_eq!(member.kv.get("during").as_deref(), Some("v"));
        assert_eq!(member.kv.get("after").as_deref(), Some("v"));
        applied_once(&member.kv);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_is_added_promoted_and_a_member_removed() {
    let mut cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    for i in 0..10 {
        cluster.put(&format!("k{i}"), "v").await.unwrap();
    }
    cluster.start(4, Arc::new(MemEngine::new(BUCKETS)), Arc::new(MemKv::default())).await;
    let leader = cluster.leader().await;
    let lead = &cluster.members[&leader].node;
    lead.add_learner(4, node(4)).await.unwrap();
    let status = lead.status();
    assert!(status.members.learners.contains_key(&4));
    assert!(!status.members.voters.contains_key(&4));
    let index = status.committed;
    cluster.members[&4].node.wait_until(WAIT, |s| s.applied >= index).await.unwrap();
    assert_eq!(cluster.members[&4].kv.len(), 10);
    assert!(matches!(lead.promote(9).await, Err(Error::MemberNotFound(9))));
    lead.promote(4).await.unwrap();
    assert!(lead.status().members.voters.contains_key(&4));
    let victim = cluster.members.keys().copied().find(|&id| id != leader && id != 4).unwrap();
    lead.remove(victim).await.unwrap();
    let members = lead.status().members;
    assert!(!members.voters.contains_key(&victim) && !members.learners.contains_key(&victim));
    assert!(matches!(lead.remove(victim).await, Err(Error::MemberNotFound(_))));
    cluster.stop(victim).await;
    cluster.put("after", "v").await.unwrap();
    let index = cluster.committed().await;
    cluster.converge(index).await;
    assert_eq!(cluster.members[&4].kv.get("after").as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_restarts_in_turn_without_reapplying() {
    let mut cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    for round in 0..3u64 {
        for i in 0..10 {
            cluster.put(&format!("r{round}-{i}"), "v").await.unwrap();
        }
        let id = round + 1;
        cluster.restart(id).await;
        let index = cluster.committed().await;
        cluster.converge(index).await;
    }
    for member in cluster.members.values() {
        assert_eq!(member.kv.len(), 30);
        applied_once(&member.kv);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_by_snapshot() {
    let mut cluster = TestCluster::new(&[1, 2, 3], 20).await;
    let leader = cluster.leader().await;
    let lagging = cluster.members.keys().copied().find(|&id| id != leader).unwrap();
    let (engine, kv) = cluster.stop(lagging).await;
    for i in 0..200 {
        cluster.put(&format!("s{i}"), "v").await.unwrap();
    }
    cluster.members[&leader].node.snapshot().await.unwrap();
    // More writes until the leader has purged the log the lagging member needs (it postpones
    // a purge while a replication attempt reads that log).
    let mut extra = 0;
    while cluster.members[&leader].node.status().purged < 100 {
        assert!(extra < 5_000, "the leader never purged its log");
        cluster.put(&format!("t{extra}"), "v").await.unwrap();
        extra += 1;
    }
    cluster.start(lagging, engine, kv).await;
    let index = cluster.committed().await;
    cluster.members[&lagging].node.wait_until(WAIT, |s| s.applied >= index).await.unwrap();
    let kv = &cluster.members[&lagging].kv;
    assert_eq!(kv.len(), 200 + extra);
    // The log it missed was purged: it caught up by installing a snapshot.
    assert!(kv.installs() >= 1, "applied {} entries one by one, installed no snapshot", kv.applied().len());
    applied_once(kv);
}
