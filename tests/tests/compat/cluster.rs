//! Three ferrocd processes started with etcd's cluster command lines, driven by the real
//! etcdctl: membership, any member serving any request, leader moves and crashes, a learner's
//! life cycle.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrocd_test_utils::{Cluster, Kind, Member, etcdctl, etcdctl_ok, etcdctl_stderr, wait_for};
use serde_json::Value;

/// etcd's default timings: tight ones make a loaded CI machine (every test binary runs at once
/// on 2 cores) miss heartbeats and hold needless elections.
pub(crate) const TIMING: &[&str] = &["--heartbeat-interval", "100", "--election-timeout", "1000"];

/// The cluster tests run one at a time: each runs three or four servers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn json(endpoint: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-w", "json"]);
    serde_json::from_str(&etcdctl_ok(endpoint, &args)).expect("etcdctl's JSON")
}

/// Member ID → index in `cluster.members`, from the member list's client URLs.
pub(crate) fn ids(cluster: &Cluster) -> BTreeMap<u64, usize> {
    let list = json(&cluster.members[0].endpoint(), &["member", "list"]);
    let mut out = BTreeMap::new();
    for m in list["members"].as_array().unwrap() {
        let url = m["clientURLs"][0].as_str().unwrap_or_default();
        if let Some(i) = cluster.members.iter().position(|c| c.url() == url) {
            out.insert(m["ID"].as_u64().unwrap(), i);
        }
    }
    out
}

/// The leader every reachable member in `endpoints` agrees on.
pub(crate) fn agreed_leader(endpoints: &str) -> Option<u64> {
    let out = etcdctl(endpoints, &["endpoint", "status", "-w", "json"], None);
    let status: Value = serde_json::from_slice(&out.stdout).ok()?;
    let leaders: Vec<u64> = status.as_array()?.iter().filter_map(|s| s["Status"]["leader"].as_u64()).collect();
    (!leaders.is_empty() && leaders.iter().all(|&l| l != 0 && l == leaders[0])).then(|| leaders[0])
}

