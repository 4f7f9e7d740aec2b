//! Backups in etcd's format, end to end: a ferrocd snapshot saved with etcdctl, checked by
//! `etcdctl snapshot status`, restored with etcdctl and served by a real etcd; a real etcd's
//! snapshot restored with `ferrocdutl` and served by ferrocd (one member that a second joins,
//! and three members); the alarms (NOSPACE with a small quota, CORRUPT from the corruption
//! check); Hash, Defragment and MoveLeader's answers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrocd_test_utils::{Cluster, Kind, Member, etcdctl, etcdctl_ok, etcdctl_stderr, ferrocd_bin, wait_for};
use serde_json::Value;

const ROOT: &[&str] = &["--user", "root:rootpw"];

fn with_root<'a>(args: &[&'a str]) -> Vec<&'a str> {
    ROOT.iter().copied().chain(args.iter().copied()).collect()
}

fn ferrocdutl() -> PathBuf {
    ferrocd_bin().with_file_name("ferrocdutl")
}

/// Keys with revisions, leases and users, auth on at the end.
fn populate(ep: &str) -> String {
    for args in [&["put", "a", "1"][..], &["put", "b", "2"], &["put", "a", "3"], &["del", "b"], &["put", "c/1", "x"]] {
        etcdctl_ok(ep, args);
    }
    let granted = etcdctl_ok(ep, &["lease", "grant", "600"]);
    let lease = granted.split_whitespace().nth(1).expect("a lease ID").to_string();
    etcdctl_ok(ep, &["put", "leased", "v", "--lease", &lease]);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "--prefix=true", "read", "c/"],
        &["user", "add", "alice:alicepw"],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
    ] {
        etcdctl_ok(ep, args);
    }
    lease
}

/// What a server serves of the state: every key with its revisions, the store revision, the
/// leases, the users and roles.
fn served(ep: &str, lease: &str) -> (Value, i64, String, String, String) {
    let out = etcdctl_ok(ep, &with_root(&["get", "", "--from-key", "-w", "json"]));
    let json: Value = serde_json::from_str(&out).unwrap();
    let revision = json["header"]["revision"].as_i64().unwrap();
    let ttl = etcdctl_ok(ep, &with_root(&["lease", "timetolive", lease, "--keys"]));
    // The remaining TTL moves with time; the granted TTL and the keys do not.
    let ttl = ttl.split(", remaining").next().unwrap_or_default().to_string()
        + ttl.split("attached keys").nth(1).unwrap_or_default();
    let users = etcdctl_ok(ep, &with_root(&["user", "get", "alice"]));
    let role = etcdctl_ok(ep, &with_root(&["role", "get", "reader"]));
    (json["kvs"].clone(), revision, ttl, users, role)
}

fn save(ep: &str, dir: &Path) -> PathBuf {
    let file = dir.join("snapshot.db");
    let out = etcdctl_ok(ep, &with_root(&["snapshot", "save", file.to_str().unwrap()]));
    assert!(out.contains("Snapshot saved at"), "{out}");
    file
}

fn restore_args(m: &Member) -> Vec<String> {
    vec![
        format!("--data-dir={}", m.data_dir().display()),
        format!("--name={}", m.name()),
        format!("--initial-cluster={}={}", m.name(), m.peer_url()),
        "--initial-cluster-token=test-token".into(),
        format!("--initial-advertise-peer-urls={}", m.peer_url()),
    ]
}

