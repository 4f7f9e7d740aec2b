//! One run: a fresh cluster (its size, timings and small-disk member drawn from the run's
//! seed), then histories one after another, each with its own keys, traffic and one fault, each
//! checked as soon as it ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::auth::{self, Guard, Session, Tokens};
use crate::check::{self, Findings};
use crate::cluster::ChaosCluster;
use crate::faults::{self, Fault};
use crate::net::Net;
use crate::snapshot;
use crate::tls::ChaosTls;
use crate::workload::{self, Traffic};

/// How long after the heal a write must succeed: clients first wait out the requests they
/// sent during the fault (their deadline is 3 s; a member answers within its request timeout,
/// 7 s here).
const SERVE_AFTER_HEAL: Duration = Duration::from_secs(15);

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub histories: u64,
    pub sizes: Vec<usize>,
    pub faults: Vec<Fault>,
    pub clients: u64,
    pub watchers: u64,
    pub lockers: u64,
    /// Whether the run turns auth on.
    pub auth: Choice,
    /// Whether the cluster speaks TLS (clients and peers; certificates rotated each history).
    pub tls: Choice,
}

/// Whether a run turns a feature (auth, TLS) on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Off,
    On,
    /// Half the runs, by the seed.
    Random,
}

impl Choice {
    /// `on`, `off` or `random`.
    ///
    /// # Errors
    /// Any other word.
    pub fn parse(flag: &str, word: &str) -> anyhow::Result<Self> {
        match word {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "random" => Ok(Self::Random),
            other => anyhow::bail!("--{flag} {other}: on, off or random"),
        }
    }

    fn draw(self, rng: &mut fastrand::Rng) -> bool {
        match self {
            Self::Off => false,
            Self::On => true,
            Self::Random => rng.bool(),
        }
    }
}

/// One checked history.
#[derive(Debug)]
pub struct HistoryReport {
    pub run_seed: u64,
    pub index: u64,
    pub fault: Fault,
    pub size: usize,
    pub injected: String,
    pub ops: usize,
    pub unknown: usize,
    pub watch_events: usize,
    pub holds: usize,
    pub findings: Findings,
    pub took: Duration,
}

impl HistoryReport {
    pub fn ok(&self) -> bool {
        self.findings.violations.is_empty()
    }
}

