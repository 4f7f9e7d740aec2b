//! Concurrent clients against a 3-member in-process cluster under faults (leader crash and
//! restart, minority partition and heal, every member restarted in turn, a learner added,
//! promoted and a voter removed), reads served by leader and followers alike, their
//! histories checked for linearizability; and the checker catching a deliberately broken read
//! path (local reads without the read barrier).

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::MemEngine;
use ferrocd_lincheck::{History, Op, Outcome, Output, check};
use ferrocd_raft::testing::MemKv;
use ferrocd_raft::{BUCKETS, Error, NodeId, RaftNode};
use support::{TestCluster, WAIT, node};
use tokio::sync::RwLock;

const OP_TIMEOUT: Duration = Duration::from_secs(1);
const CLIENTS: u64 = 4;
const OPS_PER_CLIENT: u64 = 80;

/// One client: puts through the leader and linearizable reads from every member in turn (the
/// read barrier — on a follower, a read index from the leader — then the member's local state).
async fn client(cluster: Arc<RwLock<TestCluster>>, history: Arc<History>, id: u64) {
    for seq in 0..OPS_PER_CLIENT {
        let key = format!("k{}", (id * 7 + seq * 13) % 3);
        let c = cluster.read().await;
        let leader = c.leader().await;
        let member = &c.members[&leader];
        if seq % 2 == 0 {
            let value = format!("c{id}-{seq}");
            let op = history.invoke(id, Op::put(key.clone(), value.clone()));
            let done = tokio::time::timeout(OP_TIMEOUT, member.node.propose(MemKv::set(&key, &value))).await;
            // A failed or timed-out proposal may still commit later: its outcome is unknown.
            let outcome = if matches!(done, Ok(Ok(_))) { Outcome::Ok(Output::Ack) } else { Outcome::Unknown };
            backoff(&outcome).await;
            history.complete(op, outcome);
        } else {
            let ids: Vec<u64> = c.members.keys().copied().collect();
            let member = &c.members[&ids[((id + seq / 2) % ids.len() as u64) as usize]];
            let op = history.invoke(id, Op::get(key.clone()));
            let read = async {
                member.node.read_barrier().await?;
                Ok::<_, ferrocd_raft::Error>(member.kv.get(&key).map(String::into_bytes))
            };
            let outcome = match tokio::time::timeout(OP_TIMEOUT, read).await {
                Ok(Ok(value)) => Outcome::Ok(Output::Read(value)),
                _ => Outcome::Unknown,
            };
            backoff(&outcome).await;
            history.complete(op, outcome);
        }
    }
}

