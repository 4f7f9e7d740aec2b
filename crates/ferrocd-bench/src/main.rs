//! `ferrocd-bench`: measures ferrocd and a real etcd side by side on this machine.
//!
//! Every repetition starts each server fresh (own loopback ports, own data dir, both fsyncing
//! every commit), preloads it, runs the chosen workloads in a fixed order with one load
//! generator, reads the server's CPU time and memory from `/proc`, times a restart, and stops it
//! by PID. Repetitions alternate etcd and ferrocd; the report gives medians, min–max and the ratio
//! ferrocd/etcd of every figure, as Markdown and JSON. `cargo xtask bench` builds and runs it.

mod lease;
mod load;
mod procfs;
mod profile;
mod report;
mod snapshot;
mod watch;
mod workloads;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use ferrocd_test_utils::{Cluster, Kind, Member};
use serde_json::json;

use crate::report::{Metric, Results, Server};
use crate::workloads::{Phase, Workload};

#[derive(Debug, Parser)]
#[command(about = "Benchmark ferrocd against etcd, interleaved, as ratios")]
struct Args {
    /// Repetitions per server (each on fresh servers).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Workloads: names, or the groups all, reads, writes, after, cluster, watch, lease, restart;
    /// and `snapshot` (not in `all`): a `Maintenance.Snapshot` of a store of `--snapshot-mib`.
    #[arg(long, default_value = "all")]
    workloads: String,
    /// MiB of values in the store the `snapshot` workload saves.
    #[arg(long, default_value_t = 1024)]
    snapshot_mib: u64,
    /// Multiplies every workload's operation count.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Keys of the put key space written before the workloads.
    #[arg(long, default_value_t = workloads::PUT_KEY_SPACE)]
    preload: u64,
    /// Upper bound on one workload's run, in seconds.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// A run of a few minutes: 3 repetitions at a tenth of the operations.
    #[arg(long)]
    quick: bool,
    /// Records where ferrocd's CPU goes during this workload (first repetition), with `perf`.
    #[arg(long)]
    profile: Option<String>,
    /// Auth on the single-member workloads (reads and writes): `none`, `simple` or `jwt`
    /// (ES256). Requests then carry the token of a user with READWRITE on every key (not
    /// root, so every request passes the permission check).
    #[arg(long, default_value = "none", value_parser = ["none", "simple", "jwt"])]
    auth: String,
    /// Where report.md, report.json and profiles are written.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.reps = 3;
        args.scale = 0.1;
    }
    let snapshot = args.workloads.split(',').any(|p| p.trim() == "snapshot");
    let spec: Vec<&str> = args.workloads.split(',').filter(|p| p.trim() != "snapshot").collect();
    let (chosen, restart) = workloads::select(&spec.join(",")).map_err(anyhow::Error::msg)?;
    if let Some(p) = &args.profile
        && !chosen.iter().any(|w| w.name == p)
    {
        bail!("--profile {p}: that workload is not among --workloads");
    }
    std::fs::create_dir_all(&args.out)?;
    let rt = tokio::runtime::Runtime::new()?;
    let ticks = procfs::clock_ticks() as f64;
    let mut results = Results::default();
    let mut profile_report = None;
    let started = Instant::now();
    for rep in 0..args.reps {
        for server in [Server::Etcd, Server::Ferrocd] {
            let profile = args.profile.as_deref().filter(|_| rep == 0 && server == Server::Ferrocd);
            let report = repetition(&rt, &args, &chosen, restart, server, ticks, profile, &mut results)
                .with_context(|| format!("repetition {} on {}", rep + 1, server.name()))?;
            if snapshot {
                snapshot_repetition(&rt, &args, server, &mut results)
                    .with_context(|| format!("snapshot, repetition {} on {}", rep + 1, server.name()))?;
            }
            profile_report = profile_report.or(report);
            eprintln!(
                "[{:>4.0} s] repetition {}/{} on {} done",
                started.elapsed().as_secs_f64(),
                rep + 1,
                args.reps,
                server.name()
            );
        }
    }
    let header = header(&args);
    let md = results.markdown(&header);
    std::fs::write(args.out.join("report.md"), &md)?;
    let meta = json!({
        "command": command_line(),
        "reps": args.reps,
        "scale": args.scale,
        "preload": args.preload,
        "machine": machine(),
        "etcd": version("/usr/bin/etcd"),
        "ferrocd": version(&ferrocd_test_utils::ferrocd_bin().to_string_lossy()),
    });
    std::fs::write(args.out.join("report.json"), serde_json::to_string_pretty(&results.json(meta))?)?;
    println!("{md}");
    if let Some(path) = profile_report {
        println!("Profile of ferrocd ({}):", path.display());
        for line in profile::top(&path, 15) {
            println!("  {line}");
        }
    }
    eprintln!("wrote {}/report.md and report.json", args.out.display());
    Ok(())
}

