//! The in-process test cluster shared by the cluster tests: members on one [`MemRouter`], each
//! keeping its engine and state machine across restarts; every wait has a deadline.

#![allow(dead_code, reason = "each test file uses part of the harness")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::MemEngine;
use ferrocd_raft::mem::MemRouter;
use ferrocd_raft::testing::MemKv;
use ferrocd_raft::{BUCKETS, Error, Network, Node, NodeId, RaftConfig, RaftNode, Role};

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Member {
    pub node: RaftNode<MemKv>,
    pub kv: Arc<MemKv>,
    pub engine: Arc<MemEngine>,
}

/// Members on one router; each keeps its engine and state across restarts.
pub struct TestCluster {
    pub router: MemRouter,
    dir: tempfile::TempDir,
    pub members: BTreeMap<NodeId, Member>,
    snapshot_count: u64,
}

pub fn node(id: NodeId) -> Node {
    Node { urls: vec![format!("mem://{id}")] }
}

impl TestCluster {
    pub async fn new(voters: &[NodeId], snapshot_count: u64) -> Self {
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

    pub async fn start(&mut self, id: NodeId, engine: Arc<MemEngine>, kv: Arc<MemKv>) {
        let network = Network::mem(&self.router, id);
        let node = RaftNode::start(id, &self.config(id), engine.clone(), kv.clone(), network).await.unwrap();
        self.members.insert(id, Member { node, kv, engine });
    }

    /// Stops a member (as a crash: its storage stays).
    pub async fn stop(&mut self, id: NodeId) -> (Arc<MemEngine>, Arc<MemKv>) {
        let member = self.members.remove(&id).unwrap();
        member.node.shutdown().await;
        (member.engine, member.kv)
    }

    pub async fn restart(&mut self, id: NodeId) {
        let (engine, kv) = self.stop(id).await;
        self.start(id, engine, kv).await;
    }

    /// The leader: a running member that leads and that a majority of the running members
    /// follow (waits for one).
    pub async fn leader(&self) -> NodeId {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        self.leader_among(&ids).await
    }

    pub async fn leader_among(&self, ids: &[NodeId]) -> NodeId {
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
    pub async fn put(&self, key: &str, value: &str) -> Result<Option<String>, Error> {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        self.put_among(&ids, key, value).await
    }

    /// Proposes through the leader among `ids`, retrying while leadership moves.
    pub async fn put_among(&self, ids: &[NodeId], key: &str, value: &str) -> Result<Option<String>, Error> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leader = self.leader_among(ids).await;
            match self.members[&leader].node.propose(MemKv::set(key, value)).await {
                Err(Error::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {}
                other => return other,
            }
        }
    }

    /// The leader's committed index: every write it acknowledged is at or below it.
    pub async fn committed(&self) -> u64 {
        self.members[&self.leader().await].node.status().committed
    }

    /// Waits until every running member applied index `index`.
    pub async fn converge(&self, index: u64) {
        for member in self.members.values() {
            member.node.wait_until(WAIT, |s| s.applied >= index).await.unwrap();
        }
    }
}

pub fn applied_once(kv: &MemKv) {
    let applied = kv.applied();
    let mut sorted = applied.clone();
    sorted.dedup();
    assert_eq!(applied, sorted, "an entry was applied twice or out of order");
    assert!(applied.windows(2).all(|w| w[0] < w[1]));
}
