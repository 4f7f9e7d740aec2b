//! ferrocdctl against etcdctl: the same command, against the same answers, prints the same
//! bytes (stdout, stderr without etcdctl's client log lines, exit code), in every format.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use ferrocd_test_utils::{Kind, Member, etcdctl, etcdctl_ok, etcdctl_stderr, ferrocdctl, ferrocdctl_bin};

use crate::cluster::json;

const FORMATS: [&str; 5] = ["simple", "json", "fields", "protobuf", "table"];

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

/// Two fresh single members started alike, one per tool: the same commands give them the same
/// revisions, and what still differs (member, cluster and lease ids, ports) is written as the
/// first member's before comparing.
struct Mirror {
    a: Member,
    b: Member,
    ids: Vec<(String, String)>,
}

impl Mirror {
    fn start() -> Mirror {
        let (a, b) = (Member::start(Kind::Ferrocd, &[]), Member::start(Kind::Ferrocd, &[]));
        let mut mirror = Mirror { a, b, ids: Vec::new() };
        mirror.learn();
        mirror
    }

    /// Pairs up the ids both members hold now: members (in list order) and leases (ascending).
    fn learn(&mut self) {
        // With auth on (and no user given) nothing is listed: the ids known stay.
        let json = |ep: &str, args: &[&str]| -> serde_json::Value {
            let mut args = args.to_vec();
            args.extend(["-w", "json"]);
            let out = etcdctl(ep, &args, None);
            serde_json::from_slice(&out.stdout).unwrap_or_default()
        };
        let (ea, eb) = (self.a.endpoint(), self.b.endpoint());
        let (la, lb) = (json(&ea, &["member", "list"]), json(&eb, &["member", "list"]));
        let cluster = |l: &serde_json::Value| l["header"]["cluster_id"].as_u64().unwrap_or_default();
        let mut pairs = vec![(cluster(&lb), cluster(&la))];
        // Members pair up by name (a learner not started yet has none, and there is one).
        let ids = |l: &serde_json::Value| -> Vec<(String, u64)> {
            let mut ids: Vec<(String, u64)> = l["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| Some((m["name"].as_str().unwrap_or_default().to_string(), m["ID"].as_u64()?)))
                .collect();
            ids.sort();
            ids
        };
        pairs.extend(ids(&lb).into_iter().zip(ids(&la)).map(|((_, b), (_, a))| (b, a)));
        for (b, a) in pairs {
            self.ids.push((b.to_string(), a.to_string()));
            self.ids.push((format!("{b:x}"), format!("{a:x}")));
        }
        let leases = |ep: &str| -> Vec<i64> {
            let mut ids: Vec<i64> = json(ep, &["lease", "list"])["leases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["id"].as_i64())
                .collect();
            ids.sort_unstable();
            ids
        };
        for (b, a) in leases(&eb).into_iter().zip(leases(&ea)) {
            self.ids.push((b.to_string(), a.to_string()));
            self.ids.push((format!("{b:016x}"), format!("{a:016x}")));
            self.ids.push((format!("{b:x}"), format!("{a:x}")));
        }
    }

    /// `args` for member b: member a's ids in it written as b's.
    fn args_for_b<'s>(&self, args: &'s [&'s str]) -> Vec<String> {
        args.iter()
            .map(|arg| {
                let mut arg = arg.to_string();
                for (b, a) in &self.ids {
                    if arg == *a {
                        arg = b.clone();
                    }
                }
                arg
            })
            .collect()
    }

    fn as_a(&self, text: &str) -> String {
        let mut text = text.replace(&self.b.endpoint(), &self.a.endpoint());
        text = text.replace(&self.b.peer_url(), &self.a.peer_url());
        for (b, a) in &self.ids {
            text = text.replace(b.as_str(), a);
        }
        text
    }

    /// Runs `args` with etcdctl on a and ferrocdctl on b and asserts the same output.
    fn same(&mut self, args: &[&str], input: Option<&str>) {
        let reference = seen(&etcdctl(&self.a.endpoint(), args, input));
        let b_args = self.args_for_b(args);
        let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
        let ours = seen(&ferrocdctl(&self.b.endpoint(), &b_args, input));
        self.learn();
        if reference.stderr.starts_with("panic:") {
            return;
        }
        let mut ours = Seen { stdout: self.as_a(&ours.stdout), stderr: self.as_a(&ours.stderr), code: ours.code };
        let mut reference = reference;
        if args[0] == "member" {
            // Members are listed by id, and the two members' random ids need not sort alike.
            ours.stdout = members_in_any_order(&ours.stdout);
            reference.stdout = members_in_any_order(&reference.stdout);
        }
        assert_eq!(ours, reference, "ferrocdctl {args:?} differs from etcdctl");
    }
}

/// Member output with its members in a canonical order: JSON's `members` sorted by id, other
/// formats' lines sorted (and their ids' padding squeezed).
fn members_in_any_order(stdout: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(stdout) {
        Ok(mut value) => {
            if let Some(members) = value.get_mut("members").and_then(|m| m.as_array_mut()) {
                members.sort_by_key(|m| m["ID"].as_u64());
            }
            value.to_string()
        }
        Err(_) => {
            // Ids are printed `%16x` (padded when below 2^60), so the two members' ids may
            // pad differently: spaces are squeezed; ETCD_INITIAL_CLUSTER lists members in order.
            let mut lines: Vec<String> = stdout
                .lines()
                .map(|line| match line.strip_prefix("ETCD_INITIAL_CLUSTER=") {
                    Some(list) => {
                        let mut members: Vec<&str> = list.trim_matches('"').split(',').collect();
                        members.sort_unstable();
                        format!("ETCD_INITIAL_CLUSTER={}", members.join(","))
                    }
                    None => line.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "),
                })
                .collect();
            lines.sort_unstable();
            lines.join("\n")
        }
    }
}

#[test]
fn writes_print_what_etcdctl_prints() {
    let stdin = |s: &str| Some(s.to_string());
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
        (vec!["put", "piped"], stdin("from stdin")),
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
        (vec!["move-leader", "1234"], None),
        (vec!["member", "promote", "1234"], None),
        // A learner that never starts: the quorum stays one.
        (vec!["member", "add", "m9", "--peer-urls=http://127.0.0.1:9", "--learner"], None),
        (vec!["member", "list"], None),
    ];
    for format in ["simple", "json", "fields"] {
        let mut mirror = Mirror::start();
        for (args, input) in &steps {
            let mut args = args.clone();
            args.extend(["-w", format]);
            mirror.same(&args, input.as_deref());
        }
        let ea = mirror.a.endpoint();
        let lease = format!("{:x}", json(&ea, &["lease", "list"])["leases"][0]["id"].as_i64().expect("a lease"));
        let learner = json(&ea, &["member", "list"])["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["isLearner"] == true)
            .and_then(|m| m["ID"].as_u64())
            .map(|id| format!("{id:x}"))
            .expect("the learner");
        for args in [
            vec!["lease", "keep-alive", "--once", &lease],
            vec!["lease", "revoke", &lease],
            vec!["lease", "keep-alive", "--once", &lease],
            vec!["lease", "timetolive", &lease],
            vec!["member", "update", &learner, "--peer-urls=http://127.0.0.1:10"],
            vec!["member", "promote", &learner],
            vec!["member", "remove", &learner],
            // Auth on and off: the refusals before and after, a wrong password.
            vec!["auth", "enable"],
            vec!["user", "add", "root:rootpw"],
            vec!["auth", "enable"],
            vec!["get", "foo"],
            vec!["--user", "root:wrong", "get", "foo"],
            vec!["--user", "root:rootpw", "get", "foo"],
            vec!["--user", "root", "--password", "rootpw", "auth", "disable"],
            vec!["auth", "disable"],
        ] {
            let mut args = args.clone();
            args.extend(["-w", format]);
            mirror.same(&args, None);
        }
        // etcdctl 3.4 has no `auth status` (3.5 added it): its 3.5 wording.
        let status = ferrocdctl(&mirror.b.endpoint(), &["auth", "status"], None);
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(text.starts_with("Authentication Status: false\nAuthRevision: "), "{text}");
    }
}

#[test]
fn snapshot_save_prints_what_etcdctl_prints() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    etcdctl_ok(&ep, &["put", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.db");
    let path = path.to_str().unwrap();
    let reference = seen(&etcdctl(&ep, &["snapshot", "save", path], None));
    let theirs = std::fs::metadata(path).unwrap().len();
    std::fs::remove_file(path).unwrap();
    let ours = seen(&ferrocdctl(&ep, &["snapshot", "save", path], None));
    assert_eq!(ours, reference);
    assert_eq!(std::fs::metadata(path).unwrap().len(), theirs, "the same server's snapshot, the same size");
    same(&ep, &["snapshot", "save"], None);
    // On a terminal (a pty from util-linux's `script`) a progress line is drawn on stderr; in a
    // pipe (above) nothing but etcdctl's bytes.
    std::fs::remove_file(path).unwrap();
    let command = format!("{} --endpoints={ep} snapshot save {path}", ferrocdctl_bin().display());
    let out = Command::new("script").args(["-qec", &command, "/dev/null"]).output().expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\rSaving snapshot: ") && text.contains("B/s)"), "{text:?}");
    assert!(text.contains(&format!("Snapshot saved at {path}")), "{text:?}");
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
    /// Its input, kept open while it runs.
    _stdin: Option<std::process::ChildStdin>,
}

impl Running {
    fn start(program: &std::path::Path, endpoint: &str, args: &[&str]) -> Running {
        Running::with_input(program, endpoint, args, None)
    }

    /// Started with `input` written to its stdin, which then stays open.
    fn with_input(program: &std::path::Path, endpoint: &str, args: &[&str], input: Option<&str>) -> Running {
        let mut child = Command::new(program)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
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
        let mut stdin = child.stdin.take();
        if let (Some(pipe), Some(input)) = (&mut stdin, input) {
            pipe.write_all(input.as_bytes()).expect("write the input");
        }
        Running { child, out, _stdin: stdin }
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
    // Interactive: watch lines from stdin (several at once), bad lines reported and skipped.
    let input = "watch w/a --rev 2\nbogus\n\nwatch w/ --prefix --rev 1 -- echo run\n";
    // w/a's two events (3 lines each), the prefix's five (3 lines and `run` each).
    let done = |out: &[u8]| out.iter().filter(|b| **b == b'\n').count() >= 2 * 3 + 5 * 4;
    {
        let args = ["watch", "-i"];
        let reference = Running::with_input(&etcdctl_bin, &ep, &args, Some(input)).output_when(done);
        let ours = Running::with_input(&ferrocdctl_bin(), &ep, &args, Some(input)).output_when(done);
        let lines = |out: &[u8]| {
            // Two watches print concurrently: compare their lines, not how they interleave.
            let mut lines: Vec<String> = String::from_utf8_lossy(out).lines().map(String::from).collect();
            lines.sort();
            lines
        };
        assert_eq!(lines(&ours), lines(&reference), "{args:?}");
    }
    // At the end of the input: the invalid lines' messages, then etcdctl's error and code.
    same(&ep, &["watch", "-i"], Some("bogus\n\nwatch\n"));
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

/// The keys and values under `prefix` at `endpoint`, in order (the test's values are one line).
fn pairs(endpoint: &str, prefix: &str) -> Vec<(String, String)> {
    let listed = etcdctl_ok(endpoint, &["get", prefix, "--prefix"]);
    let lines: Vec<&str> = listed.lines().collect();
    lines.chunks(2).map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string())).collect()
}

/// Polls `check` until it holds, within a deadline.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn make_mirror_copies_then_follows_like_etcdctl() {
    let source = Member::start(Kind::Ferrocd, &[]);
    let (theirs, ours) = (Member::start(Kind::Ferrocd, &[]), Member::start(Kind::Ferrocd, &[]));
    let ep = source.endpoint();
    for (k, v) in [("src/a", "1"), ("src/b", "2"), ("other/x", "no"), ("src/c/d", "3")] {
        etcdctl_ok(&ep, &["put", k, v]);
    }
    // Bad arguments: the same words and exit codes.
    same(&ep, &["make-mirror"], None);
    same(&ep, &["make-mirror", "--dest-prefix", "x", "--no-dest-prefix", &theirs.endpoint()], None);
    // The base copy, renamed under dst/, from both tools to their own destination.
    let etcdctl_bin = std::path::Path::new("/usr/bin/etcdctl");
    let args = |dest: String| ["make-mirror", "--prefix", "src/", "--dest-prefix", "dst/", &dest].map(String::from);
    let reference_args = args(theirs.endpoint());
    let our_args = args(ours.endpoint());
    let reference = Running::start(etcdctl_bin, &ep, &reference_args.each_ref().map(String::as_str));
    let mirror = Running::start(&ferrocdctl_bin(), &ep, &our_args.each_ref().map(String::as_str));
    let base = vec![("dst/a".into(), "1".into()), ("dst/b".into(), "2".into()), ("dst/c/d".into(), "3".into())];
    eventually("etcdctl's base copy", || pairs(&theirs.endpoint(), "") == base);
    eventually("ferrocdctl's base copy", || pairs(&ours.endpoint(), "") == base);
    // Then the changes: puts, deletes, a txn of several at one revision.
    etcdctl_ok(&ep, &["put", "src/a", "10"]);
    etcdctl_ok(&ep, &["del", "src/b"]);
    etcdctl_ok(&ep, &["put", "other/y", "no"]);
    let out = etcdctl(&ep, &["txn"], Some("\nput src/e 5\ndel src/c/d\nput src/f 6\n\n\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    etcdctl_ok(&ep, &["put", "src/zz-end", "end"]);
    let followed = vec![
        ("dst/a".into(), "10".into()),
        ("dst/e".into(), "5".into()),
        ("dst/f".into(), "6".into()),
        ("dst/zz-end".into(), "end".into()),
    ];
    eventually("etcdctl's mirror following", || pairs(&theirs.endpoint(), "") == followed);
    eventually("ferrocdctl's mirror following", || pairs(&ours.endpoint(), "") == followed);
    // The txn arrived as one: the same number of destination revisions on both.
    let revision = |ep: &str| json(ep, &["endpoint", "status"])[0]["Status"]["header"]["revision"].as_i64();
    assert_eq!(revision(&ours.endpoint()), revision(&theirs.endpoint()));
    // Nothing printed before its first 30 s report.
    assert_eq!(mirror.output_when(|_| true), reference.output_when(|_| true));
}

#[test]
fn check_perf_runs_etcdctls_load_and_verdict() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    same(&ep, &["check", "perf", "--load", "huge"], None);
    etcdctl_ok(&ep, &["put", "/etcdctl-check-perf/x", "y"]);
    same(&ep, &["check", "perf"], None);
    etcdctl_ok(&ep, &["del", "/etcdctl-check-perf/x"]);
    // A minute of 150 puts a second (etcdctl's `s` load), then the verdict: throughput, slowest
    // request and spread against etcdctl's thresholds; the keys are gone afterwards.
    let out = ferrocdctl(&ep, &["check", "perf", "--auto-compact", "--auto-defrag"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 8, "{text}");
    assert!(
        lines[0].starts_with("Compacting with revision ") && lines[1].starts_with("Compacted with revision "),
        "{text}"
    );
    assert_eq!(lines[2], format!("Defragmenting \"{ep}\""));
    assert_eq!(lines[3], format!("Defragmented \"{ep}\""));
    let rate: i64 = lines[4]
        .strip_prefix("PASS: Throughput is ")
        .and_then(|l| l.strip_suffix(" writes/s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((136..=152).contains(&rate), "{text}");
    assert!(lines[5].contains("Slowest request took") && lines[6].contains("Stddev"), "{text}");
    let verdict = *lines.last().unwrap_or(&"");
    assert_eq!(verdict == "PASS", out.status.success(), "{text}");
    assert!(pairs(&ep, "/etcdctl-check-perf/").is_empty());
}

#[test]
fn lock_and_elect_print_what_etcdctl_prints() {
    let etcdctl_bin = std::path::Path::new("/usr/bin/etcdctl");
    // The lock's key (`name/<session lease>`); the leader's key and proclamation.
    for (args, lines) in [(["lock", "mylock", ""], 1), (["elect", "office", "alice"], 2)] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let mirror = Mirror::start();
        let done = move |o: &[u8]| o.iter().filter(|b| **b == b'\n').count() >= lines;
        let reference = Running::start(etcdctl_bin, &mirror.a.endpoint(), &args).output_when(done);
        let ours = Running::start(&ferrocdctl_bin(), &mirror.b.endpoint(), &args).output_when(done);
        // Killed, their sessions' leases live on until their TTL; the key names its lease
        // unpadded (`%x`), so the expected output is etcdctl's with the other lease in it.
        let lease = |ep: &str| json(ep, &["lease", "list"])["leases"][0]["id"].as_i64().expect("the session's lease");
        let (theirs, mine) = (lease(&mirror.a.endpoint()), lease(&mirror.b.endpoint()));
        let expected = String::from_utf8_lossy(&reference).replace(&format!("{theirs:x}"), &format!("{mine:x}"));
        assert_eq!(String::from_utf8_lossy(&ours), expected, "{args:?}");
    }
}
