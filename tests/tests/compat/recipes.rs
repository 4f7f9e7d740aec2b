//! etcdctl's `lock` and `elect` against ferrocd and against etcd, compared: mutual exclusion,
//! queueing behind the holder, leadership handed on when the leader resigns, observers.

use std::time::Duration;

use ferrocd_test_utils::{EtcdctlProcess, Kind, Member, etcdctl_ok, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// `name/<lease hex>` with the lease ID (which differs between servers) replaced.
fn normalise(line: &str) -> String {
    match line.split_once('/') {
        Some((name, id)) if !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()) => format!("{name}/<lease>"),
        _ => line.to_string(),
    }
}

fn keys_under(endpoint: &str, prefix: &str) -> usize {
    etcdctl_ok(endpoint, &["get", prefix, "--prefix", "--keys-only"]).lines().filter(|l| !l.is_empty()).count()
}

fn lock_transcript(member: &Member) -> Vec<String> {
    let ep = member.endpoint();
    let mut log = Vec::new();
    let mut first = EtcdctlProcess::spawn(&ep, &["lock", "door"]);
    let held = first.lines(1, WAIT).remove(0);
    log.push(format!("first holds {}", normalise(&held)));
    let mut second = EtcdctlProcess::spawn(&ep, &["lock", "door"]);
    // The second contender is queued (its key exists) but does not hold the lock.
    wait_for("the second contender to queue", WAIT, || keys_under(&ep, "door/") == 2);
    log.push(format!("second while first holds: {:?}", second.printed()));
    first.interrupt();
    let next = second.lines(1, WAIT).remove(0);
    log.push(format!("second holds {} (same key as first: {})", normalise(&next), next == held));
    second.interrupt();
    wait_for("the lock to be free", WAIT, || keys_under(&ep, "door/") == 0);
    // A command run under the lock.
    let out = etcdctl_ok(&ep, &["lock", "door", "echo", "inside"]);
    log.push(format!("command under the lock: {out:?}"));
    log
}

#[test]
fn etcdctl_lock_matches_etcd() {
    let etcd = Member::start(Kind::Etcd, &[]);
    let ferrocd = Member::start(Kind::Ferrocd, &[]);
    let got = lock_transcript(&ferrocd);
    assert!(got.contains(&"second while first holds: []".to_string()), "mutual exclusion: {got:?}");
    assert_eq!(got, lock_transcript(&etcd));
}

fn elect_transcript(member: &Member) -> Vec<String> {
    let ep = member.endpoint();
    let mut log = Vec::new();
    let mut observer = EtcdctlProcess::spawn(&ep, &["elect", "-l", "chair"]);
    let mut alice = EtcdctlProcess::spawn(&ep, &["elect", "chair", "alice"]);
    log.extend(alice.lines(2, WAIT).iter().map(|l| format!("alice: {}", normalise(l))));
    log.extend(observer.lines(2, WAIT).iter().map(|l| format!("observer: {}", normalise(l))));
    let mut bob = EtcdctlProcess::spawn(&ep, &["elect", "chair", "bob"]);
    wait_for("bob to queue", WAIT, || keys_under(&ep, "chair/") == 2);
    log.push(format!("bob while alice leads: {:?}", bob.printed()));
    // Alice resigns: bob leads, and the observer sees it.
    alice.interrupt();
    log.extend(bob.lines(2, WAIT).iter().map(|l| format!("bob: {}", normalise(l))));
    log.extend(observer.lines(2, WAIT).iter().map(|l| format!("observer: {}", normalise(l))));
    bob.interrupt();
    wait_for("the election to be empty", WAIT, || keys_under(&ep, "chair/") == 0);
    log
}

#[test]
fn etcdctl_elect_matches_etcd() {
    let etcd = Member::start(Kind::Etcd, &[]);
    let ferrocd = Member::start(Kind::Ferrocd, &[]);
    let got = elect_transcript(&ferrocd);
    assert!(got.contains(&"bob while alice leads: []".to_string()), "one leader: {got:?}");
    assert!(got.contains(&"bob: bob".to_string()), "bob leads after alice: {got:?}");
    assert_eq!(got, elect_transcript(&etcd));
}

#[test]
fn election_and_lock_errors_over_grpc() {
    use ferrocd_proto::v3electionpb::election_client::ElectionClient;
    use ferrocd_proto::v3electionpb::{LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest};
    use ferrocd_proto::v3lockpb::LockRequest;
    use ferrocd_proto::v3lockpb::lock_client::LockClient;
    let member = Member::start(Kind::Ferrocd, &[]);
    let api = crate::grpc::Grpc::connect(&member.endpoint());
    let mut election = ElectionClient::new(api.channel.clone());
    let mut lock = LockClient::new(api.channel.clone());
    let status = |r: Result<tonic::Response<_>, tonic::Status>| {
        let s = r.map(|_: tonic::Response<()>| ()).unwrap_err();
        (s.code(), s.message().to_string())
    };
    api.rt.block_on(async {
        let none = election.leader(LeaderRequest { name: b"nobody".to_vec() }).await.map(|_| tonic::Response::new(()));
        assert_eq!(status(none), (tonic::Code::Unknown, "election: no leader".into()));
        let bogus = LeaderKey { name: b"e".to_vec(), key: b"e/1".to_vec(), rev: 5, lease: 1 };
        let proclaim = election
            .proclaim(ProclaimRequest { leader: Some(bogus), value: b"v".to_vec() })
            .await
            .map(|_| tonic::Response::new(()));
        assert_eq!(status(proclaim), (tonic::Code::Unknown, "election: not leader".into()));
        let resign = election.resign(ResignRequest { leader: None }).await.map(|_| tonic::Response::new(()));
        assert_eq!(status(resign), (tonic::Code::Unknown, "\"leader\" field must be provided".into()));
        let locked =
            lock.lock(LockRequest { name: b"l".to_vec(), lease: 12345 }).await.map(|_| tonic::Response::new(()));
        assert_eq!(status(locked), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
    });
}
