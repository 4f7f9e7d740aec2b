//! `make-mirror` (copy a prefix to another cluster, then follow its changes) and `check perf`
//! (a rate-limited put load with etcdctl's pass/fail thresholds).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{ArgAction, Args, Subcommand};
use ferrocd_client::kv::{DeleteOptions, GetOptions, Txn, TxnOp};
use ferrocd_client::mvccpb::event::EventType;
use ferrocd_client::watch::WatchOptions;
use ferrocd_client::{Client, EtcdError};

use crate::progress::Progress;
use crate::{CtlError, CtlResult, Ctx, TlsFiles, exit};

#[derive(Debug, Args)]
pub struct MakeMirrorArgs {
    /// Key-value prefix to mirror
    #[arg(long, default_value = "")]
    prefix: String,
    /// destination prefix to mirror a prefix to a different prefix in the destination cluster
    #[arg(long, default_value = "")]
    dest_prefix: String,
    /// mirror key-values to the root of the destination cluster
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    no_dest_prefix: bool,
    /// Identify secure client using this TLS certificate file for the destination cluster
    #[arg(long)]
    dest_cert: Option<String>,
    /// Identify secure client using this TLS key file
    #[arg(long)]
    dest_key: Option<String>,
    /// Verify certificates of TLS enabled secure servers using this CA bundle
    #[arg(long)]
    dest_cacert: Option<String>,
    /// Disable transport security for client connections
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    dest_insecure_transport: bool,
    /// the destination endpoint
    args: Vec<String>,
}

/// Keys a base-copy range asks for at once (etcd's mirror syncer's batch).
const BATCH: i64 = 1000;

/// The key `key` has in the destination: the first occurrence of `from` replaced by `to`, as
/// Go's `strings.Replace(key, from, to, 1)` does (an empty `from` matches at the start).
fn rename(key: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = if from.is_empty() { Some(0) } else { key.windows(from.len()).position(|w| w == from) };
    match at {
        Some(at) => [&key[..at], to, &key[at + from.len()..]].concat(),
        None => key.to_vec(),
    }
}

pub async fn make_mirror(ctx: &Ctx, args: MakeMirrorArgs) -> CtlResult {
    let [destination] = args.args.as_slice() else {
        return Err(CtlError::bad_args("make-mirror takes one destination argument"));
    };
    let tls = TlsFiles {
        cert: args.dest_cert.as_deref(),
        key: args.dest_key.as_deref(),
        cacert: args.dest_cacert.as_deref(),
    };
    let dest = ctx.connect(std::slice::from_ref(destination), &tls, false).await?;
    let source = ctx.client().await?;
    let failed = |e: ferrocd_client::Error| CtlError::client(exit::ERROR, &e);

    // The base: everything under the prefix at one revision, in batches.
    let revision = source.get("foo", None).await.map_err(failed)?.header.map_or(0, |h| h.revision);
    if args.no_dest_prefix && !args.dest_prefix.is_empty() {
        return Err(CtlError::bad_args(
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
        ));
    }
    let from = args.prefix.as_bytes();
    let to = if args.no_dest_prefix || !args.dest_prefix.is_empty() { args.dest_prefix.as_bytes() } else { from };

    let total = Arc::new(AtomicU64::new(0));
    let bar = Progress::new();
    let draw = |total: &AtomicU64| bar.show(|_| format!("Mirrored {} keys", total.load(Ordering::Relaxed)));
    let report = {
        // etcdctl prints the count so far every 30 seconds.
        let total = Arc::clone(&total);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(30),
                Duration::from_secs(30),
            );
            loop {
                tick.tick().await;
                println!("{}", total.load(Ordering::Relaxed));
            }
        })
    };
    let _stop_report = AbortOnDrop(report);

    let mut key = if from.is_empty() { vec![0] } else { from.to_vec() };
    loop {
        let span = if from.is_empty() {
            GetOptions::new().with_from_key()
        } else {
            GetOptions::new().with_range(ferrocd_client::kv::prefix_range_end(from))
        };
        let options = span.with_limit(BATCH).with_revision(revision);
        let page = source.get(key.clone(), Some(options)).await.map_err(failed)?;
        for kv in &page.kvs {
            dest.put(rename(&kv.key, from, to), kv.value.clone(), None).await.map_err(failed)?;
            total.fetch_add(1, Ordering::Relaxed);
        }
        draw(&total);
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => key = [last.key.as_slice(), &[0]].concat(),
            _ => break,
        }
    }

    // Then every change after that revision, one destination txn per source revision.
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut watch = source.watch(from.to_vec(), Some(options)).await.map_err(failed)?;
    loop {
        let response = match watch.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(()),
            Err(ferrocd_client::Error::WatchCanceled { compact_revision, .. }) if compact_revision != 0 => {
                return Err(CtlError::new(exit::ERROR, EtcdError::Compacted.message()));
            }
            Err(e) => return Err(failed(e)),
        };
        if response.compact_revision != 0 {
            return Err(CtlError::new(exit::ERROR, EtcdError::Compacted.message()));
        }
        let mut ops = Vec::new();
        let mut last = 0;
        for event in &response.events {
            let Some(kv) = &event.kv else { continue };
            if last != 0 && kv.mod_revision > last {
                dest.txn(Txn::new().and_then(std::mem::take(&mut ops))).await.map_err(failed)?;
            }
            last = kv.mod_revision;
            let key = rename(&kv.key, from, to);
            ops.push(match event.r#type() {
                EventType::Put => TxnOp::put(key, kv.value.clone(), None),
                EventType::Delete => TxnOp::delete(key, None::<DeleteOptions>),
            });
            total.fetch_add(1, Ordering::Relaxed);
        }
        if !ops.is_empty() {
            dest.txn(Txn::new().and_then(ops)).await.map_err(failed)?;
        }
        draw(&total);
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Check the performance of the etcd cluster
    Perf(PerfArgs),
}

