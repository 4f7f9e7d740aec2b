//! Every request has a server-side deadline (etcd's: 5 s plus two election timeouts) and
//! fails with etcd's error when it passes, rather than waiting as long as the client does.
//! Each case runs against etcd too, so the two answers are compared.

use std::time::{Duration, Instant};

use ferrocd_test_utils::{Cluster, Kind, etcdctl, etcdctl_ok, etcdctl_stderr, wait_for};

use crate::support::{TIMING, WAIT, leader, one_at_a_time};

/// Runs `etcdctl --command-timeout=35s put` against `endpoint`: how long it took, and what
/// etcdctl printed on standard error.
fn slow_put(endpoint: &str) -> (Duration, String) {
    let began = Instant::now();
    let out = etcdctl(endpoint, &["--command-timeout=35s", "put", "k", "v"], None);
    assert!(!out.status.success(), "a write succeeded without a quorum");
    (began.elapsed(), etcdctl_stderr(&out))
}

fn quorum_lost(kind: Kind) -> Vec<(Duration, String)> {
    let cluster = Cluster::start(kind, 3, TIMING);
    let l = leader(&cluster);
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let mut answers = Vec::new();
    // Both followers paused: the leader cannot commit.
    for &f in &followers {
        cluster.members[f].pause();
    }
    answers.push(slow_put(&cluster.members[l].endpoint()));
    for &f in &followers {
        cluster.members[f].resume();
    }
    wait_for("a write once the quorum is back", WAIT, || {
        etcdctl(&cluster.endpoints(), &["put", "k", "after"], None).status.success()
    });
    // The leader and one follower paused: the other follower has nobody to forward to.
    let l = leader(&cluster);
    let f = (l + 1) % 3;
    let alone = (l + 2) % 3;
    cluster.members[l].pause();
    cluster.members[f].pause();
    answers.push(slow_put(&cluster.members[alone].endpoint()));
    cluster.members[l].resume();
    cluster.members[f].resume();
    wait_for("a write once the quorum is back", WAIT, || {
        etcdctl(&cluster.endpoints(), &["put", "k", "after"], None).status.success()
    });
    assert_eq!(etcdctl_ok(&cluster.endpoints(), &["get", "k", "--print-value-only"]), "after\n");
    answers
}

#[test]
fn writes_fail_with_etcds_timeout_when_the_quorum_is_lost() {
    let _serial = one_at_a_time();
    let etcd = quorum_lost(Kind::Etcd);
    let ferrocd = quorum_lost(Kind::Ferrocd);
    eprintln!("etcd: {etcd:?}\nferrocd: {ferrocd:?}");
    // At the leader: etcd's plain timeout, after its request timeout (7 s), not the client's 35.
    let (took, said) = &ferrocd[0];
    assert!(said.contains("Error: etcdserver: request timed out\n"), "{said}");
    assert!(*took >= Duration::from_secs(6) && *took < Duration::from_secs(15), "{took:?}");
    assert!(etcd[0].1.contains("Error: etcdserver: request timed out\n"), "etcd answered otherwise: {}", etcd[0].1);
    // At a follower with no leader to reach: one of etcd's Unavailable answers, in time too.
    let (took, said) = &ferrocd[1];
    assert!(*took < Duration::from_secs(20), "{took:?}: {said}");
    let unavailable = ["etcdserver: request timed out", "etcdserver: no leader", "etcdserver: leader changed"];
    assert!(unavailable.iter().any(|e| said.contains(e)), "{said}");
}
