//! What ferrocdctl says before it talks to any server: argument errors in etcdctl's words and
//! exit codes. (Its answers from servers are diffed against etcdctl's in the workspace's
//! compatibility tests.)

use std::process::{Command, Output, Stdio};

fn ferrocdctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrocdctl"))
        .args(["--endpoints=127.0.0.1:1", "--dial-timeout=100ms", "--command-timeout=200ms"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ferrocdctl")
}

fn refused(args: &[&str]) -> (String, Option<i32>) {
    let out = ferrocdctl(args);
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&out.stdout));
    (String::from_utf8_lossy(&out.stderr).into_owned(), out.status.code())
}

#[test]
fn bad_arguments_get_etcdctls_errors() {
    let cases: &[(&[&str], &str, i32)] = &[
        (&["get"], "get command needs one argument as key and an optional argument as range_end", 128),
        (
            &["get", "a", "--prefix", "--from-key"],
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
            128,
        ),
        (&["get", "a", "--consistency", "x"], "unknown consistency flag \"x\"", 4),
        (&["put"], "put command needs 1 argument and input from stdin or 2 arguments", 128),
        (&["put", "k"], "put command needs 1 argument and input from stdin or 2 arguments", 128),
        (
            &["put", "k", "v", "--lease", "xyz"],
            "bad lease ID (strconv.ParseInt: parsing \"xyz\": invalid syntax), expecting ID in Hex",
            128,
        ),
        (&["del", "a", "b", "c"], "del command needs one argument as key and an optional argument as range_end", 128),
        (
            &["lease", "revoke", "zz"],
            "bad lease ID arg (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex",
            128,
        ),
        (
            &["member", "remove", "xyz"],
            "bad member ID arg (strconv.ParseUint: parsing \"xyz\": invalid syntax), expecting ID in Hex",
            128,
        ),
        (&["compaction"], "compaction command needs 1 argument", 128),
        (&["-w", "xml", "get", "a"], "unsupported output format", 4),
        (&["move-leader"], "move-leader command needs 1 argument", 128),
        (&["snapshot", "save"], "snapshot save expects one argument", 128),
        (&["elect"], "elect takes one election name argument and an optional proposal argument.", 128),
        (&["lock"], "lock takes a lock name argument and an optional command to execute", 128),
    ];
    for (args, message, code) in cases {
        assert_eq!(refused(args), (format!("Error: {message}\n"), Some(*code)), "{args:?}");
    }
}

#[test]
fn an_unreachable_cluster_is_a_deadline() {
    assert_eq!(refused(&["get", "a"]), ("Error: context deadline exceeded\n".into(), Some(1)));
}

#[test]
fn version_names_the_api() {
    let out = ferrocdctl(&["version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("etcdctl version: 3.6.0\nAPI version: 3.6\nferrocdctl version: "), "{text}");
}