#[derive(Debug, Args)]
pub struct PerfArgs {
    /// The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)
    #[arg(long, default_value = "s")]
    load: String,
    /// The prefix for writing the performance check's keys.
    #[arg(long, default_value = "/etcdctl-check-perf/")]
    prefix: String,
    /// Compact storage with last revision after test is finished.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    auto_compact: bool,
    /// Defragment storage after test is finished.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    auto_defrag: bool,
}

/// A load model: puts per second, clients, seconds.
struct Load {
    rate: u32,
    clients: usize,
    seconds: u64,
}

fn load(name: &str) -> Option<Load> {
    let (rate, clients) = match name {
        "s" | "small" => (150, 50),
        "m" | "medium" => (1000, 200),
        "l" | "large" => (8000, 500),
        "xl" | "xLarge" => (15000, 1000),
        _ => return None,
    };
    Some(Load { rate, clients, seconds: 60 })
}

/// What the put load measured.
#[derive(Default)]
struct Stats {
    /// Seconds from the first put sent to the last answered.
    total: f64,
    latencies: Vec<f64>,
    errors: BTreeMap<String, u64>,
}

pub async fn check(ctx: &Ctx, command: CheckCommand) -> CtlResult {
    let CheckCommand::Perf(args) = command;
    let Some(model) = load(&args.load) else {
        return Err(CtlError::bad_feature(format!("unknown load option {}", args.load)));
    };
    let mut clients = Vec::with_capacity(model.clients);
    for _ in 0..model.clients {
        clients.push(ctx.client().await?);
    }
    let failed = |e: &ferrocd_client::Error| CtlError::client(exit::ERROR, e);
    let prefix = args.prefix.as_bytes();
    let present = clients[0]
        .get(prefix.to_vec(), Some(GetOptions::new().with_prefix().with_limit(1)))
        .await
        .map_err(|e| failed(&e))?;
    if !present.kvs.is_empty() {
        return Err(CtlError::new(
            exit::INVALID_INPUT,
            format!(
                "prefix {} has keys. Delete with etcdctl del --prefix {} first",
                crate::go::quote(prefix),
                args.prefix
            ),
        ));
    }

    let stats = run_load(&clients, prefix, &model).await;

    let deleted = clients[0].delete(prefix.to_vec(), Some(DeleteOptions::new().with_prefix())).await;
    let deleted = deleted.map_err(|e| failed(&e))?;
    if args.auto_compact {
        let revision = deleted.header.map_or(0, |h| h.revision);
        println!("Compacting with revision {revision}");
        clients[0].compact(revision, true).await.map_err(|e| failed(&e))?;
        println!("Compacted with revision {revision}");
    }
    if args.auto_defrag {
        for ep in ctx.endpoints() {
            println!("Defragmenting {}", crate::go::quote(ep.as_bytes()));
            clients[0].defragment(&ep).await.map_err(|e| failed(&e))?;
            println!("Defragmented {}", crate::go::quote(ep.as_bytes()));
        }
    }
    if report(&stats, &model) { Ok(()) } else { Err(CtlError::new(exit::ERROR, "")) }
}

