//! Leases end to end: the real etcdctl's `lease` commands and `put --lease`, etcd's errors over
//! gRPC, keep-alive streams, and expiry deleting attached keys.

use std::time::Duration;

use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest,
};
use ferrocd_test_utils::{Kind, Member, etcdctl, etcdctl_ok, etcdctl_stderr, wait_for};

use crate::grpc::Grpc;

const WAIT: Duration = Duration::from_secs(20);

/// The hex lease ID in etcdctl's `lease <id> granted with TTL(<n>s)`.
fn granted_id(out: &str) -> String {
    out.split_whitespace().nth(1).unwrap_or_else(|| panic!("no lease ID in {out:?}")).to_string()
}

#[test]
fn etcdctl_lease_commands() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    let out = etcdctl_ok(&ep, &["lease", "grant", "100"]);
    assert!(out.ends_with(" granted with TTL(100s)\n"), "{out}");
    let id = granted_id(&out);
    // A TTL below the minimum (1.5 election timeouts) is raised to it.
    let out = etcdctl_ok(&ep, &["lease", "grant", "1"]);
    assert!(out.ends_with(" granted with TTL(2s)\n"), "{out}");
    let short = granted_id(&out);

    assert_eq!(etcdctl_ok(&ep, &["put", "held/a", "1", "--lease", &id]), "OK\n");
    assert_eq!(etcdctl_ok(&ep, &["put", "held/b", "2", "--lease", &id]), "OK\n");
    let ttl = etcdctl_ok(&ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(100s), remaining(")), "{ttl}");
    assert!(ttl.ends_with("s), attached keys([held/a held/b])\n"), "{ttl}");
    let list = etcdctl_ok(&ep, &["lease", "list"]);
    assert!(list.starts_with("found 2 leases\n") && list.contains(&id) && list.contains(&short), "{list}");
    let once = etcdctl_ok(&ep, &["lease", "keep-alive", "--once", &id]);
    assert_eq!(once, format!("lease {id} keepalived with TTL(100)\n"));

    assert_eq!(etcdctl_ok(&ep, &["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(etcdctl_ok(&ep, &["get", "held/", "--prefix"]), "");
    assert_eq!(etcdctl_ok(&ep, &["lease", "timetolive", &id]), format!("lease {id} already expired\n"));
    let out = etcdctl(&ep, &["lease", "revoke", &id], None);
    assert_eq!(etcdctl_stderr(&out), "Error: failed to revoke lease (etcdserver: requested lease not found)\n");

    // The short lease expires by itself, and its key with it.
    etcdctl_ok(&ep, &["put", "brief", "x", "--lease", &short]);
    wait_for("the expired lease's key to vanish", WAIT, || etcdctl_ok(&ep, &["get", "brief"]).is_empty());
    assert_eq!(etcdctl_ok(&ep, &["lease", "timetolive", &short]), format!("lease {short} already expired\n"));
    assert_eq!(etcdctl_ok(&ep, &["lease", "list"]), "found 0 leases\n");
}

#[test]
fn lease_errors_and_keep_alive_over_grpc() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let api = Grpc::connect(&member.endpoint());
    let mut leases = LeaseClient::new(api.channel.clone());
    api.rt.block_on(async {
        let granted = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 42 }).await.unwrap().into_inner();
        assert_eq!((granted.id, granted.ttl), (42, 60));
        let again = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 42 }).await.unwrap_err();
        assert_eq!(
            (again.code(), again.message()),
            (tonic::Code::FailedPrecondition, "etcdserver: lease already exists")
        );
        let huge = leases.lease_grant(LeaseGrantRequest { ttl: 9_000_000_001, id: 0 }).await.unwrap_err();
        assert_eq!((huge.code(), huge.message()), (tonic::Code::OutOfRange, "etcdserver: too large lease TTL"));
        let missing = leases.lease_revoke(LeaseRevokeRequest { id: 7 }).await.unwrap_err();
        assert_eq!(
            (missing.code(), missing.message()),
            (tonic::Code::NotFound, "etcdserver: requested lease not found")
        );
        let unknown =
            leases.lease_time_to_live(LeaseTimeToLiveRequest { id: 7, keys: true }).await.unwrap().into_inner();
        assert_eq!((unknown.ttl, unknown.granted_ttl), (-1, 0));

        let server_chosen = leases.lease_grant(LeaseGrantRequest { ttl: 30, id: 0 }).await.unwrap().into_inner();
        assert!(server_chosen.id > 0);

        // Keep-alives on one stream: known leases get their TTL, unknown ones TTL 0.
        let requests = futures::stream::iter([42, 7, server_chosen.id].map(|id| LeaseKeepAliveRequest { id }));
        let mut stream = leases.lease_keep_alive(requests).await.unwrap().into_inner();
        let mut got = Vec::new();
        for _ in 0..3 {
            let resp = tokio::time::timeout(WAIT, stream.message()).await.unwrap().unwrap().unwrap();
            got.push((resp.id, resp.ttl));
        }
        assert_eq!(got, [(42, 60), (7, 0), (server_chosen.id, 30)]);
    });
    // A put naming a lease that does not exist.
    let mut kv = api.kv.clone();
    let err = api
        .rt
        .block_on(kv.put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease: 99, ..Default::default() }))
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));
}

#[test]
fn leases_and_their_keys_survive_a_restart() {
    let mut member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    let id = granted_id(&etcdctl_ok(&ep, &["lease", "grant", "600"]));
    etcdctl_ok(&ep, &["put", "kept", "1", "--lease", &id]);
    member.kill();
    member.restart();
    let ep = member.endpoint();
    let ttl = etcdctl_ok(&ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(600s)")) && ttl.contains("[kept]"), "{ttl}");
    assert_eq!(etcdctl_ok(&ep, &["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(etcdctl_ok(&ep, &["get", "kept"]), "");
}