fn ferrocdutl_restore(file: &Path, args: &[String]) {
    let out = Command::new(ferrocdutl()).args(["snapshot", "restore"]).arg(file).args(args).output().unwrap();
    assert!(out.status.success(), "ferrocdutl: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_ferrocd_snapshot_is_read_by_etcdctl_and_served_by_a_restored_etcd() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Member::start(Kind::Ferrocd, &[]);
    let lease = populate(&f.endpoint());
    let file = save(&f.endpoint(), tmp.path());
    let expected = served(&f.endpoint(), &lease);

    // etcd 3.4's own reader checks the file (bbolt's consistency check included).
    let status: Value =
        serde_json::from_str(&etcdctl_ok(&f.endpoint(), &["snapshot", "status", file.to_str().unwrap(), "-w", "json"]))
            .unwrap();
    assert_eq!(status["revision"].as_i64(), Some(expected.1), "{status}");
    let table = etcdctl_ok(&f.endpoint(), &["snapshot", "status", file.to_str().unwrap(), "-w", "table"]);
    assert!(table.contains("TOTAL KEYS"), "{table}");
    // ferrocdutl reads it the same way.
    let ours =
        Command::new(ferrocdutl()).args(["snapshot", "status"]).arg(&file).args(["-w", "json"]).output().unwrap();
    let ours: Value = serde_json::from_slice(&ours.stdout).unwrap();
    assert_eq!((ours["hash"].clone(), ours["revision"].clone()), (status["hash"].clone(), status["revision"].clone()));

    let mut e = Member::new(Kind::Etcd, "m1", &[]);
    let mut args: Vec<String> = vec!["snapshot".into(), "restore".into(), file.to_str().unwrap().into()];
    args.extend(restore_args(&e));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etcdctl(&f.endpoint(), &args, None);
    assert!(out.status.success(), "etcdctl snapshot restore: {}", etcdctl_stderr(&out));
    e.spawn();
    e.wait_until_ready(&with_root(&["get", "probe"]));
    assert_eq!(served(&e.endpoint(), &lease), expected, "a real etcd serves what ferrocd did");
    // ... and goes on from the same revision.
    let put: Value =
        serde_json::from_str(&etcdctl_ok(&e.endpoint(), &with_root(&["put", "z", "1", "-w", "json"]))).unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(expected.1 + 1));
}

#[test]
fn an_etcd_snapshot_restored_with_ferrocdutl_is_served_by_ferrocd_and_reaches_a_member_that_joins() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Member::start(Kind::Etcd, &[]);
    let lease = populate(&e.endpoint());
    let file = save(&e.endpoint(), tmp.path());
    let expected = served(&e.endpoint(), &lease);

    // A checksum that does not match is refused, as etcdutl refuses it.
    let bad = tmp.path().join("bad.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bad, bytes).unwrap();
    let refused = Member::new(Kind::Ferrocd, "m1", &[]);
    let out = Command::new(ferrocdutl())
        .args(["snapshot", "restore"])
        .arg(&bad)
        .args(restore_args(&refused))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected sha256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut f = Member::new(Kind::Ferrocd, "m1", &[]);
    ferrocdutl_restore(&file, &restore_args(&f));
    f.spawn();
    f.wait_until_ready(&with_root(&["get", "probe"]));
    assert_eq!(served(&f.endpoint(), &lease), expected, "ferrocd serves what etcd did");

    // A member added later gets the restored state (as a snapshot: the restore purged the log).
    let mut m2 = Member::new(Kind::Ferrocd, "m2", &[]);
    etcdctl_ok(&f.endpoint(), &with_root(&["member", "add", "m2", &format!("--peer-urls={}", m2.peer_url())]));
    m2.in_cluster(&Cluster::spec([&f, &m2].into_iter()), "existing");
    m2.spawn();
    m2.wait_until_ready(&with_root(&["get", "probe"]));
    let read = etcdctl_ok(&m2.endpoint(), &with_root(&["get", "a", "--consistency=s", "--print-value-only"]));
    assert_eq!(read.trim(), "3");
    wait_for("the joined member to serve the restored state", Duration::from_secs(20), || {
        served(&m2.endpoint(), &lease).0 == expected.0
    });
}

