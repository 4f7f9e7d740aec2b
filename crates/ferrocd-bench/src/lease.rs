//! The lease workloads, each on a fresh member:
//!
//! - lease-keepalive: a hundred clients, each with its own keep-alive stream and lease, renew
//!   as fast as answers come; each renewal's latency runs from sending it until its answer;
//! - lease-grant-attach: a hundred clients each grant a lease and put a key attached to it; one
//!   operation is the pair;
//! - lease-mass-expiry: leases, each with a key, granted with TTLs chosen so that all fall due
//!   within the same second; from then on one client puts sequentially while the leases are
//!   revoked. Reported: the put loop's latency during the expiry and the seconds until no lease
//!   is left (etcd revokes at most 1000 leases a second).
//!
//! Every loop is bounded by its count and `--time-limit`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, PutRequest};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::load::{self, Outcome};
use crate::procfs;
use crate::watch::{Measured, WatchOutcome};
use crate::workloads::{self, LeaseLoad, Op, Workload};

/// The TTL of the leases of lease-keepalive and lease-grant-attach: none expires meanwhile.
const LONG_TTL: i64 = 600;

/// Runs lease workload `w` with `total` operations against the server at `url` (process `pid`).
pub async fn run(url: &str, pid: u32, w: &Workload, total: u64, time_limit: Duration) -> anyhow::Result<WatchOutcome> {
    let Op::Lease(load) = w.op else { bail!("{} is not a lease workload", w.name) };
    let cpu0 = procfs::cpu_ticks(pid).context("server CPU time")?;
    let conns = crate::watch::channels(url, w.conns, None).await?;
    let mut seconds = Vec::new();
    let outcome = match load {
        LeaseLoad::KeepAlive => keep_alive(&conns, w.clients, total, time_limit).await?,
        LeaseLoad::GrantAttach => grant_attach(&conns, w.clients, total, time_limit).await?,
        LeaseLoad::MassExpiry => {
            let (outcome, drained) = mass_expiry(&conns, w.clients, total, time_limit).await?;
            seconds.push(("to revoke all", drained));
            outcome
        }
    };
    let cpu_ticks = procfs::cpu_ticks(pid).context("server CPU time")? - cpu0;
    Ok(WatchOutcome {
        puts: Measured { outcome, cpu_ticks },
        baseline: None,
        events_per_sec: None,
        rss_mib: vec![("after", procfs::rss_mib(pid).unwrap_or(f64::NAN))],
        seconds,
    })
}

/// Per-client tallies merged into one outcome.
fn merge(tallies: Vec<(Vec<u32>, u64, Option<String>)>, elapsed: Duration) -> Outcome {
    let mut latencies_us = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for (lat, errs, first) in tallies {
        latencies_us.extend(lat);
        errors += errs;
        first_error = first_error.or(first);
    }
    latencies_us.sort_unstable();
    Outcome { ops: latencies_us.len() as u64, errors, first_error, conflicts: 0, elapsed, latencies_us }
}

fn micros(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX)
}

async fn keep_alive(conns: &[Channel], clients: usize, total: u64, time_limit: Duration) -> anyhow::Result<Outcome> {
    let next = Arc::new(AtomicU64::new(0));
    let mut ids = Vec::with_capacity(clients);
    let mut lease = LeaseClient::new(conns[0].clone());
    for _ in 0..clients {
        ids.push(lease.lease_grant(LeaseGrantRequest { ttl: LONG_TTL, id: 0 }).await?.into_inner().id);
    }
    let started = Instant::now();
    let deadline = started + time_limit;
    let mut tasks = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let mut client = LeaseClient::new(conns[i % conns.len()].clone());
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(1);
            let mut latencies = Vec::new();
            if next.fetch_add(1, Ordering::Relaxed) >= total {
                return (latencies, 0, None);
            }
            // etcd answers the call only with its first response: the first request goes first.
            let mut sent = Instant::now();
            let _ = tx.send(LeaseKeepAliveRequest { id }).await;
            let mut responses = match client.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
                Ok(r) => r.into_inner(),
                Err(e) => return (latencies, 1, Some(e.to_string())),
            };
            loop {
                match responses.message().await {
                    Ok(Some(resp)) if resp.ttl > 0 => latencies.push(micros(sent)),
                    Ok(Some(_)) => return (latencies, 1, Some(format!("lease {id:x} is gone"))),
                    Ok(None) => return (latencies, 1, Some("keep-alive stream ended".into())),
                    Err(e) => return (latencies, 1, Some(e.to_string())),
                }
                if Instant::now() >= deadline || next.fetch_add(1, Ordering::Relaxed) >= total {
                    return (latencies, 0, None);
                }
                sent = Instant::now();
                if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    return (latencies, 1, Some("keep-alive stream closed".into()));
                }
            }
        }));
    }
    let mut tallies = Vec::new();
    for task in tasks {
        tallies.push(task.await?);
    }
    Ok(merge(tallies, started.elapsed()))
}