/// After a failure a client pauses, as real clients back off: a read refused at once while
/// there is no leader would otherwise use up the run's operations in a burst of failures
/// (the faults are timed by operation counts).
async fn backoff(outcome: &Outcome) {
    if matches!(outcome, Outcome::Unknown) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `history` holds at least `n` operations.
async fn after_ops(history: &History, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while history.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "clients stalled at {} operations", history.len());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run(fault: impl AsyncFnOnce(Arc<RwLock<TestCluster>>, Arc<History>)) -> Arc<History> {
    let cluster = Arc::new(RwLock::new(TestCluster::new(&[1, 2, 3], 1000).await));
    let history = Arc::new(History::new());
    let clients: Vec<_> = (0..CLIENTS).map(|id| tokio::spawn(client(cluster.clone(), history.clone(), id))).collect();
    fault(cluster.clone(), history.clone()).await;
    for c in clients {
        c.await.unwrap();
    }
    history
}

fn assert_linearizable(history: &History) {
    let acked = history.records().iter().filter(|r| matches!(r.outcome, Outcome::Ok(_))).count();
    assert!(acked > history.len() / 2, "too few operations succeeded ({acked} of {})", history.len());
    if let Err(v) = check(history) {
        panic!("not linearizable: {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_across_a_leader_crash_and_restart() {
    let history = run(async |cluster, history| {
        after_ops(&history, 60).await;
        let mut c = cluster.write().await;
        let old = c.leader().await;
        let (engine, kv) = c.stop(old).await;
        drop(c);
        after_ops(&history, 180).await;
        cluster.write().await.start(old, engine, kv).await;
    })
    .await;
    assert_linearizable(&history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_across_a_minority_partition_and_heal() {
    let history = run(async |cluster, history| {
        after_ops(&history, 60).await;
        {
            let c = cluster.read().await;
            let old = c.leader().await;
            let rest: Vec<u64> = c.members.keys().copied().filter(|&id| id != old).collect();
            c.router.partition(&[&[old], &rest]);
        }
        after_ops(&history, 180).await;
        cluster.read().await.router.heal();
    })
    .await;
    assert_linearizable(&history);
}

/// Runs a membership change on the leader, retrying while leadership moves.
async fn at_leader(cluster: &RwLock<TestCluster>, change: impl AsyncFn(&RaftNode<MemKv>) -> Result<(), Error>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = cluster.read().await;
        let leader = c.leader().await;
        match change(&c.members[&leader].node).await {
            Ok(()) => return,
            Err(Error::NotLeader { .. } | Error::ChangeInProgress) if tokio::time::Instant::now() < deadline => {}
            Err(e) => panic!("membership change failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_while_every_member_restarts_in_turn() {
    let history = run(async |cluster, history| {
        for (i, id) in [1, 2, 3].into_iter().enumerate() {
            after_ops(&history, 40 + i * 60).await;
            cluster.write().await.restart(id).await;
        }
    })
    .await;
    assert_linearizable(&history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_across_membership_changes() {
    let history = run(async |cluster, history| {
        after_ops(&history, 40).await;
        cluster.write().await.start(4, Arc::new(MemEngine::new(BUCKETS)), Arc::new(MemKv::default())).await;
        at_leader(&cluster, async |lead| lead.add_learner(4, node(4)).await).await;
        after_ops(&history, 100).await;
        at_leader(&cluster, async |lead| lead.promote(4).await).await;
        after_ops(&history, 160).await;
        let victim: NodeId = {
            let c = cluster.read().await;
            let leader = c.leader().await;
            [1, 2, 3].into_iter().find(|&id| id != leader).unwrap()
        };
        at_leader(&cluster, async |lead| match lead.remove(victim).await {
            // A retry after a leader change may find the change already made.
            Err(Error::MemberNotFound(_)) => Ok(()),
            other => other,
        })
        .await;
        cluster.write().await.stop(victim).await;
    })
    .await;
    assert_linearizable(&history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_reads_served_without_the_barrier() {
    let cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    let history = History::new();
    let id = history.invoke(1, Op::put("k", "v1"));
    cluster.put("k", "v1").await.unwrap();
    history.complete(id, Outcome::Ok(Output::Ack));
    let old = cluster.leader().await;
    // The old leader is cut off; the majority elects a new one and takes a write.
    let rest: Vec<u64> = cluster.members.keys().copied().filter(|&id| id != old).collect();
    cluster.router.partition(&[&[old], &rest]);
    let id = history.invoke(2, Op::put("k", "v2"));
    cluster.put_among(&rest, "k", "v2").await.unwrap();
    history.complete(id, Outcome::Ok(Output::Ack));
    // The correct read path refuses on the cut-off member...
    let barrier = tokio::time::timeout(OP_TIMEOUT, cluster.members[&old].node.read_barrier()).await;
    assert!(!matches!(barrier, Ok(Ok(_))), "a cut-off member passed the read barrier");
    // ...while the broken one serves its stale state, and the checker says so.
    let id = history.invoke(3, Op::get("k"));
    let stale = cluster.members[&old].kv.get("k").map(String::into_bytes);
    history.complete(id, Outcome::Ok(Output::Read(stale)));
    let violation = check(&history).expect_err("a stale read passed the checker");
    assert_eq!(violation.key, b"k");
    cluster.router.heal();
}
