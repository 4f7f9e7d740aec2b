//! Members talking over the real gRPC transport on loopback: replication, and a new member
//! catching up from a snapshot streamed in chunks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::MemEngine;
use ferrocd_raft::testing::MemKv;
use ferrocd_raft::{BUCKETS, Error, Network, Node, NodeId, RaftConfig, RaftNode, Role};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(20);

struct Member {
    node: RaftNode<MemKv>,
    kv: Arc<MemKv>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(id: NodeId, dir: &std::path::Path, listener: TcpListener) -> Member {
    let mut config = RaftConfig::new(dir.join(format!("snap-{id}")));
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout = Duration::from_millis(500);
    config.snapshot_count = 50;
    let kv = Arc::new(MemKv::default());
    let engine = Arc::new(MemEngine::new(BUCKETS));
    let node = RaftNode::start(id, &config, engine, kv.clone(), Network::grpc()).await.unwrap();
    let service = node.peer_service();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    Member { node, kv, server }
}

async fn listener() -> (TcpListener, Node) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, Node { urls: vec![url] })
}

async fn leader(members: &BTreeMap<NodeId, Member>) -> NodeId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let statuses: Vec<_> = members.values().map(|m| m.node.status()).collect();
        let newest = statuses.iter().map(|s| s.term).max().unwrap_or(0);
        if let Some(s) = statuses.iter().find(|s| s.role == Role::Leader && s.term == newest) {
            return s.id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Proposes through the leader, retrying while leadership moves (a loaded machine may miss a
/// heartbeat).
async fn propose(members: &BTreeMap<NodeId, Member>, command: Vec<u8>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match members[&leader(members).await].node.propose(command.clone()).await {
            Ok(_) => return,
            Err(Error::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_and_snapshot_transfer_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let (l, node) = listener().await;
        nodes.insert(id, node);
        members.insert(id, start(id, dir.path(), l).await);
    }
    members[&1].node.bootstrap(nodes).await.unwrap();
    for i in 0..300 {
        let command = MemKv::set(&format!("k{i}"), &"v".repeat(100));
        propose(&members, command).await;
    }
    let lead = leader(&members).await;
    // A follower forwards nothing: it names the leader and its URL.
    let follower = members.keys().copied().find(|&id| id != lead).unwrap();
    match members[&follower].node.propose(MemKv::set("x", "y")).await {
        Err(Error::NotLeader { leader: Some((id, _)) }) => assert_eq!(id, lead),
        other => panic!("{other:?}"),
    }
    let committed = members[&lead].node.status().committed;
    for member in members.values() {
        member.node.wait_until(WAIT, |s| s.applied >= committed).await.unwrap();
        assert_eq!(member.kv.len(), 300);
    }
    // Snapshots were taken (every 50 entries) and the log purged: a new member gets a snapshot.
    members[&lead].node.wait_until(WAIT, |s| s.purged > 0).await.unwrap();
    let (l, node4) = listener().await;
    members.insert(4, start(4, dir.path(), l).await);
    members[&lead].node.add_learner(4, node4).await.unwrap();
    members[&4].node.wait_until(WAIT, |s| s.applied >= committed).await.unwrap();
    assert_eq!(members[&4].kv.len(), 300);
    assert!(members[&4].kv.installs() >= 1, "the learner caught up without a snapshot");
    for member in members.values() {
        member.node.shutdown().await;
        member.server.abort();
    }
}