#[test]
fn three_members_restored_from_one_snapshot_serve_it_and_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Member::start(Kind::Etcd, &[]);
    let lease = populate(&e.endpoint());
    let file = save(&e.endpoint(), tmp.path());
    let expected = served(&e.endpoint(), &lease);
    drop(e);
    let mut cluster = Cluster::prepare(Kind::Ferrocd, 3, &[]);
    let spec = Cluster::spec(cluster.members.iter());
    for m in &cluster.members {
        let mut args = restore_args(m);
        args[2] = format!("--initial-cluster={spec}");
        // etcdutl's flags for informers: every revision moves on, old ones are compacted.
        args.extend(["--bump-revision=1000".to_string(), "--mark-compacted".to_string()]);
        ferrocdutl_restore(&file, &args);
    }
    for m in &mut cluster.members {
        m.spawn();
    }
    for m in &mut cluster.members {
        m.wait_until_ready(&with_root(&["get", "probe"]));
    }
    for m in &cluster.members {
        let (kvs, revision, ..) = served(&m.endpoint(), &lease);
        assert_eq!(kvs, expected.0, "{}", m.name());
        assert_eq!(revision, expected.1 + 1000, "the revision moved on by the bump");
    }
    let old =
        etcdctl(&cluster.members[0].endpoint(), &with_root(&["get", "a", &format!("--rev={}", expected.1)]), None);
    assert!(etcdctl_stderr(&old).contains("required revision has been compacted"), "{}", etcdctl_stderr(&old));
    etcdctl_ok(&cluster.members[1].endpoint(), &with_root(&["put", "after", "1"]));
    for m in &cluster.members {
        wait_for("the write to reach every member", Duration::from_secs(10), || {
            etcdctl_ok(&m.endpoint(), &with_root(&["get", "after", "--consistency=s", "--print-value-only"])).trim()
                == "1"
        });
    }
}

#[test]
fn nospace_refuses_writes_until_space_is_freed_and_the_alarm_disarmed() {
    let f = Member::start(Kind::Ferrocd, &["--quota-backend-bytes=8000000", "--snapshot-count=20"]);
    let ep = f.endpoint();
    let value = "v".repeat(256 * 1024);
    let mut refused = None;
    for _ in 0..200 {
        // The value on stdin: it is longer than an argument may be.
        let out = etcdctl(&ep, &["put", "big"], Some(&value));
        if !out.status.success() {
            refused = Some(etcdctl_stderr(&out));
            break;
        }
    }
    let refused = refused.expect("the quota refused a write within 200 puts of 256 KiB");
    assert!(refused.contains("etcdserver: mvcc: database space exceeded"), "{refused}");
    let alarms = etcdctl_ok(&ep, &["alarm", "list"]);
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");
    // Reads and deletes go on; small writes and leases are refused while the alarm is on.
    etcdctl_ok(&ep, &["get", "big", "--keys-only"]);
    let small = etcdctl(&ep, &["put", "small", "1"], None);
    assert!(etcdctl_stderr(&small).contains("database space exceeded"), "{}", etcdctl_stderr(&small));
    let grant = etcdctl(&ep, &["lease", "grant", "60"], None);
    assert!(etcdctl_stderr(&grant).contains("database space exceeded"), "{}", etcdctl_stderr(&grant));
    let health = super::http::http(&ep, "GET", "/health");
    assert_eq!((health.status, health.body.as_str()), (503, "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n"));
    assert_eq!(super::http::http(&ep, "GET", "/health?exclude=NOSPACE").status, 200);
    // Status lists the alarm among its errors.
    let status: Value = serde_json::from_str(&etcdctl_ok(&ep, &["endpoint", "status", "-w", "json"])).unwrap();
    let errors = status[0]["Status"]["errors"].to_string();
    assert!(errors.contains("alarm:NOSPACE"), "{status}");
    // Recovery as etcd documents it: compact, defragment, disarm.
    let rev: Value = serde_json::from_str(&etcdctl_ok(&ep, &["get", "big", "-w", "json", "--keys-only"])).unwrap();
    let rev = rev["header"]["revision"].as_i64().unwrap().to_string();
    etcdctl_ok(&ep, &["del", "big"]);
    etcdctl_ok(&ep, &["compaction", &rev, "--physical"]);
    etcdctl_ok(&ep, &["defrag"]);
    let disarmed = etcdctl_ok(&ep, &["alarm", "disarm"]);
    assert!(disarmed.contains("alarm:NOSPACE"), "{disarmed}");
    assert_eq!(etcdctl_ok(&ep, &["alarm", "list"]).trim(), "");
    etcdctl_ok(&ep, &["put", "small", "1"]);
    assert_eq!(super::http::http(&ep, "GET", "/health").status, 200);
}

