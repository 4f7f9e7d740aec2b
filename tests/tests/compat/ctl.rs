//! ferrocdctl against etcdctl: the same command, against the same answers, prints the same
//! bytes (stdout, stderr without etcdctl's client log lines, exit code), in every format.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use ferrocd_test_utils::{Kind, Member, etcdctl, etcdctl_ok, etcdctl_stderr, ferrocdctl_bin};

const FORMATS: [&str; 5] = ["simple", "json", "fields", "protobuf", "table"];

fn ferrocdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(ferrocdctl_bin())
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrocdctl");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write ferrocdctl's input");
    }
    child.wait_with_output().expect("ferrocdctl's output")
}

/// What a run printed and how it ended; etcdctl's client log lines and its Go panics (etcdctl
/// 3.4 crashes on `-w fields alarm list` with no alarm) are not part of the contract.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn seen(out: &Output) -> Seen {
    Seen {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: etcdctl_stderr(out),
        code: out.status.code(),
    }
}

/// Runs `args` with both tools against `endpoint` and asserts the same output.
fn same(endpoint: &str, args: &[&str], stdin: Option<&str>) {
    let reference = seen(&etcdctl(endpoint, args, stdin));
    if reference.stderr.starts_with("panic:") {
        return;
    }
    let ours = seen(&ferrocdctl(endpoint, args, stdin));
    assert_eq!(ours, reference, "ferrocdctl {args:?} differs from etcdctl");
}