/// One repetition on one fresh server; answers the profile written, if one was asked for.
#[allow(clippy::too_many_arguments)]
fn repetition(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    chosen: &[Workload],
    restart: bool,
    server: Server,
    ticks: f64,
    profile: Option<&str>,
    results: &mut Results,
) -> anyhow::Result<Option<PathBuf>> {
    let kind = kind_of(server);
    let (clustered, rest): (Vec<Workload>, Vec<Workload>) = chosen.iter().partition(|w| w.phase == Phase::Cluster);
    let (watched, single): (Vec<Workload>, Vec<Workload>) =
        rest.iter().partition(|w| matches!(w.phase, Phase::Watch | Phase::Lease));
    let mut written = None;
    if !clustered.is_empty() {
        written = cluster_repetition(rt, args, &clustered, server, ticks, profile, results)?;
    }
    if !watched.is_empty() {
        written = written.or(watch_repetition(rt, args, &watched, server, ticks, profile, results)?);
    }
    if single.is_empty() && !restart {
        return Ok(written);
    }
    let flags = auth_flags(&args.auth);
    let mut member = Member::start(kind, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let url = member.url();
    let pid = member.pid().context("server pid")?;
    if args.auth != "none" {
        let token = rt.block_on(enable_auth(&member))?;
        load::set_token(Some(&token))?;
    }
    rt.block_on(load::preload(&url, workloads::read_keys()))?;
    let mut loaded = false;
    for w in &single {
        if w.phase != Phase::Fresh && !loaded {
            load_put_keys(rt, args, &url, pid, server, results)?;
            loaded = true;
        }
        let total = ((w.total as f64 * args.scale).round() as u64).max(w.clients as u64);
        let recording = match profile {
            Some(name) if name == w.name => Some(profile::start(pid, &args.out, name)?),
            _ => None,
        };
        let cpu0 = procfs::cpu_ticks(pid).context("server CPU time")?;
        let outcome = rt.block_on(load::run(&url, w, total, Duration::from_secs(args.time_limit)))?;
        let cpu = (procfs::cpu_ticks(pid).context("server CPU time")? - cpu0) as f64 / ticks;
        if let Some(recording) = recording {
            written = Some(recording.finish()?);
        }
        record(results, server, w, &outcome, cpu);
    }
    if !loaded {
        load_put_keys(rt, args, &url, pid, server, results)?;
    }
    if restart {
        results.record("memory after the run", Metric::RssMib, server, procfs::rss_mib(pid).unwrap_or(f64::NAN));
        member.kill();
        let began = Instant::now();
        member.respawn();
        rt.block_on(first_served(&url, &mut member))?;
        let took = began.elapsed().as_secs_f64();
        let name = format!("restart after kill -9 with {} keys", args.preload);
        results.record(&name, Metric::Seconds, server, took);
        let pid = member.pid().context("server pid")?;
        results.record("memory after restart", Metric::RssMib, server, procfs::rss_mib(pid).unwrap_or(f64::NAN));
        eprintln!("  {:<8} restart             {took:>9.3} s", server.name());
    }
    member.kill();
    Ok(written)
}

/// The `snapshot` workload on one fresh server: fill it, then save a snapshot to a file.
fn snapshot_repetition(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    server: Server,
    results: &mut Results,
) -> anyhow::Result<()> {
    // Room for the data and its history on both (etcd warns above 8 GiB).
    let mut member = Member::start(kind_of(server), &["--quota-backend-bytes=8589934592"]);
    let (url, pid) = (member.url(), member.pid().context("server pid")?);
    let began = Instant::now();
    rt.block_on(snapshot::fill(&url, args.snapshot_mib))?;
    eprintln!("  {:<8} filled {} MiB in {:.1} s", server.name(), args.snapshot_mib, began.elapsed().as_secs_f64());
    let before = procfs::rss_mib(pid).unwrap_or(f64::NAN);
    let dir = tempfile_dir(&args.out)?;
    let saved = rt.block_on(snapshot::save(&url, pid, &dir.join("snapshot.db")))?;
    std::fs::remove_dir_all(&dir)?;
    let name = format!("snapshot of {} MiB", args.snapshot_mib);
    results.record(&format!("{name}: save"), Metric::Seconds, server, saved.seconds);
    results.record(&format!("{name}: RSS before"), Metric::RssMib, server, before);
    results.record(&format!("{name}: RSS peak while saving"), Metric::RssMib, server, saved.peak_rss_mib);
    eprintln!(
        "  {:<8} snapshot {:.0} MiB in {:.2} s, RSS {before:.0} → peak {:.0} MiB",
        server.name(),
        saved.bytes as f64 / (1 << 20) as f64,
        saved.seconds,
        saved.peak_rss_mib
    );
    member.kill();
    Ok(())
}

/// A fresh directory under `out` for one snapshot file.
fn tempfile_dir(out: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = out.join(format!("snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Records one workload's figures (`cpu`: server CPU seconds it took) and prints them.
fn record(results: &mut Results, server: Server, w: &Workload, outcome: &load::Outcome, cpu: f64) {
    if outcome.errors > 0 {
        eprintln!(
            "  {} {}: {} of {} operations failed, first: {}",
            server.name(),
            w.name,
            outcome.errors,
            outcome.ops + outcome.errors,
            outcome.first_error.as_deref().unwrap_or("?")
        );
    }
    if outcome.conflicts > 0 {
        eprintln!("  {} {}: {} txn compares failed", server.name(), w.name, outcome.conflicts);
    }
    let per_op_us = cpu * 1e6 / outcome.ops.max(1) as f64;
    results.record(w.name, Metric::Throughput, server, outcome.throughput());
    results.record(w.name, Metric::P50, server, outcome.latency_ms(0.50));
    results.record(w.name, Metric::P99, server, outcome.latency_ms(0.99));
    results.record(w.name, Metric::P999, server, outcome.latency_ms(0.999));
    results.record(w.name, Metric::CpuPerOp, server, per_op_us);
    eprintln!(
        "  {:<8} {:<22} {:>9.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms  {:>6.0} CPU µs/op",
        server.name(),
        w.name,
        outcome.throughput(),
        outcome.latency_ms(0.5),
        outcome.latency_ms(0.99),
        per_op_us
    );
}

/// The cluster workloads on a fresh 3-member cluster of `server`, sent to its leader; the
/// CPU figure is the sum over the three members. A profile covers the leader (answered) and a
/// follower (written beside it, `-follower`).
fn cluster_repetition(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    chosen: &[Workload],
    server: Server,
    ticks: f64,
    profile: Option<&str>,
    results: &mut Results,
) -> anyhow::Result<Option<PathBuf>> {
    let kind = kind_of(server);
    let cluster = Cluster::start(kind, 3, &[]);
    let pids: Vec<u32> = cluster.members.iter().filter_map(Member::pid).collect();
    let cpu_ticks =
        || -> anyhow::Result<u64> { pids.iter().map(|&p| procfs::cpu_ticks(p).context("server CPU time")).sum() };
    let urls: Vec<String> = cluster.members.iter().map(Member::url).collect();
    let leader = rt.block_on(load::leader(&urls))?;
    rt.block_on(load::preload(&leader, workloads::read_keys()))?;
    let leader_at = urls.iter().position(|u| *u == leader).context("the leader is a member")?;
    let mut written = None;
    for w in chosen {
        let total = ((w.total as f64 * args.scale).round() as u64).max(w.clients as u64);
        let recordings = match profile {
            Some(name) if name == w.name => Some((
                profile::start(pids[leader_at], &args.out, name)?,
                profile::start(pids[(leader_at + 1) % pids.len()], &args.out, &format!("{name}-follower"))?,
            )),
            _ => None,
        };
        let cpu0 = cpu_ticks()?;
        let outcome = rt.block_on(load::run(&leader, w, total, Duration::from_secs(args.time_limit)))?;
        let cpu = (cpu_ticks()? - cpu0) as f64 / ticks;
        if let Some((at_leader, at_follower)) = recordings {
            written = Some(at_leader.finish()?);
            let follower = at_follower.finish()?;
            eprintln!("profile of a follower: {}", follower.display());
        }
        record(results, server, w, &outcome, cpu);
    }
    Ok(written)
}

/// The watch and lease workloads on a fresh member of `server` (so their watchers, leases and
/// memory figures neither disturb nor are disturbed by the other workloads); answers the profile
/// written, if one was asked for (it covers the whole workload, its setup included).
fn watch_repetition(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    chosen: &[Workload],
    server: Server,
    ticks: f64,
    profile: Option<&str>,
    results: &mut Results,
) -> anyhow::Result<Option<PathBuf>> {
    let kind = kind_of(server);
    let mut member = Member::start(kind, &[]);
    let url = member.url();
    let pid = member.pid().context("server pid")?;
    let mut written = None;
    for w in chosen {
        let total = ((w.total as f64 * args.scale).round() as u64).max(1);
        let recording = match profile {
            Some(name) if name == w.name => Some(profile::start(pid, &args.out, name)?),
            _ => None,
        };
        let limit = Duration::from_secs(args.time_limit);
        let out = if w.phase == Phase::Lease {
            rt.block_on(lease::run(&url, pid, w, total, limit))
        } else {
            rt.block_on(watch::run(&url, pid, w, total, limit))
        }
        .with_context(|| w.name)?;
        if let Some(recording) = recording {
            written = Some(recording.finish()?);
        }
        if let Some(baseline) = &out.baseline {
            let plain = Workload { name: workloads::STALLED_BASELINE, ..*w };
            record(results, server, &plain, &baseline.outcome, baseline.cpu_ticks as f64 / ticks);
        }
        record(results, server, w, &out.puts.outcome, out.puts.cpu_ticks as f64 / ticks);
        if let Some(rate) = out.events_per_sec {
            results.record(&format!("{} delivered", w.name), Metric::EventsPerSec, server, rate);
            eprintln!("  {:<8} {:<22} {rate:>9.0} events/s delivered", server.name(), w.name);
        }
        for (when, mib) in &out.rss_mib {
            results.record(&format!("{} {when}", w.name), Metric::RssMib, server, *mib);
            eprintln!("  {:<8} {:<22} {mib:>9.1} MiB RSS {when}", server.name(), w.name);
        }
        for (what, secs) in &out.seconds {
            results.record(&format!("{} {what}", w.name), Metric::Seconds, server, *secs);
            eprintln!("  {:<8} {:<22} {secs:>9.3} s {what}", server.name(), w.name);
        }
    }
    member.kill();
    Ok(written)
}

/// Preloads the put key space and records the memory it takes.
fn load_put_keys(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    url: &str,
    pid: u32,
    server: Server,
    results: &mut Results,
) -> anyhow::Result<()> {
    rt.block_on(load::preload(url, workloads::put_keys(args.preload)))?;
    let name = format!("memory with {} keys", args.preload);
    results.record(&name, Metric::RssMib, server, procfs::rss_mib(pid).unwrap_or(f64::NAN));
    Ok(())
}

/// The server flags of `--auth`.
fn auth_flags(auth: &str) -> Vec<String> {
    if auth != "jwt" {
        return Vec::new();
    }
    let keys = ferrocd_test_utils::jwt_keys();
    let option = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=1h",
        keys.join("es256.pub").display(),
        keys.join("es256.key").display()
    );
    vec!["--auth-token".into(), option]
}

/// Turns auth on with root and user `bench` (READWRITE on every key); `bench`'s token.
async fn enable_auth(member: &Member) -> anyhow::Result<String> {
    use ferrocd_proto::etcdserverpb::AuthenticateRequest;
    use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
    let ep = member.endpoint();
    for args in [
        &["user", "add", "root", "--new-user-password=root"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "bench"],
        &["role", "grant-permission", "bench", "readwrite", "", "--prefix"],
        &["user", "add", "bench", "--new-user-password=bench"],
        &["user", "grant-role", "bench", "bench"],
        &["auth", "enable"],
    ] {
        ferrocd_test_utils::etcdctl_ok(&ep, args);
    }
    let channel = tonic::transport::Endpoint::from_shared(member.url())?.connect().await?;
    let req = AuthenticateRequest { name: "bench".into(), password: "bench".into() };
    Ok(AuthClient::new(channel).authenticate(req).await?.into_inner().token)
}

/// Waits until a restarted server answers a Range (bounded: 60 s).
async fn first_served(url: &str, member: &mut Member) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if member.exited() {
            bail!("the server exited during restart:\n{}", member.log());
        }
        if let Ok(mut conns) = load::connect(url, 1).await {
            let req =
                ferrocd_proto::etcdserverpb::RangeRequest { key: workloads::READ_KEY.to_vec(), ..Default::default() };
            if conns[0].range(req).await.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the server did not serve within 60 s of its restart");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The command that reproduces this run (without `--out`, which the xtask supplies).
fn command_line() -> String {
    let mut shown = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--out" {
            args.next();
        } else if !arg.starts_with("--out=") {
            shown.push(arg);
        }
    }
    format!("cargo xtask bench {}", shown.join(" ")).trim_end().to_string()
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    format!(
        "{}, {} cores, {} GiB RAM, Linux {}",
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'"),
        sh("nproc"),
        sh("awk '/MemTotal/ {printf \"%.0f\", $2/1048576}' /proc/meminfo"),
        sh("uname -r"),
    )
}

/// `etcd 3.4.23` / `ferrocd 0.1.0`, from the binary's `--version` lines.
fn version(bin: &str) -> String {
    let out = Command::new(bin).arg("--version").output().map(|o| o.stdout).unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    let line = |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    match (line("ferrocd Version:"), line("etcd Version:")) {
        (Some(v), _) => format!("ferrocd {v}"),
        (None, Some(v)) => format!("etcd {v}"),
        _ => format!("{bin} (version unknown)"),
    }
}

fn header(args: &Args) -> String {
    format!(
        "## ferrocd vs etcd, {}\n\n\
         `{}` — {} repetition(s) per server, interleaved (etcd, ferrocd, etcd, …), each on a fresh single-member \
         server on loopback with a fresh data dir on the same filesystem, both fsyncing every commit; operation \
         counts × {}; 8-byte keys, 256-byte values; {} keys preloaded after the fresh reads. Machine: {}. \
         Servers: {}; {}.",
        sh("date -u +%Y-%m-%d"),
        command_line(),
        args.reps,
        args.scale,
        args.preload,
        machine(),
        version("/usr/bin/etcd"),
        version(&ferrocd_test_utils::ferrocd_bin().to_string_lossy()),
    )
}

/// The process kind of `server`.
fn kind_of(server: Server) -> Kind {
    match server {
        Server::Etcd => Kind::Etcd,
        Server::Ferrocd => Kind::Ferrocd,
    }
}