#[test]
fn three_members_serve_any_request_and_survive_leader_moves_and_crashes() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, TIMING);
    let all = cluster.endpoints();

    // Every member lists the same three members, with the names and URLs they were started with.
    for member in &cluster.members {
        let list = json(&member.endpoint(), &["member", "list"]);
        let members = list["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{list}");
        for m in members {
            let started = cluster.members.iter().find(|c| c.name() == m["name"].as_str().unwrap()).unwrap();
            assert_eq!(m["peerURLs"][0].as_str().unwrap(), started.peer_url());
            assert_eq!(m["clientURLs"][0].as_str().unwrap(), started.url());
        }
    }
    let ids = ids(&cluster);
    assert_eq!(ids.len(), 3);

    // Writes through every member (followers forward them), linearizable reads from every one.
    for (i, member) in cluster.members.iter().enumerate() {
        assert_eq!(etcdctl_ok(&member.endpoint(), &["put", &format!("k{i}"), &format!("v{i}")]), "OK\n");
    }
    for member in &cluster.members {
        assert_eq!(etcdctl_ok(&member.endpoint(), &["get", "k", "--prefix", "--keys-only"]), "k0\n\nk1\n\nk2\n\n");
    }

    // Every member's status, at the client URLs the member list gives (`endpoint status
    // --cluster`; Debian's etcdctl 3.4 then sends `http://host:port` as the HTTP/2 authority);
    // they agree on the leader and term.
    let status = json(&cluster.members[0].url(), &["endpoint", "status", "--cluster"]);
    let status = status.as_array().unwrap();
    let mut shown: Vec<&str> = status.iter().map(|s| s["Endpoint"].as_str().unwrap()).collect();
    shown.sort_unstable();
    let mut urls: Vec<String> = cluster.members.iter().map(Member::url).collect();
    urls.sort_unstable();
    assert_eq!(shown, urls);
    let leader = status[0]["Status"]["leader"].as_u64().unwrap();
    assert!(ids.contains_key(&leader));
    for s in status {
        assert_eq!(s["Status"]["leader"].as_u64(), Some(leader));
        assert_eq!(s["Status"]["raftTerm"], status[0]["Status"]["raftTerm"]);
        assert_eq!(s["Status"]["header"]["revision"], 4);
    }

    // move-leader hands leadership to a follower.
    let target = *ids.keys().find(|&&id| id != leader).unwrap();
    let moved = etcdctl_ok(&all, &["move-leader", &format!("{target:x}")]);
    assert!(moved.contains(&format!("Leadership transferred from {leader:x} to {target:x}")), "{moved}");
    wait_for("the new leader to be agreed on", WAIT, || agreed_leader(&all) == Some(target));
    // The leader crashes; the other two elect a new one and lose no acknowledged write.
    let crashed = ids[&target];
    cluster.members[crashed].kill();
    let survivors: Vec<String> =
        cluster.members.iter().enumerate().filter(|(i, _)| *i != crashed).map(|(_, m)| m.endpoint()).collect();
    let mut acked = 3;
    for i in 0..20 {
        let endpoint = &survivors[i % 2];
        wait_for("a write to be acknowledged", WAIT, || {
            etcdctl(endpoint, &["put", &format!("after{i:02}"), "x"], None).status.success()
        });
        acked += 1;
    }
    let survivors = survivors.join(",");
    wait_for("a leader among the survivors", WAIT, || agreed_leader(&survivors).is_some_and(|l| l != target));

    // The crashed member restarts from its data dir and catches up: same revision and hash.
    cluster.members[crashed].restart();
    let all_keys = json(&cluster.members[crashed].endpoint(), &["get", "", "--prefix", "--keys-only"]);
    assert_eq!(all_keys["count"], acked, "every acknowledged write is there: {all_keys}");
    wait_for("every member to have the same hash", WAIT, || {
        let out = etcdctl(&all, &["endpoint", "hashkv", "-w", "json"], None);
        let Ok(hashes) = serde_json::from_slice::<Value>(&out.stdout) else { return false };
        let hashes: Vec<&Value> = hashes.as_array().into_iter().flatten().map(|h| &h["HashKV"]).collect();
        hashes.len() == 3
            && hashes
                .iter()
                .all(|h| h["hash"] == hashes[0]["hash"] && h["header"]["revision"] == hashes[0]["header"]["revision"])
    });
}