#[test]
fn reads_and_errors_print_what_etcdctl_prints() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    etcdctl_ok(&ep, &["put", "foo", "bar"]);
    etcdctl_ok(&ep, &["put", "foo", "baz"]);
    for (k, v) in [("dir/a", "1"), ("dir/b", "2"), ("dir/c", "three\ttabs \"quoted\""), ("bin\u{1}", "\u{7f}")] {
        etcdctl_ok(&ep, &["put", k, v]);
    }
    let grant = etcdctl_ok(&ep, &["lease", "grant", "600"]);
    let lease = grant.split_whitespace().nth(1).expect("a lease id").to_string();
    etcdctl_ok(&ep, &["put", "leased", "v", "--lease", &lease]);
    etcdctl_ok(&ep, &["role", "add", "r1"]);
    etcdctl_ok(&ep, &["role", "grant-permission", "r1", "read", "dir/", "--prefix"]);
    etcdctl_ok(&ep, &["role", "grant-permission", "r1", "readwrite", "foo"]);
    etcdctl_ok(&ep, &["role", "grant-permission", "r1", "write", "a", "c"]);
    etcdctl_ok(&ep, &["user", "add", "u1", "--new-user-password", "pw"]);
    etcdctl_ok(&ep, &["user", "grant-role", "u1", "r1"]);

    let commands: Vec<Vec<&str>> = vec![
        vec!["get", "foo"],
        vec!["get", "foo", "--print-value-only"],
        vec!["get", "dir/", "--prefix"],
        vec!["get", "dir/", "--prefix", "--keys-only"],
        vec!["get", "dir/", "--prefix", "--limit", "1"],
        vec!["get", "dir/", "--prefix", "--order", "DESCEND", "--sort-by", "MODIFY"],
        vec!["get", "dir/", "--prefix", "--sort-by", "value"],
        vec!["get", "dir/a", "dir/c"],
        vec!["get", "", "--from-key"],
        vec!["get", "", "--prefix", "--hex"],
        vec!["get", "foo", "--rev", "2"],
        vec!["get", "foo", "--consistency", "s"],
        vec!["get", "nothing"],
        vec!["lease", "timetolive", &lease, "--keys"],
        vec!["lease", "timetolive", "1234"],
        vec!["lease", "list"],
        vec!["member", "list"],
        vec!["endpoint", "status"],
        vec!["endpoint", "status", "--cluster"],
        vec!["endpoint", "hashkv"],
        vec!["endpoint", "hashkv", "--cluster"],
        vec!["alarm", "list"],
        vec!["role", "get", "r1"],
        vec!["role", "list"],
        vec!["user", "get", "u1"],
        vec!["user", "get", "u1", "--detail"],
        vec!["user", "list"],
        // Refused before anything is sent.
        vec!["get"],
        vec!["get", "a", "b", "--prefix"],
        vec!["get", "a", "--prefix", "--from-key"],
        vec!["get", "a", "--consistency", "x"],
        vec!["get", "a", "--order", "sideways"],
        vec!["get", "a", "--sort-by", "height"],
        vec!["get", "a", "--print-value-only", "-w", "json"],
        vec!["put"],
        vec!["put", "k", "--lease", "xyz"],
        vec!["del"],
        vec!["del", "a", "b", "c"],
        vec!["lease", "grant"],
        vec!["lease", "grant", "abc"],
        vec!["lease", "revoke", "zz"],
        vec!["lease", "timetolive"],
        vec!["member", "remove", "xyz"],
        vec!["member", "add"],
        vec!["member", "add", "m2"],
        vec!["member", "add", "m2", "http://x:1"],
        vec!["compaction"],
        vec!["alarm", "list", "extra"],
        vec!["role", "grant-permission", "r1", "sideways", "k"],
        vec!["role", "grant-permission", "r1", "read", "k", "--prefix", "--from-key"],
        vec!["user", "get"],
        // Refused by the server.
        vec!["get", "foo", "--rev", "9999"],
        vec!["lease", "revoke", "1234"],
        vec!["put", "missing", "--ignore-value"],
        vec!["put", "k", "v", "--lease", "1234"],
        vec!["member", "remove", "1234"],
        vec!["role", "get", "nobody"],
        vec!["user", "get", "nobody"],
        vec!["compaction", "99999"],
    ];
    for format in FORMATS {
        for command in &commands {
            let mut args = command.clone();
            args.extend(["-w", format]);
            same(&ep, &args, None);
        }
        for (compares, success, failure) in [
            ("value(\"foo\") = \"nope\"", "put x y", "get foo\nget dir/ --prefix --keys-only"),
            ("mod(\"foo\") > \"0\"\nversion(\"dir/a\") = \"1\"", "get foo\nget dir/a dir/c", ""),
            ("create(\"none\") = \"0\"", "", "del never"),
            ("frob(\"foo\") = \"1\"", "", ""),
            ("value(\"foo\") > \"a\"", "frob a b", ""),
            ("value(foo) = \"a\"", "", ""),
        ] {
            let input = format!("{compares}\n\n{success}\n\n{failure}\n\n");
            same(&ep, &["txn", "-w", format], Some(&input));
            same(&ep, &["txn", "-i", "-w", format], Some(&input));
        }
        same(&ep, &["txn", "-w", format], Some("value(\"foo\") = \"baz\"\n"));
    }
}

/// The identifiers two fresh members differ in: member and cluster ids, ports.
fn identity(ep: &str) -> (u64, u64) {
    let json: serde_json::Value =
        serde_json::from_str(&etcdctl_ok(ep, &["member", "list", "-w", "json"])).expect("member list as JSON");
    let id = json["members"][0]["ID"].as_u64().expect("a member id");
    (id, json["header"]["cluster_id"].as_u64().expect("a cluster id"))
}

fn lease_ids(ep: &str) -> Vec<i64> {
    let json: serde_json::Value =
        serde_json::from_str(&etcdctl_ok(ep, &["lease", "list", "-w", "json"])).expect("lease list as JSON");
    let mut ids: Vec<i64> = json["leases"].as_array().into_iter().flatten().filter_map(|l| l["id"].as_i64()).collect();
    ids.sort_unstable();
    ids
}

/// `text` with member `b`'s identifiers written as member `a`'s.
fn as_member_a(text: &str, b: &Member, a: &Member, ids: &[(String, String)]) -> String {
    let mut text = text.replace(&b.endpoint(), &a.endpoint());
    text = text.replace(&b.peer_url(), &a.peer_url());
    for (from, to) in ids {
        text = text.replace(from.as_str(), to);
    }
    text
}