/// Puts at the model's rate from its clients for its duration; a key is the prefix and 256
/// bytes holding a random number's varint, a value 1 KiB of zeros, as etcdctl's.
async fn run_load(clients: &[Client], prefix: &[u8], model: &Load) -> Stats {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(model.clients);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for client in clients {
        let (client, rx) = (client.clone(), Arc::clone(&rx));
        workers.spawn(async move {
            let mut stats = Stats::default();
            loop {
                let Some(key) = rx.lock().await.recv().await else { break };
                let sent = Instant::now();
                match client.put(key, vec![0u8; 1024], None).await {
                    Ok(_) => stats.latencies.push(sent.elapsed().as_secs_f64()),
                    Err(e) => *stats.errors.entry(crate::client_message(&e)).or_default() += 1,
                }
            }
            stats
        });
    }
    let bar = Progress::new();
    let duration = Duration::from_secs(model.seconds);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / model.rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = 0;
    while start.elapsed() < duration {
        tick.tick().await;
        let mut key = prefix.to_vec();
        key.extend(varint(fastrand::i64(0..i64::MAX), 256));
        if tx.send(key).await.is_err() {
            break;
        }
        let seconds = start.elapsed().as_secs().min(model.seconds);
        if seconds != shown {
            shown = seconds;
            bar.show(|_| progress_bar(seconds, model.seconds));
        }
    }
    drop(tx);
    let mut stats = Stats::default();
    while let Some(worker) = workers.join_next().await {
        if let Ok(done) = worker {
            stats.latencies.extend(done.latencies);
            for (error, count) in done.errors {
                *stats.errors.entry(error).or_default() += count;
            }
        }
    }
    stats.total = start.elapsed().as_secs_f64();
    bar.show(|_| progress_bar(model.seconds, model.seconds));
    bar.finish();
    stats
}

/// `[#####     ] 30 / 60 s`: the load's seconds done, as a bar of 40 columns.
fn progress_bar(done: u64, total: u64) -> String {
    let filled = (done * 40).checked_div(total).unwrap_or(40).min(40) as usize;
    format!("[{}{}] {done} / {total} s", "#".repeat(filled), " ".repeat(40 - filled))
}

/// Go's `binary.PutVarint` of `n` into a zeroed buffer of `len` bytes.
fn varint(n: i64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut u = ((n << 1) ^ (n >> 63)) as u64;
    let mut i = 0;
    while u >= 0x80 {
        out[i] = (u as u8) | 0x80;
        u >>= 7;
        i += 1;
    }
    out[i] = u as u8;
    out
}

/// Prints etcdctl's verdict lines; true when every check passed.
fn report(stats: &Stats, model: &Load) -> bool {
    let latencies = &stats.latencies;
    let rps = if stats.total > 0.0 { latencies.len() as f64 / stats.total } else { 0.0 };
    let slowest = latencies.iter().copied().fold(0.0, f64::max);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let variance = latencies.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / latencies.len().max(1) as f64;
    let stddev = variance.sqrt();
    let mut ok = true;
    if !stats.errors.is_empty() {
        println!("FAIL: too many errors");
        for (error, count) in &stats.errors {
            println!("FAIL: ERROR({error}) -> {count}");
        }
        ok = false;
    }
    if rps / f64::from(model.rate) <= 0.9 {
        println!("FAIL: Throughput too low: {} writes/s", rps as i64 + 1);
        ok = false;
    } else {
        println!("PASS: Throughput is {} writes/s", rps as i64 + 1);
    }
    if slowest > 0.5 {
        println!("Slowest request took too long: {slowest:.6}s");
        ok = false;
    } else {
        println!("PASS: Slowest request took {slowest:.6}s");
    }
    if stddev > 0.1 {
        println!("Stddev too high: {stddev:.6}s");
        ok = false;
    } else {
        println!("PASS: Stddev is {stddev:.6}s");
    }
    println!("{}", if ok { "PASS" } else { "FAIL" });
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_replaces_the_first_occurrence_like_go() {
        assert_eq!(rename(b"/a/x/a/", b"/a/", b"/b/"), b"/b/x/a/");
        assert_eq!(rename(b"key", b"", b"p/"), b"p/key");
        assert_eq!(rename(b"key", b"zz", b"p/"), b"key");
        assert_eq!(rename(b"/a/k", b"/a/", b""), b"k");
    }

    #[test]
    fn the_bar_fills_with_the_seconds_done() {
        assert_eq!(progress_bar(0, 60), format!("[{}] 0 / 60 s", " ".repeat(40)));
        assert_eq!(progress_bar(30, 60), format!("[{}{}] 30 / 60 s", "#".repeat(20), " ".repeat(20)));
        assert_eq!(progress_bar(60, 60), format!("[{}] 60 / 60 s", "#".repeat(40)));
        assert_eq!(progress_bar(0, 0), format!("[{}] 0 / 0 s", "#".repeat(40)));
    }

    #[test]
    fn varint_matches_go_put_varint() {
        // Zig-zag: 1 -> 2, -1 -> 1, 300 -> 600 = 0xd8 0x04.
        assert_eq!(&varint(1, 4), &[2, 0, 0, 0]);
        assert_eq!(&varint(-1, 2), &[1, 0]);
        assert_eq!(&varint(300, 3), &[0xd8, 0x04, 0]);
        assert_eq!(varint(i64::MAX - 1, 256).iter().filter(|b| **b != 0).count(), 10);
    }
}
