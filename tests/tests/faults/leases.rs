//! A lease revoked through one leader is never renewed by the next: a new leader answers
//! keep-alives and time-to-live only once it has applied what was committed before it.

use std::time::Duration;

use ferrocd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, MoveLeaderRequest,
};
use ferrocd_test_utils::{Cluster, Kind};

use crate::support::{Client, TIMING, leader, one_at_a_time};

/// Member `slow` takes 3 s to apply a revoke it has committed (a failpoint); leadership moves
/// to it right after the revoke was acknowledged. Its keep-alive must not bring the lease back.
#[test]
fn a_new_leader_does_not_renew_a_lease_revoked_before_it_led() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::prepare(Kind::Ferrocd, 3, TIMING);
    let slow = 2;
    cluster.members[slow].set_env("FAILPOINTS", "apply-lease-revoke=sleep(3000)");
    cluster.launch();
    let member_id = |i: usize| {
        let status = Client::connect(&cluster.members[i].endpoint()).status(Duration::from_secs(5));
        status.and_then(|s| s.header).expect("a status").member_id
    };
    let move_leader = |from: usize, to: usize| {
        let mut client = Client::connect(&cluster.members[from].endpoint());
        let target_id = member_id(to);
        client.rt.block_on(client.maintenance.move_leader(MoveLeaderRequest { target_id })).expect("move-leader");
    };
    // The slow member must not lead yet.
    if leader(&cluster) == slow {
        move_leader(slow, 0);
    }
    let l = leader(&cluster);
    assert_ne!(l, slow);
    let mut at_leader = Client::connect(&cluster.members[l].endpoint());
    let granted =
        at_leader.rt.block_on(at_leader.lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })).unwrap().into_inner();
    let id = granted.id;
    at_leader.rt.block_on(at_leader.lease.lease_revoke(LeaseRevokeRequest { id })).unwrap();
    // Now lead from the member that has the revoke committed but not applied yet.
    move_leader(l, slow);
    let mut new_leader = Client::connect(&cluster.members[slow].endpoint());
    let requests = futures::stream::iter([LeaseKeepAliveRequest { id }]);
    let answer = new_leader.rt.block_on(async {
        let mut responses = new_leader.lease.lease_keep_alive(requests).await.unwrap().into_inner();
        responses.message().await
    });
    let answer = answer.expect("a keep-alive answer").expect("one response");
    assert_eq!(answer.ttl, 0, "a revoked lease was renewed by the next leader: {answer:?}");
    let ttl = new_leader
        .rt
        .block_on(new_leader.lease.lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false }))
        .unwrap()
        .into_inner();
    assert_eq!(ttl.ttl, -1, "a revoked lease still has a TTL: {ttl:?}");
}