#[test]
fn a_learner_is_added_promoted_and_removed() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, TIMING);
    let ep = cluster.members[1].endpoint();
    for i in 0..50 {
        etcdctl_ok(&ep, &["put", &format!("k{i:02}"), "v"]);
    }

    // etcdctl member add --learner, then the new member starts with --initial-cluster-state
    // existing and takes the ID the cluster gave it.
    let mut learner = Member::new(Kind::Ferrocd, "m4", TIMING);
    let added = json(&ep, &["member", "add", "m4", &format!("--peer-urls={}", learner.peer_url()), "--learner"]);
    let id = added["member"]["ID"].as_u64().unwrap();
    assert_eq!(added["member"]["isLearner"], true);
    assert_eq!(added["members"].as_array().unwrap().len(), 4);
    let listed = etcdctl_ok(&ep, &["member", "list"]);
    assert!(listed.contains(&format!("{id:x}, unstarted, , {}, , true", learner.peer_url())), "{listed}");
    // The leader retries a learner that is not started yet with a backoff: a few log lines a
    // second about it (a failed heartbeat each interval), not thousands.
    let lines = |c: &Cluster| c.members.iter().map(|m| m.log().lines().count()).sum::<usize>();
    let before = lines(&cluster);
    std::thread::sleep(Duration::from_secs(2));
    let logged = lines(&cluster) - before;
    assert!(logged < 200, "{logged} lines logged in 2 s about an unstarted learner");
    // MemberUpdate changes a member's peer URLs, and refuses URLs another member has.
    let hex = format!("{id:x}");
    let taken = format!("--peer-urls={}", cluster.members[0].peer_url());
    let out = etcdctl(&ep, &["member", "update", &hex, &taken], None);
    assert!(etcdctl_stderr(&out).contains("etcdserver: Peer URLs already exists"), "{}", etcdctl_stderr(&out));
    let updated = etcdctl_ok(&ep, &["member", "update", &hex, "--peer-urls=http://127.0.0.1:9"]);
    // etcdctl pads the ID to 16 columns (`%16x`): an ID below 2^60 gets leading spaces.
    assert!(updated.contains(&format!("Member {hex:>16} updated in cluster")), "{updated}");
    assert!(etcdctl_ok(&ep, &["member", "list"]).contains("http://127.0.0.1:9"));
    etcdctl_ok(&ep, &["member", "update", &hex, &format!("--peer-urls={}", learner.peer_url())]);
    let spec = Cluster::spec(cluster.members.iter().chain(std::iter::once(&learner)));
    learner.in_cluster(&spec, "existing");
    learner.spawn();
    learner.wait_until_ready(&["get", "probe", "--consistency=s"]);
    wait_for("the learner to catch up", WAIT, || {
        etcdctl(&learner.endpoint(), &["get", "k49", "--consistency=s", "--print-value-only"], None).stdout == b"v\n"
    });
    // A learner serves serializable reads only.
    let out = etcdctl(&learner.endpoint(), &["get", "k00"], None);
    assert_eq!(etcdctl_stderr(&out), "Error: etcdserver: rpc not supported for learner\n");
    for refused in [&["member", "list"][..], &["endpoint", "hashkv"], &["defrag"], &["put", "k", "v"]] {
        let out = etcdctl(&learner.endpoint(), refused, None);
        assert!(
            etcdctl_stderr(&out).contains("etcdserver: rpc not supported for learner"),
            "{refused:?}: {}",
            etcdctl_stderr(&out)
        );
    }
    assert!(json(&learner.endpoint(), &["endpoint", "status"])[0]["Status"]["isLearner"] == true);
    // etcd's limits and errors around learners.
    let second = Member::new(Kind::Ferrocd, "m5", TIMING);
    let out = etcdctl(&ep, &["member", "add", "m5", &format!("--peer-urls={}", second.peer_url()), "--learner"], None);
    assert!(etcdctl_stderr(&out).contains("etcdserver: too many learner members in cluster"));
    let voter = *ids(&cluster).keys().next().unwrap();
    let out = etcdctl(&ep, &["member", "promote", &format!("{voter:x}")], None);
    assert!(etcdctl_stderr(&out).contains("etcdserver: can only promote a learner member"));
    let out = etcdctl(&ep, &["member", "remove", "1234"], None);
    assert!(etcdctl_stderr(&out).contains("etcdserver: member not found"));

    // Promote it; it now votes and serves linearizable reads and writes.
    let promoted = etcdctl_ok(&ep, &["member", "promote", &format!("{id:x}")]);
    assert!(promoted.contains(&format!("Member {id:>16x} promoted in cluster")), "{promoted}");
    let list = json(&ep, &["member", "list"]);
    let me = list["members"].as_array().unwrap().iter().find(|m| m["ID"].as_u64() == Some(id)).unwrap().clone();
    assert_eq!(me["name"], "m4");
    assert_eq!(me["clientURLs"][0].as_str().unwrap(), learner.url());
    assert!(me.get("isLearner").is_none_or(|l| l == false), "{me}");
    assert_eq!(etcdctl_ok(&learner.endpoint(), &["put", "from-m4", "x"]), "OK\n");
    assert_eq!(etcdctl_ok(&learner.endpoint(), &["get", "from-m4", "--print-value-only"]), "x\n");

    // Remove it again.
    let removed = etcdctl_ok(&ep, &["member", "remove", &format!("{id:x}")]);
    assert!(removed.contains(&format!("Member {id:>16x} removed from cluster")), "{removed}");
    let list = json(&ep, &["member", "list"]);
    assert_eq!(list["members"].as_array().unwrap().len(), 3);
    learner.kill();
    assert_eq!(etcdctl_ok(&ep, &["put", "after-remove", "x"]), "OK\n");
    cluster.members[0].kill();
    // Two of three voters remain: still a quorum.
    assert_eq!(etcdctl_ok(&cluster.members[2].endpoint(), &["put", "one-down", "x"]), "OK\n");
}