/// Runs `plan` on a fresh cluster in `net`; `report` gets each history as it is checked.
///
/// # Errors
/// A cluster that cannot be started.
pub async fn run(
    net: Arc<Net>,
    plan: &Plan,
    report: &mut impl FnMut(&HistoryReport),
) -> anyhow::Result<Vec<HistoryReport>> {
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let size = plan.sizes[rng.usize(..plan.sizes.len())];
    let snapshot_count = if rng.bool() { 10_000 } else { 300 };
    let small_disk = rng.usize(1..=size);
    let tokens = match plan.auth {
        Choice::Off => None,
        Choice::On => Some(if rng.bool() { Tokens::Simple } else { Tokens::Jwt }),
        Choice::Random => rng.bool().then(|| if rng.bool() { Tokens::Simple } else { Tokens::Jwt }),
    };
    let mut flags: Vec<String> =
        ["--heartbeat-interval", "100", "--election-timeout", "1000", "--snapshot-count", &snapshot_count.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    flags.extend(tokens.map(Tokens::flags).unwrap_or_default());
    let tls = if plan.tls.draw(&mut rng) {
        Some(ChaosTls::new((1..=net.slots()).map(|slot| net.ip(slot)).collect()).context("make certificates")?)
    } else {
        None
    };
    eprintln!(
        "run seed {:#x}: {size} members, snapshot-count {snapshot_count}, small disk on host {}, auth {}, TLS {}",
        plan.seed,
        small_disk,
        tokens.map_or("off".to_string(), |t| format!("on ({t:?} tokens)")),
        if tls.is_some() { "on" } else { "off" },
    );
    let mut cluster =
        ChaosCluster::start(net, size, &flags, Some(small_disk), tls).await.context("start the cluster")?;
    if tokens.is_some() {
        cluster.enable_auth().await?;
    }
    let mut reports = Vec::new();
    for index in 0..plan.histories {
        let fault = plan.faults[rng.usize(..plan.faults.len())];
        let history_seed = rng.u64(..);
        let history = history(&mut cluster, plan, index, fault, history_seed).await;
        let r = match history {
            Ok(r) => r,
            Err(e) => {
                let mut findings = Findings::default();
                findings.violations.push(format!("the history could not complete: {e:#}"));
                HistoryReport {
                    run_seed: plan.seed,
                    index,
                    fault,
                    size,
                    injected: String::new(),
                    ops: 0,
                    unknown: 0,
                    watch_events: 0,
                    holds: 0,
                    findings,
                    took: Duration::ZERO,
                }
            }
        };
        report(&r);
        let failed = !r.ok();
        reports.push(r);
        if failed {
            dump_logs(&mut cluster, plan.seed);
            break;
        }
    }
    Ok(reports)
}

/// What the operations sent after the heal got, for a liveness failure's report.
fn after_heal(ops: &[workload::KvOp], healed_at: u64) -> String {
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.call >= healed_at) {
        let outcome = match &op.done {
            workload::Done::Unknown(error) => error.clone(),
            done => format!("{done:?}").split([' ', '{']).next().unwrap_or_default().to_string(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let sent: usize = outcomes.values().sum();
    let outcomes: Vec<String> = outcomes.into_iter().map(|(o, n)| format!("{n} x {o}")).collect();
    let last = ops.iter().map(|op| op.call).max().unwrap_or(0);
    let before = Duration::from_nanos(healed_at.saturating_sub(last));
    format!("{sent} operations sent after it: {}; the last one sent {before:?} before it", outcomes.join(", "))
}

/// Keeps the members' logs of a failing run.
fn dump_logs(cluster: &mut ChaosCluster, seed: u64) {
    let dir = std::env::temp_dir().join(format!("ferrocd-chaos-{seed:x}"));
    let _ = std::fs::create_dir_all(&dir);
    for slot in cluster.members() {
        let _ = std::fs::write(dir.join(format!("host{slot}.log")), cluster.host(slot).member.log());
    }
    eprintln!("members' logs kept in {}", dir.display());
}

async fn history(
    cluster: &mut ChaosCluster,
    plan: &Plan,
    index: u64,
    fault: Fault,
    seed: u64,
) -> anyhow::Result<HistoryReport> {
    let began = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    if let Some(tls) = &mut cluster.tls {
        tls.rotate().context("rotate the certificates")?;
    }
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let start = cluster.status(leader, Duration::from_secs(5)).await.context("the leader's status")?;
    let start_revision = start.header.map_or(0, |h| h.revision) + 1;
    let endpoints: Vec<_> = cluster.members().into_iter().map(|s| (s, cluster.host(s).raw.clone())).collect();
    let history_id = plan.seed.wrapping_mul(1000).wrapping_add(index) % 100_000;
    let auth_on = !cluster.root.is_anonymous();
    let session = if auth_on { Session::user(auth::APP) } else { Session::anonymous() };
    if let Some((_, raw)) = endpoints.first() {
        session.login(raw.clone()).await.context("log in as the traffic's user")?;
    }
    let traffic = Arc::new(Traffic::new(endpoints, history_id, 3, start_revision, session.clone()));
    let guard = auth_on.then(|| Arc::new(Guard::new(history_id)));
    let mut tasks = Vec::new();
    if let Some(guard) = &guard {
        let root = cluster.root.clone();
        tasks.push(tokio::spawn(auth::flipper(Arc::clone(&traffic), Arc::clone(guard), root, rng.u64(..))));
        for g in 0..2 {
            let (traffic, guard) = (Arc::clone(&traffic), Arc::clone(guard));
            tasks.push(tokio::spawn(auth::guarded(traffic, guard, session.clone(), 300 + g, rng.u64(..))));
        }
    }
    for c in 0..plan.clients {
        tasks.push(tokio::spawn(workload::kv_client(Arc::clone(&traffic), c, rng.u64(..))));
    }
    for l in 0..plan.lockers {
        tasks.push(tokio::spawn(workload::locker(Arc::clone(&traffic), 100 + l, rng.u64(..))));
    }
    let watchers: Vec<_> =
        (0..plan.watchers).map(|w| tokio::spawn(workload::watcher(Arc::clone(&traffic), 200 + w))).collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // A backup taken while the fault is on.
    let snapshot_dir = tempfile::tempdir().context("a directory for the snapshot")?;
    let snapshot = {
        let members = cluster.members();
        let slot = members[rng.usize(..members.len())];
        let (channel, dir, delay) =
            (cluster.host(slot).channel.clone(), snapshot_dir.path().to_path_buf(), rng.u64(200..2000));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            snapshot::take(slot, channel, &dir).await
        })
    };
    let injected = faults::inject(fault, cluster, &traffic, &mut rng).await;
    // Recovery: a leader, then traffic on the healed cluster until a write sent after the heal
    // succeeds (clients may first wait out requests sent during the fault), then a while more.
    let recovered = cluster.wait_leader(Duration::from_secs(30)).await;
    let healed_at = traffic.recording.lin.now();
    let served = |traffic: &Traffic| {
        traffic.recording.lin.records().iter().any(|r| {
            r.call >= healed_at && matches!(r.outcome, ferrocd_lincheck::Outcome::Ok(ferrocd_lincheck::Output::Ack))
        })
    };
    let give_up = Instant::now() + SERVE_AFTER_HEAL;
    while !served(&traffic) && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    traffic.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let injected = injected?;
    recovered?;
    let converged = cluster.converged(Duration::from_secs(30)).await?;
    let mut per_member = Vec::new();
    for slot in cluster.members() {
        let events = events_upto(cluster, slot, &traffic.prefix, start_revision, converged)
            .await
            .with_context(|| format!("the history on host {slot}"))?;
        per_member.push((slot, events));
    }
    let mut findings = Findings::default();
    let truth = check::agreed(&per_member, &mut findings);
    let mut guarded = String::new();
    if let Ok(Some(taken)) = snapshot.await {
        guarded = snapshot::check(&taken, &traffic.prefix, start_revision, &truth, &mut findings);
    }
    if let Some(guard) = &guard {
        let slot = cluster.members()[0];
        let events = events_upto(cluster, slot, &guard.prefix, start_revision, converged)
            .await
            .context("the guarded key's history")?;
        auth::check(guard, &events, &mut findings);
        guarded += &format!(", {}", auth::summary(guard));
    }
    // Watchers finish once they have everything (or give up after a while).
    let last = truth.last().and_then(|e| e.kv.as_ref()).map_or(start_revision - 1, |kv| kv.mod_revision);
    traffic.watch_until.store(last, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for watcher in watchers {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left, watcher).await.is_err() {
            traffic.watch_until.store(i64::MIN, Ordering::Relaxed);
        }
    }
    let ops = traffic.recording.ops.lock().clone();
    let watches = traffic.recording.watches.lock().clone();
    let holds = traffic.recording.holds.lock().clone();
    check::kv_ops(&truth, &ops, &mut findings);
    check::linearizable(&traffic.recording.lin, &mut findings);
    check::watches(&truth, &watches, &mut findings);
    check::locks(&holds, &mut findings);
    // Liveness: the healed cluster served writes again.
    if !served(&traffic) {
        findings.violations.push(format!(
            "no write sent after the heal succeeded within {SERVE_AFTER_HEAL:?} ({})",
            after_heal(&ops, healed_at)
        ));
    }
    Ok(HistoryReport {
        run_seed: plan.seed,
        index,
        fault,
        size: cluster.members().len(),
        injected: injected + &guarded,
        ops: ops.len(),
        unknown: ops.iter().filter(|o| matches!(o.done, workload::Done::Unknown(_))).count(),
        watch_events: watches.iter().map(|w| w.events.len()).sum(),
        holds: holds.len(),
        findings,
        took: began.elapsed(),
    })
}

/// The events of `prefix` from `from` through `upto` on host `slot` (see
/// [`check::events_upto`]), as root, logging in anew once if the token went stale.
async fn events_upto(
    cluster: &ChaosCluster,
    slot: usize,
    prefix: &[u8],
    from: i64,
    upto: i64,
) -> anyhow::Result<Vec<ferrocd_proto::mvccpb::Event>> {
    let host = cluster.host(slot);
    match check::events_upto(host.channel.clone(), prefix, from, upto).await {
        Ok(events) => Ok(events),
        Err(first) if !cluster.root.is_anonymous() => {
            cluster.root.login(host.raw.clone()).await.with_context(|| format!("{first:#}; then log in as root"))?;
            check::events_upto(host.channel.clone(), prefix, from, upto).await
        }
        Err(e) => Err(e),
    }
}