async fn grant_attach(conns: &[Channel], clients: usize, total: u64, time_limit: Duration) -> anyhow::Result<Outcome> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + time_limit;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let channel = conns[i % conns.len()].clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let (mut lease, mut kv) = (LeaseClient::new(channel.clone()), load::kv_client(channel));
            let (mut latencies, mut errors, mut first) = (Vec::new(), 0, None);
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let sent = Instant::now();
                let pair = async {
                    let id = lease.lease_grant(LeaseGrantRequest { ttl: LONG_TTL, id: 0 }).await?.into_inner().id;
                    let put = PutRequest {
                        key: workloads::lease_key(n),
                        value: load::value(),
                        lease: id,
                        ..Default::default()
                    };
                    kv.put(put).await.map(drop)
                };
                match pair.await {
                    Ok(()) => latencies.push(micros(sent)),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (latencies, errors, first)
        }));
    }
    let mut tallies = Vec::new();
    for task in tasks {
        tallies.push(task.await?);
    }
    Ok(merge(tallies, started.elapsed()))
}

/// Grants `total` leases with a key each, all due within one second of a common deadline;
/// then runs a sequential put loop until no lease is left. Returns the loop's outcome and the
/// seconds from the deadline until no lease was left.
async fn mass_expiry(
    conns: &[Channel],
    clients: usize,
    total: u64,
    time_limit: Duration,
) -> anyhow::Result<(Outcome, f64)> {
    // Granting takes a few seconds per 10,000 on either server; the deadline leaves room.
    let setup = Duration::from_secs(10 + total / 2_000);
    let due = Instant::now() + setup;
    let next = Arc::new(AtomicU64::new(0));
    // Only this workload's leases count (others' may live on the same server).
    let ids = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let channel = conns[i % conns.len()].clone();
        let (next, ids) = (Arc::clone(&next), Arc::clone(&ids));
        tasks.push(tokio::spawn(async move {
            let (mut lease, mut kv) = (LeaseClient::new(channel.clone()), load::kv_client(channel));
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let ttl = due.saturating_duration_since(Instant::now()).as_secs_f64().ceil() as i64;
                if ttl < 3 {
                    bail!("granting {total} leases took too long");
                }
                let id = lease.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await?.into_inner().id;
                let put =
                    PutRequest { key: workloads::lease_key(n), value: load::value(), lease: id, ..Default::default() };
                kv.put(put).await?;
                ids.lock().expect("not poisoned").insert(id);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let ids = std::mem::take(&mut *ids.lock().expect("not poisoned"));
    tokio::time::sleep_until(due.into()).await;
    // One client puts sequentially while the leases are revoked; the count is polled beside.
    let stop = Arc::new(AtomicBool::new(false));
    let putter = tokio::spawn({
        let (stop, mut kv) = (Arc::clone(&stop), load::kv_client(conns[0].clone()));
        async move {
            let started = Instant::now();
            let (mut latencies, mut errors, mut first) = (Vec::new(), 0, None);
            while !stop.load(Ordering::Relaxed) && started.elapsed() < time_limit {
                let sent = Instant::now();
                let put = PutRequest { key: workloads::HOT_KEY.to_vec(), value: load::value(), ..Default::default() };
                match kv.put(put).await {
                    Ok(_) => latencies.push(micros(sent)),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            merge(vec![(latencies, errors, first)], started.elapsed())
        }
    });
    let mut leases = LeaseClient::new(conns[0].clone());
    let drained = loop {
        let listed = leases.lease_leases(LeaseLeasesRequest {}).await?.into_inner().leases;
        let left = listed.iter().filter(|l| ids.contains(&l.id)).count();
        if left == 0 {
            break due.elapsed().as_secs_f64();
        }
        if due.elapsed() > time_limit {
            stop.store(true, Ordering::Relaxed);
            bail!("{left} of {total} leases still there {time_limit:?} after they fell due");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    Ok((putter.await?, drained))
}
