//! SIGTERM stops a member promptly and cleanly while peers hold long-lived replication streams
//! into it and a client watches: graceful shutdown waits for what is in flight, but not for
//! streams that never end by themselves (it once waited forever).
//! Each member must exit within 10 s with status 0.

use std::time::Duration;

use ferrocd_test_utils::{Cluster, EtcdctlProcess, Kind, Signal, etcdctl_ok, wait_for};

#[test]
fn sigterm_stops_each_member_of_a_cluster_within_seconds() {
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, &[]);
    assert_eq!(etcdctl_ok(&cluster.members[0].endpoint(), &["put", "k", "v"]), "OK\n");
    // From revision 1, so the watch sees both puts however late it starts.
    let mut watch = EtcdctlProcess::spawn(&cluster.members[1].endpoint(), &["watch", "k", "--rev", "1"]);
    etcdctl_ok(&cluster.members[2].endpoint(), &["put", "k", "w"]);
    watch.lines(6, Duration::from_secs(10));
    // Followers and leader alike, each while the others still run.
    for member in &mut cluster.members {
        member.signal(Signal::TERM);
        wait_for("the member to exit after SIGTERM", Duration::from_secs(10), || member.exited());
        let status = member.exit_status().expect("an exit status");
        assert!(status.success(), "{} exited with {status}", member.name());
    }
}