#[test]
fn a_member_far_behind_catches_up_by_snapshot() {
    let _serial = one_at_a_time();
    let flags: Vec<&str> = TIMING.iter().copied().chain(["--snapshot-count", "100"]).collect();
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, &flags);
    cluster.members[2].kill();
    let ep = cluster.members[0].endpoint();
    for i in 0..400 {
        etcdctl_ok(&ep, &["put", &format!("k{i:03}"), &"v".repeat(100)]);
    }
    etcdctl_ok(&ep, &["compaction", "200"]);
    // The leader snapshotted every 100 entries and dropped the log before them: the member
    // that was down gets a snapshot, then the rest of the log.
    cluster.members[2].restart();
    let lagging = cluster.members[2].endpoint();
    let all_keys = json(&lagging, &["get", "k", "--prefix", "--keys-only"]);
    assert_eq!(all_keys["count"], 400);
    assert!(cluster.members[2].log().contains("installed a snapshot from the leader"), "no snapshot was installed");
    let out = etcdctl(&lagging, &["get", "k000", "--rev", "150"], None);
    assert!(etcdctl_stderr(&out).contains("required revision has been compacted"), "the compaction came along");
    let all = cluster.endpoints();
    wait_for("every member to have the same hash", WAIT, || {
        let out = etcdctl(&all, &["endpoint", "hashkv", "-w", "json"], None);
        let Ok(hashes) = serde_json::from_slice::<Value>(&out.stdout) else { return false };
        let hashes: Vec<&Value> = hashes.as_array().into_iter().flatten().map(|h| &h["HashKV"]).collect();
        hashes.len() == 3 && hashes.iter().all(|h| h["hash"] == hashes[0]["hash"])
    });
}

#[test]
fn a_voter_joins_a_single_member_cluster() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start(Kind::Ferrocd, 1, TIMING);
    let ep = cluster.members[0].endpoint();
    etcdctl_ok(&ep, &["put", "before", "x"]);
    // Adding a voter answers at once (the new member is needed for the next commit, as in etcd).
    let mut joining = Member::new(Kind::Ferrocd, "m2", TIMING);
    let added = json(&ep, &["member", "add", "m2", &format!("--peer-urls={}", joining.peer_url())]);
    let id = added["member"]["ID"].as_u64().unwrap();
    let spec = Cluster::spec(cluster.members.iter().chain(std::iter::once(&joining)));
    joining.in_cluster(&spec, "existing");
    joining.spawn();
    joining.wait_until_serving();
    assert_eq!(etcdctl_ok(&joining.endpoint(), &["get", "before", "--print-value-only"]), "x\n");
    assert_eq!(etcdctl_ok(&joining.endpoint(), &["put", "after", "y"]), "OK\n");
    let list = json(&ep, &["member", "list"]);
    let members = list["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let me = members.iter().find(|m| m["ID"].as_u64() == Some(id)).unwrap();
    assert_eq!(me["name"], "m2");
    assert!(me.get("isLearner").is_none_or(|l| l == false), "{me}");
}

