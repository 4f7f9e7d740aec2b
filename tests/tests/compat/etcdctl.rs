//! The real etcdctl against ferrocd: exact outputs of the everyday commands.

use ferrocd_test_utils::{Kind, Member, etcdctl, etcdctl_ok, etcdctl_stderr, ferrocd_bin};

fn stderr_of(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoint, args, None);
    assert!(!out.status.success(), "etcdctl {args:?} should fail");
    etcdctl_stderr(&out)
}

#[test]
fn put_get_del_with_flags() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    assert_eq!(etcdctl_ok(&ep, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(etcdctl_ok(&ep, &["put", "foo", "baz", "--prev-kv"]), "OK\nfoo\nbar\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "foo", "--print-value-only"]), "baz\n");
    for (k, v) in [("dir/a", "1"), ("dir/b", "2"), ("dir/c", "3")] {
        etcdctl_ok(&ep, &["put", k, v]);
    }
    assert_eq!(etcdctl_ok(&ep, &["get", "dir/", "--prefix", "--keys-only"]), "dir/a\n\ndir/b\n\ndir/c\n\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "dir/", "--prefix", "--limit", "1"]), "dir/a\n1\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "dir/b", "--from-key", "--print-value-only"]), "2\n3\nbaz\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "dir/", "--prefix", "--order", "DESCEND", "--print-value-only"]), "3\n2\n1\n");
    let json: serde_json::Value =
        serde_json::from_str(&etcdctl_ok(&ep, &["get", "dir/", "--prefix", "--limit", "1", "-w", "json"])).unwrap();
    assert_eq!((json["count"].as_i64(), json["more"].as_bool()), (Some(3), Some(true)));
    assert_eq!(json["header"]["revision"], 6);
    assert_eq!(etcdctl_ok(&ep, &["get", "foo", "--rev", "2", "--print-value-only"]), "bar\n");
    assert_eq!(etcdctl_ok(&ep, &["del", "dir/a"]), "1\n");
    assert_eq!(etcdctl_ok(&ep, &["del", "dir/", "--prefix", "--prev-kv"]), "2\ndir/b\n2\ndir/c\n3\n");
    assert_eq!(etcdctl_ok(&ep, &["del", "dir/", "--prefix"]), "0\n");
    assert_eq!(etcdctl_ok(&ep, &["put", "foo", "--ignore-value"]), "OK\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "foo", "--print-value-only"]), "baz\n");
}

#[test]
fn error_texts() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    etcdctl_ok(&ep, &["put", "k", "v"]);
    assert_eq!(stderr_of(&ep, &["put", "missing", "--ignore-value"]), "Error: etcdserver: key not found\n");
    assert_eq!(stderr_of(&ep, &["put", "k", "v", "--lease", "1234"]), "Error: etcdserver: requested lease not found\n");
    assert_eq!(
        stderr_of(&ep, &["get", "k", "--rev", "99"]),
        "Error: etcdserver: mvcc: required revision is a future revision\n"
    );
    let too_many: String = (0..129).map(|i| format!("put k{i} v\n")).collect();
    let out = etcdctl(&ep, &["txn"], Some(&format!("\n{too_many}\n\n")));
    assert_eq!(etcdctl_stderr(&out), "Error: etcdserver: too many operations in txn request\n");
    let out = etcdctl(&ep, &["txn"], Some("\nput d 1\nput d 2\n\n\n"));
    assert_eq!(etcdctl_stderr(&out), "Error: etcdserver: duplicate key given in txn request\n");
}

#[test]
fn interactive_txn() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    etcdctl_ok(&ep, &["put", "user", "alice"]);
    let out = etcdctl(
        &ep,
        &["txn", "-i"],
        Some("value(\"user\") = \"alice\"\n\nput user bob\nget user\n\nput user never\n\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
    assert!(text.contains("user\nbob"), "the get inside the txn sees the put: {text}");
    let out = etcdctl(&ep, &["txn", "-i"], Some("mod(\"user\") < \"2\"\n\nput user carol\n\nget user\n\n"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILURE") && text.contains("user\nbob"), "{text}");
    assert_eq!(etcdctl_ok(&ep, &["get", "user", "--print-value-only"]), "bob\n");
}

#[test]
fn compaction_and_maintenance() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    let raft_index = |ep: &str| {
        let status: serde_json::Value =
            serde_json::from_str(&etcdctl_ok(ep, &["endpoint", "status", "-w", "json"])).unwrap();
        status[0]["Status"]["raftIndex"].as_i64().unwrap()
    };
    let start = raft_index(&ep);
    for i in 0..5 {
        etcdctl_ok(&ep, &["put", "c", &i.to_string()]);
    }
    assert_eq!(etcdctl_ok(&ep, &["compaction", "4"]), "compacted revision 4\n");
    assert_eq!(
        stderr_of(&ep, &["get", "c", "--rev", "3"]),
        "Error: etcdserver: mvcc: required revision has been compacted\n"
    );
    assert_eq!(etcdctl_ok(&ep, &["get", "c", "--rev", "4", "--print-value-only"]), "2\n");
    assert_eq!(etcdctl_ok(&ep, &["compaction", "--physical", "6"]), "compacted revision 6\n");
    let status: serde_json::Value =
        serde_json::from_str(&etcdctl_ok(&ep, &["endpoint", "status", "-w", "json"])).unwrap();
    let s = &status[0]["Status"];
    assert_eq!(s["version"], "3.6.0");
    assert_eq!(s["leader"], s["header"]["member_id"]);
    assert!(s["dbSize"].as_i64().unwrap() > 0);
    assert_eq!(s["raftIndex"].as_i64().unwrap() - start, 7, "five puts and two compactions");
    assert_eq!(s["raftAppliedIndex"], s["raftIndex"]);
    assert!(s["raftTerm"].as_i64().unwrap() >= 1);
    let health = etcdctl(&ep, &["endpoint", "health"], None);
    assert!(health.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&health.stdout), String::from_utf8_lossy(&health.stderr));
    assert!(text.contains("is healthy"), "{text}");
    let hash: serde_json::Value =
        serde_json::from_str(&etcdctl_ok(&ep, &["endpoint", "hashkv", "-w", "json"])).unwrap();
    assert_eq!(hash[0]["HashKV"]["compact_revision"], 6);
    assert!(etcdctl_ok(&ep, &["defrag"]).contains("Finished defragmenting etcd member"));
}

#[test]
fn binary_flags() {
    let out = std::process::Command::new(ferrocd_bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("etcd Version: 3.6.0\n"));
    let out = std::process::Command::new(ferrocd_bin()).arg("--no-such-flag").output().unwrap();
    assert!(!out.status.success(), "an unknown flag is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let dir = tempfile_dir();
    let out = std::process::Command::new(ferrocd_bin())
        .args(["--name", "z", "--data-dir", &dir, "--initial-cluster", "x=http://127.0.0.1:1,y=http://127.0.0.1:2"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a member missing from --initial-cluster is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("couldn't find local name \"z\" in the initial cluster configuration"), "{stderr}");
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(format!("ferrocd-flags-{}", std::process::id()));
    dir.to_string_lossy().into_owned()
}
