//! Clusters of in-process members on the in-memory transport, with the example state machine:
//! elections, replication, leader loss, partitions, membership changes, restarts and snapshot
//! catch-up. Every wait is on a condition with a deadline.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::MemEngine;
use ferrocd_raft::testing::MemKv;
use ferrocd_raft::{BUCKETS, Error, NodeId};
use support::{TestCluster, WAIT, applied_once, node};

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
    // A follower serves linearizable reads through a read index from the leader.
    assert!(cluster.members[&follower].node.read_barrier().await.unwrap() >= index);
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
    cluster.put_among(&majority, "during", "v").await.unwrap();
    // Both majority members, leader and follower (through a read index), serve linearizable
    // reads (retried while a fresh leadership settles).
    for &id in &majority {
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Err(e) = cluster.members[&id].node.read_barrier().await {
            assert!(tokio::time::Instant::now() < deadline, "member {id} serves no linearizable read: {e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(cluster.members[&id].kv.get("during").as_deref(), Some("v"));
    }
    // The cut-off old leader can neither confirm a read nor commit a write.
    let minority = &cluster.members[&old].node;
    let read = tokio::time::timeout(Duration::from_secs(2), minority.read_barrier()).await;
    assert!(!matches!(read, Ok(Ok(_))), "a minority member served a linearizable read: {read:?}");
    let write = tokio::time::timeout(Duration::from_secs(2), minority.propose(MemKv::set("lost", "v"))).await;
    assert!(!matches!(write, Ok(Ok(_))), "a minority member committed a write: {write:?}");
    cluster.router.heal();
    // Leadership may move once more as the old leader rejoins: put retries through it.
    cluster.put("after", "v").await.unwrap();
    let index = cluster.committed().await;
    cluster.converge(index).await;
    for member in cluster.members.values() {
        assert_eq!(member.kv.get("during").as_deref(), Some("v"));
        assert_eq!(member.kv.get("after").as_deref(), Some("v"));
        applied_once(&member.kv);
        // Cut off for a while, the minority asked about its membership: it was not removed.
        assert!(!member.node.is_removed());
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
    // Catching up, it applied memberships without itself: it is joining, not removed.
    assert!(!cluster.members[&4].node.is_removed());
    assert!(matches!(lead.promote(9).await, Err(Error::MemberNotFound(9))));
    lead.promote(4).await.unwrap();
    assert!(lead.status().members.voters.contains_key(&4));
    let victim = cluster.members.keys().copied().find(|&id| id != leader && id != 4).unwrap();
    lead.remove(victim).await.unwrap();
    let members = lead.status().members;
    assert!(!members.voters.contains_key(&victim) && !members.learners.contains_key(&victim));
    assert!(matches!(lead.remove(victim).await, Err(Error::MemberNotFound(_))));
    // The removed member learns it (the leader no longer replicates to it: it asks), the others
    // do not think themselves removed.
    tokio::time::timeout(WAIT, cluster.members[&victim].node.removed())
        .await
        .expect("the victim learns it was removed");
    assert!(cluster.members.iter().all(|(&id, m)| (id == victim) == m.node.is_removed()));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_member_asked_for() {
    let cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    cluster.put("k", "v").await.unwrap();
    for _ in 0..3 {
        let leader = cluster.leader().await;
        let target = cluster.members.keys().copied().find(|&id| id != leader).unwrap();
        cluster.members[&leader].node.transfer_leader(target).await.unwrap();
        for member in cluster.members.values() {
            member.node.wait_until(WAIT, |s| s.leader == Some(target)).await.unwrap();
        }
        cluster.put("k", "w").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_leader_knows_it_and_the_rest_carry_on() {
    let cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    cluster.put("k", "v").await.unwrap();
    let leader = cluster.leader().await;
    cluster.members[&leader].node.remove(leader).await.unwrap();
    tokio::time::timeout(WAIT, cluster.members[&leader].node.removed()).await.expect("the old leader learns it");
    let rest: Vec<NodeId> = cluster.members.keys().copied().filter(|&id| id != leader).collect();
    cluster.leader_among(&rest).await;
    cluster.put_among(&rest, "after", "v").await.unwrap();
    assert!(rest.iter().all(|id| !cluster.members[id].node.is_removed()));
}

/// A member elected leader that never hears a follower acknowledge it (its appends are lost
/// from the start, then it is cut off entirely) names itself leader for an election timeout
/// from the start of its term at most, as etcd's check-quorum would have it step down: it must
/// not keep answering as leader (lease keep-alives, say) while the others elect another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_never_acknowledged_stops_naming_itself_after_an_election_timeout() {
    let cluster = TestCluster::new(&[1, 2, 3], 1000).await;
    cluster.put("k", "v").await.unwrap();
    let leader = cluster.leader().await;
    let target = cluster.members.keys().copied().find(|&id| id != leader).unwrap();
    let others: Vec<NodeId> = cluster.members.keys().copied().filter(|&id| id != target).collect();
    cluster.router.cut_appends(target, &others);
    cluster.members[&leader].node.transfer_leader(target).await.unwrap();
    let elected = cluster.members[&target].node.wait_until(WAIT, |s| s.role == ferrocd_raft::Role::Leader).await;
    elected.unwrap();
    cluster.router.isolate(target);
    let election_timeout = Duration::from_millis(150);
    // Named at most an election timeout (plus a status refresh) after its election.
    cluster.members[&target]
        .node
        .wait_until(election_timeout * 4, |s| s.leader.is_none())
        .await
        .expect("a leader no follower ever acknowledged still names itself");
    // The others elect one of their own meanwhile.
    let new = cluster.leader_among(&others).await;
    assert_ne!(new, target);
    cluster.router.heal();
    cluster.put("after", "v").await.unwrap();
}