#[test]
fn leases_expire_once_for_every_member_and_outlive_a_leader_move() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start(Kind::Ferrocd, 3, TIMING);
    let all = cluster.endpoints();
    wait_for("a leader", WAIT, || agreed_leader(&all).is_some());
    let ids = ids(&cluster);
    let leader = agreed_leader(&all).unwrap();
    let follower = cluster.members[*ids.iter().find(|(id, _)| **id != leader).unwrap().1].endpoint();

    // Granted, attached and kept alive through a follower (which forwards to the leader).
    let granted = std::time::Instant::now();
    let out = etcdctl_ok(&follower, &["lease", "grant", "6"]);
    let lease = out.split_whitespace().nth(1).unwrap().to_string();
    let put = json(&follower, &["put", "ephemeral", "v", "--lease", &lease]);
    let put_rev = put["header"]["revision"].as_i64().unwrap();
    let kept = etcdctl_ok(&follower, &["lease", "keep-alive", "--once", &lease]);
    assert_eq!(kept, format!("lease {lease} keepalived with TTL(6)\n"));
    let renewed = std::time::Instant::now();

    // Leadership moves: the new leader extends every lease instead of expiring it early.
    let target = *ids.keys().find(|&&id| id != leader).unwrap();
    etcdctl_ok(&all, &["move-leader", &format!("{target:x}")]);
    wait_for("the new leader to be agreed on", WAIT, || agreed_leader(&all) == Some(target));
    let ttl = etcdctl_ok(&follower, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("granted with TTL(6s)") && ttl.contains("[ephemeral]"), "{ttl}");

    wait_for("the lease to expire", WAIT, || etcdctl_ok(&all, &["get", "ephemeral"]).is_empty());
    assert!(renewed.elapsed() >= Duration::from_secs(6), "expired {:?} after its renewal", renewed.elapsed());
    assert!(granted.elapsed() < WAIT);
    // Every member deleted the key at the same revision, the one after the put.
    for member in &cluster.members {
        wait_for("the member to apply the expiry", WAIT, || {
            json(&member.endpoint(), &["get", "ephemeral", "--consistency", "s"])["header"]["revision"].as_i64()
                == Some(put_rev + 1)
        });
        let got = json(&member.endpoint(), &["get", "ephemeral", "--consistency", "s"]);
        assert!(got.get("kvs").is_none(), "{got}");
        let ttl = etcdctl_ok(&member.endpoint(), &["lease", "timetolive", &lease]);
        assert_eq!(ttl, format!("lease {lease} already expired\n"));
    }
    let out = etcdctl(&all, &["endpoint", "hashkv", "-w", "json"], None);
    let hashes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hashes: Vec<&Value> = hashes.as_array().unwrap().iter().map(|h| &h["HashKV"]["hash"]).collect();
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
}

#[test]
fn watches_that_require_a_leader_end_when_the_cluster_loses_it() {
    use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
    use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
    use ferrocd_proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
    use futures::StreamExt;
    let _serial = one_at_a_time();
    // Watched on the leader (which steps down without a quorum) and on a follower (which stops
    // naming a leader it no longer hears from).
    for on_leader in [true, false] {
        let mut cluster = Cluster::start(Kind::Ferrocd, 3, TIMING);
        wait_for("a leader", WAIT, || agreed_leader(&cluster.endpoints()).is_some());
        let leader = agreed_leader(&cluster.endpoints()).unwrap();
        let ids = ids(&cluster);
        let watched = *ids.iter().find(|(id, _)| (**id == leader) == on_leader).unwrap().1;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let endpoint = format!("http://{}", cluster.members[watched].endpoint());
        let open = |rt: &tokio::runtime::Runtime| {
            rt.block_on(async {
                let mut client = WatchClient::connect(endpoint.clone()).await.unwrap();
                let create = WatchCreateRequest { key: b"k".to_vec(), ..Default::default() };
                let first = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
                let requests = futures::stream::iter([first]).chain(futures::stream::pending());
                let mut request = tonic::Request::new(requests);
                request.metadata_mut().insert("hasleader", "true".parse().unwrap());
                client.watch(request).await
            })
        };
        let mut stream = open(&rt).unwrap().into_inner();
        assert!(rt.block_on(stream.message()).unwrap().unwrap().created);
        // The other two members go: no quorum, no leader for the member watched.
        for i in (0..3).filter(|i| *i != watched) {
            cluster.members[i].kill();
        }
        let ended = rt.block_on(async { tokio::time::timeout(WAIT, stream.message()).await });
        let status = ended.expect("the stream ends").expect_err("ends with an error");
        assert_eq!((status.code(), status.message()), (tonic::Code::Unavailable, "etcdserver: no leader"));
        let refused = open(&rt).expect_err("no new stream without a leader");
        assert_eq!((refused.code(), refused.message()), (tonic::Code::Unavailable, "etcdserver: no leader"));
        // Nor does the member name a leader any more.
        let status = json(&cluster.members[watched].endpoint(), &["endpoint", "status"]);
        assert_eq!(status[0]["Status"]["leader"].as_u64().unwrap_or(0), 0, "{status}");
    }
}