#[test]
fn writes_print_what_etcdctl_prints() {
    let stdin = |s: &str| Some(s.to_string());
    // Each step runs on two fresh members, one per tool, so both see the same revisions.
    let steps: Vec<(Vec<&str>, Option<String>)> = vec![
        (vec!["put", "foo", "bar"], None),
        (vec!["put", "foo", "baz", "--prev-kv"], None),
        (vec!["put", "dir/a", "1"], None),
        (vec!["put", "dir/b", "2"], None),
        (vec!["put", "foo", "--ignore-value", "--prev-kv"], None),
        (vec!["del", "dir/", "--prefix", "--prev-kv"], None),
        (vec!["del", "nothing"], None),
        (vec!["txn"], stdin("mod(\"foo\") > \"0\"\n\nput foo qux --prev-kv\nget foo\ndel foo --prev-kv\n\n\n")),
        (vec!["put", "foo", "again"], None),
        (vec!["compaction", "3"], None),
        (vec!["compaction", "2"], None),
        (vec!["lease", "grant", "600"], None),
        (vec!["role", "add", "r1"], None),
        (vec!["role", "grant-permission", "r1", "read", "k", "--from-key"], None),
        (vec!["role", "grant-permission", "r1", "write", "", "--prefix"], None),
        (vec!["role", "revoke-permission", "r1", "k", "--from-key"], None),
        (vec!["role", "revoke-permission", "r1", "nothing"], None),
        (vec!["user", "add", "u1:pw"], None),
        (vec!["user", "add", "u1:pw"], None),
        (vec!["user", "passwd", "u1", "--interactive=false"], stdin("newpw\n")),
        (vec!["user", "grant-role", "u1", "r1"], None),
        (vec!["user", "revoke-role", "u1", "r1"], None),
        (vec!["user", "delete", "u1"], None),
        (vec!["role", "delete", "r1"], None),
        (vec!["alarm", "disarm"], None),
        (vec!["defrag"], None),
    ];
    for format in ["simple", "json", "fields"] {
        let (a, b) = (Member::start(Kind::Ferrocd, &[]), Member::start(Kind::Ferrocd, &[]));
        let (ea, eb) = (a.endpoint(), b.endpoint());
        let (id_a, cluster_a) = identity(&ea);
        let (id_b, cluster_b) = identity(&eb);
        let mut ids = vec![
            (id_b.to_string(), id_a.to_string()),
            (format!("{id_b:x}"), format!("{id_a:x}")),
            (cluster_b.to_string(), cluster_a.to_string()),
            (format!("{cluster_b:x}"), format!("{cluster_a:x}")),
        ];
        let mut run = |args: &[&str], input: Option<&str>| {
            let reference = seen(&etcdctl(&ea, args, input));
            let ours = seen(&ferrocdctl(&eb, args, input));
            if reference.stderr.starts_with("panic:") {
                return;
            }
            for (la, lb) in lease_ids(&ea).into_iter().zip(lease_ids(&eb)) {
                ids.push((lb.to_string(), la.to_string()));
                ids.push((format!("{lb:016x}"), format!("{la:016x}")));
            }
            let ours = Seen {
                stdout: as_member_a(&ours.stdout, &b, &a, &ids),
                stderr: as_member_a(&ours.stderr, &b, &a, &ids),
                code: ours.code,
            };
            assert_eq!(ours, reference, "ferrocdctl {args:?} (-w {format}) differs from etcdctl");
        };
        for (args, input) in &steps {
            let mut args = args.clone();
            args.extend(["-w", format]);
            run(&args, input.as_deref());
        }
        let lease = format!("{:x}", lease_ids(&ea)[0]);
        let lease_b = format!("{:x}", lease_ids(&eb)[0]);
        for args in [
            vec!["lease", "keep-alive", "--once", &lease],
            vec!["lease", "revoke", &lease],
            vec!["lease", "keep-alive", "--once", &lease],
            vec!["lease", "timetolive", &lease],
        ] {
            let mut args = args.clone();
            args.extend(["-w", format]);
            let reference = seen(&etcdctl(&ea, &args, None));
            let args_b: Vec<&str> = args.iter().map(|a| if *a == lease { lease_b.as_str() } else { a }).collect();
            let ours = seen(&ferrocdctl(&eb, &args_b, None));
            let ours = Seen {
                stdout: as_member_a(&ours.stdout, &b, &a, &ids),
                stderr: as_member_a(&ours.stderr, &b, &a, &ids),
                code: ours.code,
            };
            assert_eq!(ours, reference, "ferrocdctl {args:?} differs from etcdctl");
        }
    }
}

