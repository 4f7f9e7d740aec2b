//! The test harness shared by ferrocd's end-to-end tests.
//!
//! - [`Member`]: a `ferrocd` or `etcd` process on free loopback ports with a fresh data dir,
//!   started and waited for until it serves, stopped (gracefully, or by SIGKILL) by PID;
//! - [`etcdctl`]: runs the real etcdctl against an endpoint;
//! - [`wait_for`]: polls a condition with a deadline (tests never sleep a fixed time).
//!
//! Every process listens on 127.0.0.1 only (or on an address of a network namespace the
//! caller made, see [`Member::in_namespace`]) and is killed when its handle drops.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// Sends `sig` to `child` (a process this harness started, so never someone else's).
///
/// # Errors
/// When the process is gone.
pub fn signal(child: &Child, sig: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw);
    let pid = pid.ok_or_else(|| std::io::Error::other("no process ID"))?;
    rustix::process::kill_process(pid, sig).map_err(std::io::Error::from)
}

/// A port on 127.0.0.1 that was free a moment ago, chosen at random below the kernel's
/// ephemeral range: the process it is for binds it later, and a port from the ephemeral range
/// could be taken meanwhile by any outgoing connection (a test's client, a member dialing a
/// peer), which ports below the range never are.
pub fn free_port() -> u16 {
    let (low, _) = ephemeral_range();
    // Registered ports start at 1024; stay clear of the well-known service ports below 10000.
    let (from, to) = if low > 11_000 { (10_000u32, u32::from(low)) } else { (0, 0) };
    let mut seed = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        (std::process::id(), Instant::now()),
    );
    for _ in 0..64 {
        if to == 0 {
            break;
        }
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let port = u16::try_from(from + (seed >> 33) as u32 % (to - from)).expect("below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// The kernel's range of ephemeral ports (Linux's default when it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut parts = text.split_whitespace().filter_map(|p| p.parse().ok());
    match (parts.next(), parts.next()) {
        (Some(low), Some(high)) => (low, high),
        _ => (32_768, 60_999),
    }
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
///
/// # Panics
/// When the timeout passes first; the message names `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The `ferrocd` binary: `$FERROCD_BIN`, or the one cargo built beside the running test or tool.
///
/// # Panics
/// When it cannot be found.
pub fn ferrocd_bin() -> PathBuf {
    workspace_bin("ferrocd", "FERROCD_BIN", "ferrocd-server")
}

/// The `ferrocdctl` binary: `$FERROCDCTL_BIN`, or the one cargo built beside the running test.
///
/// # Panics
/// When it has not been built.
pub fn ferrocdctl_bin() -> PathBuf {
    workspace_bin("ferrocdctl", "FERROCDCTL_BIN", "ferrocdctl")
}

fn workspace_bin(name: &str, env: &str, package: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(env) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // A tool beside it (target/<profile>/<tool>), or a test (target/<profile>/deps/<test>).
    let dir = exe.parent().expect("a target directory");
    // Doctests run from a temporary directory: then the target directory cargo was given, or
    // the workspace's own.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin =
        [dir.to_path_buf(), dir.parent().unwrap_or(dir).to_path_buf(), target.join("debug"), target.join("release")]
            .iter()
            .map(|dir| dir.join(name))
            .find(|bin| bin.exists())
            .unwrap_or_else(|| dir.join(name));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p {package}` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// Which server a [`Member`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ferrocd,
    /// The reference: Debian's etcd.
    Etcd,
}

/// A server process on loopback with its own data dir.
#[derive(Debug)]
pub struct Member {
    kind: Kind,
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    /// The address it listens on.
    host: String,
    client_port: u16,
    peer_port: u16,
    /// A command the server is started under (e.g. `ip netns exec <ns>`).
    wrapper: Vec<String>,
    /// `--initial-cluster` (empty: this member alone).
    initial_cluster: String,
    /// `--initial-cluster-state`.
    state: &'static str,
    extra: Vec<String>,
    /// Environment variables the process gets beyond this one's.
    env: Vec<(String, String)>,
    /// Where it speaks TLS, and etcdctl's flags to reach it.
    https: Https,
}

/// Which of a member's URLs are `https`, and the flags etcdctl needs to reach its client URL
/// (`--cacert`, `--cert`, `--key`, `--insecure-skip-tls-verify`). The member's TLS flags go
/// with its other flags.
#[derive(Debug, Clone, Default)]
pub struct Https {
    pub client: bool,
    pub peer: bool,
    pub etcdctl: Vec<String>,
}

fn require(tool: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(tool);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask deps` (it installs Debian's etcd-client and etcd-server)",
        path.display()
    );
    path
}

impl Member {
    /// Starts a fresh single-member server of `kind` with `extra` flags and waits until it
    /// serves.
    pub fn start(kind: Kind, extra: &[&str]) -> Self {
        let mut member = Self::new(kind, "m1", extra);
        member.launch();
        member
    }

    /// A member not started yet, on free ports, named `name`.
    pub fn new(kind: Kind, name: &str, extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("ferrocd-test-").tempdir().expect("a temporary directory");
        Self {
            kind,
            child: None,
            dir,
            name: name.to_string(),
            host: "127.0.0.1".into(),
            client_port: free_port(),
            peer_port: free_port(),
            wrapper: Vec::new(),
            initial_cluster: String::new(),
            state: "new",
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            https: Https::default(),
        }
    }

    /// Serves `https` where `https` says (set before the cluster's spec is made).
    pub fn set_https(&mut self, https: &Https) {
        self.https = https.clone();
    }

    /// A member not started yet that runs in the network namespace `namespace` (which the
    /// caller made, and keeps) and listens on `host`, there alone, on etcd's ports.
    pub fn in_namespace(kind: Kind, name: &str, extra: &[&str], namespace: &str, host: &str) -> Self {
        let mut member = Self::new(kind, name, extra);
        member.host = host.to_string();
        member.client_port = 2379;
        member.peer_port = 2380;
        member.wrapper = ["ip", "netns", "exec", namespace].iter().map(|s| s.to_string()).collect();
        member
    }

    /// Gives the process (from its next start on) the environment variable `key`=`value`,
    /// e.g. `FAILPOINTS` for a test build of ferrocd.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Sets `--initial-cluster` and `--initial-cluster-state` (`new` or `existing`).
    pub fn in_cluster(&mut self, initial_cluster: &str, state: &'static str) {
        self.initial_cluster = initial_cluster.to_string();
        self.state = state;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http(s)://host:port` of the peer listener.
    pub fn peer_url(&self) -> String {
        let scheme = if self.https.peer { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.peer_port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `host:port` of the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    /// `http(s)://host:port` of the client endpoint.
    pub fn url(&self) -> String {
        let scheme = if self.https.client { "https" } else { "http" };
        format!("{scheme}://{}", self.endpoint())
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The process ID, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The flags a one-member etcd is started with; ferrocd takes the same.
    pub fn flags(&self) -> Vec<String> {
        let peer = self.peer_url();
        let cluster = if self.initial_cluster.is_empty() {
            format!("{}={peer}", self.name)
        } else {
            self.initial_cluster.clone()
        };
        let mut flags: Vec<String> = [
            "--name",
            &self.name,
            "--data-dir",
            &self.data_dir().to_string_lossy(),
            "--listen-client-urls",
            &self.url(),
            "--advertise-client-urls",
            &self.url(),
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &cluster,
            "--initial-cluster-state",
            self.state,
            "--initial-cluster-token",
            "test-token",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        flags.extend(self.extra.iter().cloned());
        flags
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_until_serving();
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(&mut self) {
        let bin = match self.kind {
            Kind::Ferrocd => ferrocd_bin(),
            Kind::Etcd => require("etcd"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("a log file");
        let mut command = match self.wrapper.split_first() {
            // `ip netns exec` execs the server: the child's PID is the server's.
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        let child = command
            .args(self.flags())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start the server");
        self.child = Some(child);
    }

    /// Waits until the member serves a linearizable read.
    pub fn wait_until_serving(&mut self) {
        self.wait_until_ready(&["get", "probe"]);
    }

    /// Waits until the member answers `probe` (etcdctl arguments) successfully.
    pub fn wait_until_ready(&mut self, probe: &[&str]) {
        let addr: SocketAddr = self.endpoint().parse().expect("an address");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{:?} exited with {status} before serving:\n{}", self.kind, self.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{:?} did not serve within 30 s:\n{}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // etcd accepts connections a moment before it serves; wait until a request succeeds.
        let mut args: Vec<&str> = self.https.etcdctl.iter().map(String::as_str).collect();
        args.extend_from_slice(probe);
        let endpoint = if self.https.client { self.url() } else { self.endpoint() };
        wait_for("the first request to succeed", Duration::from_secs(30), || {
            etcdctl(&endpoint, &args, None).status.success()
        });
    }

    /// Sends the running process `sig`.
    ///
    /// # Panics
    /// When the member is not running.
    pub fn signal(&self, sig: Signal) {
        let child = self.child.as_ref().expect("the member is running");
        signal(child, sig).expect("signal the member");
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, it answers nothing.
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused process dies of SIGKILL too; resumed first, it leaves no stopped zombie
            // behind in any state.
            let _ = signal(&child, Signal::CONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the member is running");
        let _ = signal(&child, Signal::TERM);
        child.wait().expect("wait for the server")
    }

    /// Starts the process again on the same ports and data dir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the member first");
        self.launch();
    }

    /// Starts the process again on the same ports and data dir without waiting for it to serve
    /// (for callers that time recovery themselves).
    pub fn respawn(&mut self) {
        assert!(self.child.is_none(), "stop or kill the member first");
        self.spawn();
    }

    /// Whether the process has exited (or was never restarted).
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// How the process ended, once it has (none while it runs or when it was not started).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

/// Several members started together as one cluster, with the command lines an etcd cluster is
/// started with.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `size` fresh members (`m1`, `m2`, ...) of `kind` with `extra` flags and waits until
    /// each serves linearizable reads.
    pub fn start(kind: Kind, size: usize, extra: &[&str]) -> Self {
        let mut cluster = Self::prepare(kind, size, extra);
        cluster.launch();
        cluster
    }

    /// As [`Self::start`], without starting anything yet: members can be set up one by one
    /// (an environment variable, a data dir on its own filesystem) before [`Self::launch`].
    pub fn prepare(kind: Kind, size: usize, extra: &[&str]) -> Self {
        Self::prepare_https(kind, size, extra, &Https::default())
    }

    /// As [`Self::prepare`], the members serving `https` where `https` says.
    pub fn prepare_https(kind: Kind, size: usize, extra: &[&str], https: &Https) -> Self {
        let mut members: Vec<Member> = (1..=size).map(|i| Member::new(kind, &format!("m{i}"), extra)).collect();
        for member in &mut members {
            member.set_https(https);
        }
        let spec = Self::spec(members.iter());
        for member in &mut members {
            member.in_cluster(&spec, "new");
        }
        Self { members }
    }

    /// Starts every member and waits until each serves linearizable reads.
    pub fn launch(&mut self) {
        for member in &mut self.members {
            member.spawn();
        }
        for member in &mut self.members {
            member.wait_until_serving();
        }
    }

    /// The `--initial-cluster` value naming `members`.
    pub fn spec<'a>(members: impl Iterator<Item = &'a Member>) -> String {
        members.map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",")
    }

    /// Every member's client endpoint, comma-separated (etcdctl's `--endpoints`).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(Member::endpoint).collect::<Vec<_>>().join(",")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: show what the server said, before its directory goes.
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let exited = self.exited();
            eprintln!(
                "--- {:?} member {} (exited: {exited}), last lines of its log:\n{}",
                self.kind,
                self.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        self.kill();
    }
}

/// Runs the real etcdctl (v3 API) against `endpoint` with `args`, feeding `stdin`.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    run_ctl(&require("etcdctl"), endpoint, args, stdin)
}

/// Runs the workspace's `ferrocdctl` as [`etcdctl`] runs etcdctl.
pub fn ferrocdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    run_ctl(&ferrocdctl_bin(), endpoint, args, stdin)
}

fn run_ctl(program: &Path, endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write the command's input");
    }
    child.wait_with_output().expect("the command's output")
}

/// A long-running etcdctl command (such as `watch`) whose output is read line by line.
#[derive(Debug)]
pub struct EtcdctlProcess {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl EtcdctlProcess {
    /// Starts etcdctl with `args` against `endpoint`; its standard output is read.
    pub fn spawn(endpoint: &str, args: &[&str]) -> Self {
        Self::start(endpoint, args, false)
    }

    /// As [`Self::spawn`], with etcdctl's own standard error lines too (prefixed `stderr: `;
    /// the client library's JSON log lines are left out).
    pub fn spawn_with_stderr(endpoint: &str, args: &[&str]) -> Self {
        Self::start(endpoint, args, true)
    }

    fn start(endpoint: &str, args: &[&str], stderr: bool) -> Self {
        let mut child = Command::new(require("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if stderr { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .expect("run etcdctl");
        let (tx, lines) = std::sync::mpsc::channel();
        fn forward(
            from: impl std::io::Read + Send + 'static,
            prefix: &'static str,
            tx: std::sync::mpsc::Sender<String>,
        ) {
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(from).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("{\"level\"") {
                        continue;
                    }
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            });
        }
        forward(child.stdout.take().expect("stdout"), "", tx.clone());
        if let Some(err) = child.stderr.take() {
            forward(err, "stderr: ", tx);
        }
        Self { child, lines }
    }

    /// What it printed so far and was not read yet, without waiting.
    pub fn printed(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.lines.try_recv().ok()).collect()
    }

    /// Sends it SIGINT (etcdctl's `lock` and `elect` then give up what they hold) and waits
    /// for it to exit.
    pub fn interrupt(&mut self) {
        signal(&self.child, Signal::INT).expect("send SIGINT to etcdctl");
        let _ = self.child.wait();
    }

    /// The next `n` lines it prints, waiting up to `timeout` in all.
    ///
    /// # Panics
    /// When fewer lines come in time (the ones that came are shown).
    pub fn lines(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => panic!("etcdctl printed {} of {n} lines in {timeout:?}: {out:?}", out.len()),
            }
        }
        out
    }
}

impl Drop for EtcdctlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcdctl's stderr without the client library's own JSON log lines (its retry warnings carry
/// timestamps and random client IDs), leaving what etcdctl itself printed.
pub fn etcdctl_stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// etcdctl's stdout, asserting success.
///
/// # Panics
/// When etcdctl fails.
pub fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoint, args, None);
    assert!(out.status.success(), "etcdctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A tmpfs of a fixed size mounted on a directory (a disk that can fill up), unmounted when
/// dropped. Mounting needs root, as the README's commands run.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `dir` (created if missing).
    ///
    /// # Panics
    /// When it cannot be mounted (not root, say).
    pub fn mount(dir: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "ferrocd-test"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the fault tests run as root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir: dir.to_path_buf() }
    }

    /// Fills the filesystem with a file until no byte fits; answers the bytes written.
    pub fn fill(&self) -> u64 {
        use std::io::Write as _;
        let mut file = std::fs::File::create(self.dir.join("filler")).expect("create the filler");
        let block = vec![0xa5u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let small = [0u8; 512];
        while let Ok(n) = file.write(&small) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        let _ = file.sync_all();
        written
    }

    /// Frees what [`Self::fill`] took.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A directory holding `ferrocd-auth`'s test JWT keys (`es256.key`, `es256.pub`, …), written
/// once per process from copies built into the binary: a binary built in one checkout and run
/// from another (a shared target directory) does not depend on where it was compiled.
pub fn jwt_keys() -> &'static Path {
    static KEYS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    const FILES: [(&str, &[u8]); 7] = [
        ("es256.key", include_bytes!("../../ferrocd-auth/testdata/es256.key")),
        ("es256.pub", include_bytes!("../../ferrocd-auth/testdata/es256.pub")),
        ("ed25519.key", include_bytes!("../../ferrocd-auth/testdata/ed25519.key")),
        ("ed25519.pub", include_bytes!("../../ferrocd-auth/testdata/ed25519.pub")),
        ("rsa.key", include_bytes!("../../ferrocd-auth/testdata/rsa.key")),
        ("rsa.pub", include_bytes!("../../ferrocd-auth/testdata/rsa.pub")),
        ("hmac.key", include_bytes!("../../ferrocd-auth/testdata/hmac.key")),
    ];
    KEYS.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("ferrocd-jwt-keys-").tempdir().expect("a temporary directory");
        for (name, bytes) in FILES {
            std::fs::write(dir.path().join(name), bytes).expect("write a test key");
        }
        dir
    })
    .path()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable_and_below_the_ephemeral_range() {
        let (low, _) = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        for port in &ports {
            TcpListener::bind(("127.0.0.1", *port)).expect("a free port binds");
            if low > 11_000 {
                assert!((10_000..low).contains(port), "{port} is in the ephemeral range from {low}");
            }
        }
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert!(distinct.len() > 40, "random ports repeat too often: {ports:?}");
    }
}