#[test]
fn lease_checkpoints_keep_the_remaining_ttl_across_a_leader_move() {
    let _serial = one_at_a_time();
    let mut flags = TIMING.to_vec();
    flags.extend(["--experimental-enable-lease-checkpoint", "--experimental-lease-checkpoint-interval", "1s"]);
    let cluster = Cluster::start(Kind::Ferrocd, 3, &flags);
    let all = cluster.endpoints();
    wait_for("a leader", WAIT, || agreed_leader(&all).is_some());
    let leader = agreed_leader(&all).unwrap();
    let out = etcdctl_ok(&all, &["lease", "grant", "60"]);
    let lease = out.split_whitespace().nth(1).unwrap().to_string();
    let remaining = |endpoint: &str| -> i64 {
        let ttl = json(endpoint, &["lease", "timetolive", &lease]);
        ttl["ttl"].as_i64().unwrap()
    };
    // Let a few seconds of the lease pass, and a checkpoint or two be taken.
    wait_for("the lease to age", WAIT, || remaining(&all) <= 56);
    let target = *ids(&cluster).keys().find(|&&id| id != leader).unwrap();
    etcdctl_ok(&all, &["move-leader", &format!("{target:x}")]);
    wait_for("the new leader to be agreed on", WAIT, || agreed_leader(&all) == Some(target));
    // The new leader resumes from the checkpointed remaining TTL (plus an election timeout),
    // not from the full 60 s.
    let after = remaining(&all);
    assert!(after < 60, "the lease restarted at {after}s after the leader moved");
}

/// A member removed from the cluster stops, as etcd's does: a follower (which the leader stops
/// replicating to, so it has to find out by asking) and then the leader itself. The exit
/// status and the log line are etcd's.
#[test]
fn a_removed_member_stops() {
    let _serial = one_at_a_time();
    let mut statuses = Vec::new();
    for kind in [Kind::Etcd, Kind::Ferrocd] {
        let mut cluster = Cluster::start(kind, 4, TIMING);
        let ids = ids(&cluster);
        let all = cluster.endpoints();
        wait_for("a leader", WAIT, || agreed_leader(&all).is_some());
        let leader = agreed_leader(&all).unwrap();
        let follower = *ids.keys().find(|&&id| id != leader).unwrap();
        let rest: Vec<String> = ids
            .iter()
            .filter(|(id, _)| **id != leader && **id != follower)
            .map(|(_, &i)| cluster.members[i].endpoint())
            .collect();
        let rest = rest.join(",");
        for (removed, asked) in [(follower, leader), (leader, leader)] {
            // etcd refuses a removal until its members have been connected for 5 s
            // (`etcdserver: unhealthy cluster`), and a leader removing itself may stop before
            // it answers: the removal is done once the others no longer list it.
            let at = cluster.members[ids[&asked]].endpoint();
            wait_for("the removal to be accepted", WAIT, || {
                let out = etcdctl(&at, &["member", "remove", &format!("{removed:x}")], None);
                String::from_utf8_lossy(&out.stdout).contains("removed from cluster") || {
                    let list = etcdctl(&rest, &["member", "list", "-w", "json"], None);
                    serde_json::from_slice::<Value>(&list.stdout).is_ok_and(|l| {
                        l["members"].as_array().is_some_and(|m| m.iter().all(|m| m["ID"].as_u64() != Some(removed)))
                    })
                }
            });
            let member = &mut cluster.members[ids[&removed]];
            wait_for("the removed member to stop", WAIT, || member.exited());
            let log = member.log();
            assert!(log.contains("the member has been permanently removed from the cluster"), "{kind:?}: {log}");
            statuses.push((kind, member.exit_status().and_then(|s| s.code())));
        }
        // The two left keep serving.
        wait_for("a leader among the rest", WAIT, || agreed_leader(&rest).is_some());
        wait_for("a write to be acknowledged", WAIT, || etcdctl(&rest, &["put", "after", "x"], None).status.success());
        let list = json(&rest, &["member", "list"]);
        assert_eq!(list["members"].as_array().unwrap().len(), 2, "{kind:?}: {list}");
    }
    let etcd: Vec<_> = statuses.iter().filter(|s| s.0 == Kind::Etcd).map(|s| s.1).collect();
    let ferrocd: Vec<_> = statuses.iter().filter(|s| s.0 == Kind::Ferrocd).map(|s| s.1).collect();
    assert_eq!(ferrocd, etcd, "exit statuses");
}