#[test]
fn endpoint_health_and_environment() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    // `took` is a time: compare what is around it.
    let scrub = |s: &str| -> String {
        let mut out = String::new();
        for word in s.split_inclusive([' ', '"', '|', '\n']) {
            let core = word.trim_end_matches([' ', '"', '|', '\n']);
            let is_time = core.ends_with('s') && core.starts_with(|c: char| c.is_ascii_digit());
            out.push_str(if is_time { "T" } else { core });
            out.push_str(&word[core.len()..]);
        }
        // A border's width follows the time's: compare borders by their shape.
        let border = |w: &str| w.chars().all(|c| c == '+' || c == '-');
        out.split_whitespace().map(|w| if border(w) { "+" } else { w }).collect::<Vec<_>>().join(" ")
    };
    for format in FORMATS {
        let reference = seen(&etcdctl(&ep, &["endpoint", "health", "-w", format], None));
        let ours = seen(&ferrocdctl(&ep, &["endpoint", "health", "-w", format], None));
        assert_eq!(
            (scrub(&ours.stdout), scrub(&ours.stderr), ours.code),
            (scrub(&reference.stdout), scrub(&reference.stderr), reference.code),
            "endpoint health -w {format}"
        );
    }
    // The environment names the flags; a flag given twice (variable and option) is refused.
    let out = Command::new(ferrocdctl_bin())
        .env("ETCDCTL_ENDPOINTS", &ep)
        .env("ETCDCTL_WRITE_OUT", "json")
        .args(["get", "nothing"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("{\"header\""));
    let out = Command::new(ferrocdctl_bin())
        .env("ETCDCTL_ENDPOINTS", &ep)
        .args([&format!("--endpoints={ep}"), "get", "nothing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "conflicting environment variable \"ETCDCTL_ENDPOINTS\" is shadowed by corresponding command-line flag"
    ));
    // An endpoint nobody serves: etcdctl's words.
    let out = ferrocdctl("127.0.0.1:1", &["--dial-timeout=1s", "--command-timeout=2s", "get", "a"], None);
    assert_eq!(etcdctl_stderr(&out), "Error: context deadline exceeded\n");
    assert_eq!(out.status.code(), Some(1));
}

/// A long-running command whose output is collected as it comes.
struct Running {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Running {
    fn start(program: &std::path::Path, endpoint: &str, args: &[&str]) -> Running {
        let mut child = Command::new(program)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a watcher");
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("stdout");
        let sink = std::sync::Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Running { child, out }
    }