#[test]
fn the_periodic_check_raises_corrupt_for_a_member_whose_data_changed_on_disk() {
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, &["--corrupt-check-time=1s"]);
    let ep = cluster.members[0].endpoint();
    for i in 0..20 {
        etcdctl_ok(&ep, &["put", &format!("k{i}"), "v"]);
    }
    let id = |m: &Member| -> u64 {
        let status: Value =
            serde_json::from_str(&etcdctl_ok(&m.endpoint(), &["endpoint", "status", "-w", "json"])).unwrap();
        status[0]["Status"]["header"]["member_id"].as_u64().unwrap()
    };
    let leader = {
        let status: Value = serde_json::from_str(&etcdctl_ok(&ep, &["endpoint", "status", "-w", "json"])).unwrap();
        status[0]["Status"]["leader"].as_u64().unwrap()
    };
    let victim = cluster.members.iter().position(|m| id(m) != leader).unwrap();
    let victim_id = id(&cluster.members[victim]);
    let m = &mut cluster.members[victim];
    m.stop();
    alter_the_newest_value(&m.data_dir());
    m.respawn();
    wait_for("the leader to raise CORRUPT for the altered member", Duration::from_secs(30), || {
        etcdctl(&ep, &["alarm", "list"], None)
            .stdout
            .starts_with(format!("memberID:{victim_id} alarm:CORRUPT").as_bytes())
    });
    let write = etcdctl(&ep, &["put", "x", "1"], None);
    assert!(etcdctl_stderr(&write).contains("etcdserver: corrupt cluster"), "{}", etcdctl_stderr(&write));
    // Reads go on, as in etcd 3.6.
    etcdctl_ok(&ep, &["get", "k1"]);
}

#[test]
fn hash_defragment_and_move_leader_answer_as_etcd_does() {
    use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use ferrocd_proto::etcdserverpb::{DefragmentRequest, HashRequest, MoveLeaderRequest, StatusRequest};
    let mut f = Member::start(Kind::Ferrocd, &[]);
    etcdctl_ok(&f.endpoint(), &["put", "a", "1"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let hash = |url: String| {
        rt.block_on(async {
            let mut m = MaintenanceClient::connect(url).await.unwrap();
            let h = m.hash(HashRequest {}).await.unwrap().into_inner();
            let d = m.defragment(DefragmentRequest {}).await.unwrap().into_inner();
            assert_eq!(d.header, None, "Defragment answers no header");
            let me = m.status(StatusRequest {}).await.unwrap().into_inner().header.unwrap().member_id;
            let ml = m.move_leader(MoveLeaderRequest { target_id: me }).await.unwrap().into_inner();
            assert_eq!(ml.header, None, "MoveLeader answers no header");
            (h.hash, h.header.unwrap().revision)
        })
    };
    let before = hash(f.url());
    assert_eq!(before, hash(f.url()), "the hash is stable");
    f.stop();
    f.restart();
    assert_eq!(before, hash(f.url()), "and stays across a restart");
    etcdctl_ok(&f.endpoint(), &["put", "a", "2"]);
    assert_ne!(before.0, hash(f.url()).0, "a write changes it");
}

/// Changes the value of the newest record of a stopped member's keyspace, on disk.
fn alter_the_newest_value(data_dir: &Path) {
    use ferrocd_engine::{Engine, ReadView, Scan, WriteBatch};
    use prost::Message;
    let engine = ferrocd_server::storage::open_engine(data_dir).unwrap();
    let mut newest = None;
    engine
        .scan(ferrocd_mvcc::KEY_BUCKET, &[], None, true, &mut |k, v| {
            newest = Some((k.to_vec(), v.to_vec()));
            Ok(Scan::Stop)
        })
        .unwrap();
    let (key, value) = newest.expect("a record");
    let mut kv = ferrocd_proto::mvccpb::KeyValue::decode(value.as_slice()).unwrap();
    kv.value = b"altered".to_vec();
    let mut batch = WriteBatch::new();
    batch.put(ferrocd_mvcc::KEY_BUCKET, key, kv.encode_to_vec());
    engine.write(batch, true).unwrap();
}