/// `--strict-reconfig-check` (on by default): with a voter added but not started, a second
/// voter would leave the cluster without a started quorum and is refused with etcd's error.
#[test]
fn membership_changes_that_endanger_quorum_are_refused() {
    let _serial = one_at_a_time();
    for kind in [Kind::Etcd, Kind::Ferrocd] {
        let cluster = Cluster::start(kind, 1, TIMING);
        let ep = cluster.members[0].endpoint();
        let first = Member::new(kind, "m2", TIMING);
        let added = etcdctl(&ep, &["member", "add", "m2", &format!("--peer-urls={}", first.peer_url())], None);
        assert!(added.status.success(), "{kind:?}: {}", etcdctl_stderr(&added));
        let second = Member::new(kind, "m3", TIMING);
        let out = etcdctl(&ep, &["member", "add", "m3", &format!("--peer-urls={}", second.peer_url())], None);
        assert!(
            etcdctl_stderr(&out).contains("etcdserver: re-configuration failed due to not enough started members"),
            "{kind:?}: {}",
            etcdctl_stderr(&out)
        );
        // A learner does not vote: no quorum to endanger.
        let learner = Member::new(kind, "m4", TIMING);
        let out =
            etcdctl(&ep, &["member", "add", "m4", &format!("--peer-urls={}", learner.peer_url()), "--learner"], None);
        assert!(!etcdctl_stderr(&out).contains("not enough started members"), "{kind:?}: {}", etcdctl_stderr(&out));
    }
    // Turned off, nothing refuses the second voter: the change is proposed and waits for a
    // quorum of members that never start, as in etcd, until the client gives up.
    let flags: Vec<&str> = TIMING.iter().copied().chain(["--strict-reconfig-check=false"]).collect();
    for kind in [Kind::Etcd, Kind::Ferrocd] {
        let cluster = Cluster::start(kind, 1, &flags);
        let ep = cluster.members[0].endpoint();
        for (i, name) in ["m2", "m3"].into_iter().enumerate() {
            let member = Member::new(kind, name, TIMING);
            let out = etcdctl(&ep, &["member", "add", name, &format!("--peer-urls={}", member.peer_url())], None);
            let err = etcdctl_stderr(&out);
            if i == 0 {
                assert!(out.status.success(), "{kind:?}: {err}");
            } else {
                assert!(
                    err.contains("context deadline exceeded") || err.contains("request timed out"),
                    "{kind:?}: {err}"
                );
            }
        }
    }
}

/// MoveLeader to a member that is down fails and leaves the leader leading, as in etcd (whose
/// leader keeps leading when the transferee cannot take over).
#[test]
fn a_leader_move_to_a_member_that_is_down_fails_and_changes_nothing() {
    let _serial = one_at_a_time();
    for kind in [Kind::Etcd, Kind::Ferrocd] {
        let mut cluster = Cluster::start(kind, 3, TIMING);
        let all = cluster.endpoints();
        wait_for("a leader", WAIT, || agreed_leader(&all).is_some());
        let leader = agreed_leader(&all).unwrap();
        let ids = ids(&cluster);
        let target = *ids.keys().find(|&&id| id != leader).unwrap();
        cluster.members[ids[&target]].kill();
        let at = cluster.members[ids[&leader]].endpoint();
        let out = etcdctl(&at, &["--command-timeout=10s", "move-leader", &format!("{target:x}")], None);
        let err = etcdctl_stderr(&out);
        assert!(
            err.contains("context deadline exceeded") || err.contains("leader transfer took too long"),
            "{kind:?}: {err}"
        );
        let up: Vec<String> =
            ids.iter().filter(|(id, _)| **id != target).map(|(_, &i)| cluster.members[i].endpoint()).collect();
        let status = json(&up.join(","), &["endpoint", "status"]);
        for s in status.as_array().unwrap() {
            assert_eq!(s["Status"]["leader"].as_u64(), Some(leader), "{kind:?}: {status}");
        }
    }
}