    /// The output once `done` holds for it (within a deadline), and the process stopped.
    fn output_when(mut self, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done(&self.out.lock().unwrap()) {
            assert!(
                std::time::Instant::now() < deadline,
                "no output: {:?}",
                String::from_utf8_lossy(&self.out.lock().unwrap())
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.out.lock().unwrap().clone()
    }
}

#[test]
fn watches_print_what_etcdctl_prints() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    let etcdctl_bin = std::path::PathBuf::from("/usr/bin/etcdctl");
    let etcdctl_bin = if etcdctl_bin.exists() { etcdctl_bin } else { std::path::PathBuf::from("etcdctl") };
    for (k, v) in [("w/a", "1"), ("w/b", "2"), ("w/a", "3")] {
        etcdctl_ok(&ep, &["put", k, v]);
    }
    etcdctl_ok(&ep, &["del", "w/b"]);
    etcdctl_ok(&ep, &["put", "w/zz-end", "end"]);
    let ended = |out: &[u8]| out.windows(3).any(|w| w == b"end") || out.windows(4).any(|w| w == b"ZW5k");
    // `table` is not a format for events: both refuse at the first one.
    same(&ep, &["watch", "w/", "--prefix", "--rev", "1", "-w", "table"], None);
    for format in ["simple", "json", "fields", "protobuf"] {
        for args in [
            vec!["watch", "w/", "--prefix", "--rev", "1"],
            vec!["watch", "w/a", "w/zz-end~", "--rev", "2", "--prev-kv"],
        ] {
            let mut args = args.clone();
            args.extend(["-w", format]);
            let reference = Running::start(&etcdctl_bin, &ep, &args).output_when(ended);
            let ours = Running::start(&ferrocdctl_bin(), &ep, &args).output_when(ended);
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&reference), "{args:?}");
        }
    }
    // A command per event, with the event in its environment.
    let show = "echo \"$ETCD_WATCH_REVISION $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\"";
    let args = ["watch", "w/", "--prefix", "--rev", "1", "--", "sh", "-c", show];
    let ran_last = |out: &[u8]| out.ends_with(b" \"end\"\n");
    let reference = Running::start(&etcdctl_bin, &ep, &args).output_when(ran_last);
    let ours = Running::start(&ferrocdctl_bin(), &ep, &args).output_when(ran_last);
    assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&reference));
    // A watch from a compacted revision is canceled: the same words and exit code.
    etcdctl_ok(&ep, &["compaction", "4"]);
    same(&ep, &["watch", "w/", "--prefix", "--rev", "2"], None);
}

#[test]
fn lock_and_elect() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    // A command run while the lock is held sees the lock's key and revision.
    let out = ferrocdctl(&ep, &["lock", "mylock", "sh", "-c", "echo \"$ETCD_LOCK_KEY $ETCD_LOCK_REV\""], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("mylock/") && text.trim_end().split(' ').nth(1).is_some_and(|r| r.parse::<i64>().is_ok()),
        "{text}"
    );
    // Released afterwards: etcdctl takes it at once.
    let out = etcdctl(&ep, &["lock", "mylock", "true"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A holder prints its key; an etcdctl observer sees ferrocdctl's campaign.
    let holder = Running::start(&ferrocdctl_bin(), &ep, &["elect", "office", "alice"]);
    let observer = Running::start(std::path::Path::new("/usr/bin/etcdctl"), &ep, &["elect", "-l", "office"]);
    let seen = observer.output_when(|o| o.ends_with(b"alice\n"));
    assert!(String::from_utf8_lossy(&seen).starts_with("office/"), "{}", String::from_utf8_lossy(&seen));
    let held = holder.output_when(|o| o.ends_with(b"alice\n"));
    assert_eq!(held, seen, "the leader's key and value");
}

#[test]
fn the_readme_commands_run() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let section = readme.split("### From the command line: `ferrocdctl`").nth(1).expect("the ferrocdctl section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("its sh block");
    let bin_dir = ferrocdctl_bin().parent().expect("a directory").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut outputs = Vec::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let line = line.replace("127.0.0.1:2379", &member.endpoint());
        let out = Command::new("sh").args(["-c", &line]).env("PATH", &path).output().expect("sh");
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert_eq!(outputs[0], "OK\n");
    assert!(outputs[1].contains("\"kvs\":[{\"key\":\"Z3JlZXRpbmc=\""), "{}", outputs[1]);
    assert!(outputs[2].contains("ENDPOINT") && outputs[2].contains(&member.endpoint()), "{}", outputs[2]);
}
