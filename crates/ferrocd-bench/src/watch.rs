//! The watch workloads: one client puts sequentially while watchers receive the events.
//!
//! - watch-latency: one watcher; each put's latency runs from sending it until its event
//!   reaches the watcher;
//! - watch-fanout: a thousand watchers of one key on a hundred streams; each put's latency runs
//!   until the last watcher got its event, and the events delivered per second are reported;
//! - watch-stalled: ten thousand idle watchers of keys never written, and one watcher of the
//!   put key on a stream that is never read (a tiny HTTP/2 window, so the server soon cannot
//!   send it anything); the put loop's own latency is measured without them and with them, and
//!   the server's resident memory before and after each loop. Then the stalled stream is read:
//!   the time until it has delivered every put is reported, and any event missing is printed.
//!
//! Arrival times are taken by the tasks reading the streams, as each response arrives, so a
//! busy driver does not inflate them. Every loop is bounded by its count and `--time-limit`,
//! every setup step by `--time-limit` too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::load::{self, Outcome};
use crate::procfs;
use crate::workloads::{self, Op, Phase, WatchLoad, Workload};

/// How long one put's event may take to reach every watcher before it counts as a failure.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The HTTP/2 stream window of the stalled watcher's connection: a few events fill it.
const STALLED_WINDOW: u32 = 1024;

/// A measured put loop and the server CPU time it took.
#[derive(Debug)]
pub struct Measured {
    pub outcome: Outcome,
    /// Server CPU time during the loop, in clock ticks.
    pub cpu_ticks: u64,
}

/// What a watch workload observed.
#[derive(Debug)]
pub struct WatchOutcome {
    /// The workload's put loop.
    pub puts: Measured,
    /// The same put loop without watchers (watch-stalled).
    pub baseline: Option<Measured>,
    /// Events delivered to watchers per second (watch-fanout).
    pub events_per_sec: Option<f64>,
    /// The server's resident memory at named points, in MiB.
    pub rss_mib: Vec<(&'static str, f64)>,
    /// Named durations, in seconds.
    pub seconds: Vec<(&'static str, f64)>,
}

/// When the watchers got each revision's event, as their readers report it.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// Revision → (watchers that got it, when the last of them did).
    by_revision: HashMap<i64, (usize, Instant)>,
}

impl Arrivals {
    /// One watcher got the event of `revision` at `at`.
    pub fn record(&mut self, revision: i64, at: Instant) {
        let entry = self.by_revision.entry(revision).or_insert((0, at));
        entry.0 += 1;
        entry.1 = entry.1.max(at);
    }

    /// When the last of `watchers` watchers got the event of `revision`, once all have; then
    /// that revision and older ones (late arrivals of a put that timed out) are forgotten.
    pub fn complete(&mut self, revision: i64, watchers: usize) -> Option<Instant> {
        let &(count, last) = self.by_revision.get(&revision)?;
        if count < watchers {
            return None;
        }
        self.by_revision.retain(|&r, _| r > revision);
        Some(last)
    }

    /// Watchers that got the event of `revision` so far.
    pub fn count(&self, revision: i64) -> usize {
        self.by_revision.get(&revision).map_or(0, |e| e.0)
    }
}

/// `total` items spread as evenly as possible over `parts` (at most `total`) parts.
pub fn spread(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, total.max(1));
    (0..parts).map(|i| total / parts + usize::from(i < total % parts)).collect()
}

/// Runs watch workload `w` with `total` puts against the server at `url` (process `pid`).
pub async fn run(url: &str, pid: u32, w: &Workload, total: u64, time_limit: Duration) -> anyhow::Result<WatchOutcome> {
    let Op::Watch(load) = w.op else { bail!("{} is not a watch workload", w.name) };
    match load {
        WatchLoad::Latency => delivered(url, pid, w, workloads::LATENCY_KEY, 1, 1, total, time_limit).await,
        WatchLoad::Fanout { watchers, streams } => {
            delivered(url, pid, w, workloads::FANOUT_KEY, watchers, streams, total, time_limit).await
        }
        WatchLoad::Stalled { idle, streams } => stalled(url, pid, w, idle, streams, total, time_limit).await,
    }
}

fn watch_create(key: &[u8]) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// Opens `n` connections to `url`, with an HTTP/2 stream window of `window` bytes if given.
pub(crate) async fn channels(url: &str, n: usize, window: Option<u32>) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(window);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(endpoint.connect().await.with_context(|| format!("connect to {url}"))?);
    }
    Ok(out)
}

/// A Watch stream: the sender of its requests (kept, so the stream stays open) and its
/// responses.
type Stream = (mpsc::UnboundedSender<WatchRequest>, Streaming<WatchResponse>);

/// Opens a Watch stream on `channel` creating a watcher per key of `keys`, and waits for every
/// created response (until `deadline`).
async fn open(channel: Channel, keys: &[Vec<u8>], deadline: tokio::time::Instant) -> anyhow::Result<Stream> {
    let (requests, rx) = mpsc::unbounded_channel();
    for key in keys {
        requests.send(watch_create(key)).context("queue a create request")?;
    }
    let mut client = WatchClient::new(channel).max_decoding_message_size(64 << 20);
    let call = client.watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    let mut responses =
        tokio::time::timeout_at(deadline, call).await.context("the watch call timed out")??.into_inner();
    let mut created = 0;
    while created < keys.len() {
        let resp = tokio::time::timeout_at(deadline, responses.message())
            .await
            .with_context(|| format!("{created} of {} watchers created in time", keys.len()))??
            .context("the watch stream ended")?;
        if resp.canceled {
            bail!("a watcher was refused: {}", resp.cancel_reason);
        }
        created += usize::from(resp.created);
    }
    Ok((requests, responses))
}

/// Aborts a task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads `responses` until they end, reporting (revision, arrival time) of every event.
fn report_arrivals(mut responses: Streaming<WatchResponse>, tx: mpsc::UnboundedSender<(i64, Instant)>) -> Task {
    Task(tokio::spawn(async move {
        while let Ok(Some(resp)) = responses.message().await {
            let at = Instant::now();
            for event in &resp.events {
                if let Some(kv) = &event.kv
                    && tx.send((kv.mod_revision, at)).is_err()
                {
                    return;
                }
            }
        }
    }))
}

/// watch-latency and watch-fanout: `watchers` watchers of `key` spread over `streams` streams
/// on the workload's connections; `total` sequential puts of `key`, each timed until every
/// watcher got its event.
#[allow(clippy::too_many_arguments)]
async fn delivered(
    url: &str,
    pid: u32,
    w: &Workload,
    key: &[u8],
    watchers: usize,
    streams: usize,
    total: u64,
    time_limit: Duration,
) -> anyhow::Result<WatchOutcome> {
    let setup = tokio::time::Instant::now() + time_limit;
    let conns = channels(url, w.conns, None).await?;
    let (tx, mut arrived) = mpsc::unbounded_channel();
    let mut open_streams = Vec::new();
    let mut readers = Vec::new();
    for (i, n) in spread(watchers, streams).into_iter().enumerate() {
        let keys = vec![key.to_vec(); n];
        let (requests, responses) = open(conns[i % conns.len()].clone(), &keys, setup).await?;
        open_streams.push(requests);
        readers.push(report_arrivals(responses, tx.clone()));
    }
    drop(tx);

    let mut kv = load::connect(url, 1).await?.remove(0);
    let mut arrivals = Arrivals::default();
    let (mut latencies_us, mut errors, mut first_error) = (Vec::new(), 0, None);
    let cpu0 = procfs::cpu_ticks(pid).context("server CPU time")?;
    let started = Instant::now();
    for _ in 0..total {
        if started.elapsed() >= time_limit {
            break;
        }
        let sent = Instant::now();
        let put = PutRequest { key: key.to_vec(), value: load::value(), ..Default::default() };
        let revision = match kv.put(put).await {
            Ok(resp) => resp.into_inner().header.map_or(0, |h| h.revision),
            Err(status) => {
                errors += 1;
                first_error.get_or_insert_with(|| status.to_string());
                continue;
            }
        };
        let wait_until = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        let last = loop {
            if let Some(at) = arrivals.complete(revision, watchers) {
                break Some(at);
            }
            match tokio::time::timeout_at(wait_until, arrived.recv()).await {
                Ok(Some((rev, at))) => arrivals.record(rev, at),
                _ => break None,
            }
        };
        match last {
            Some(at) => latencies_us.push(u32::try_from(at.duration_since(sent).as_micros()).unwrap_or(u32::MAX)),
            None => {
                errors += 1;
                first_error.get_or_insert_with(|| {
                    format!(
                        "revision {revision} reached {} of {watchers} watchers within {DELIVERY_TIMEOUT:?}",
                        arrivals.count(revision)
                    )
                });
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu_ticks = procfs::cpu_ticks(pid).context("server CPU time")? - cpu0;
    latencies_us.sort_unstable();
    let ops = latencies_us.len() as u64;
    let outcome = Outcome { ops, errors, first_error, conflicts: 0, elapsed, latencies_us };
    let events_per_sec = (watchers > 1).then(|| (ops * watchers as u64) as f64 / elapsed.as_secs_f64());
    drop(readers);
    drop(open_streams);
    Ok(WatchOutcome {
        puts: Measured { outcome, cpu_ticks },
        baseline: None,
        events_per_sec,
        rss_mib: Vec::new(),
        seconds: Vec::new(),
    })
}

/// The put loop of watch-stalled (sequential puts of the hot key), measured.
async fn put_loop(
    url: &str,
    pid: u32,
    name: &'static str,
    total: u64,
    time_limit: Duration,
) -> anyhow::Result<Measured> {
    let w = Workload { name, phase: Phase::Watch, op: Op::PutHot, clients: 1, conns: 1, total };
    let cpu0 = procfs::cpu_ticks(pid).context("server CPU time")?;
    let outcome = load::run(url, &w, total, time_limit).await?;
    let cpu_ticks = procfs::cpu_ticks(pid).context("server CPU time")? - cpu0;
    Ok(Measured { outcome, cpu_ticks })
}

/// watch-stalled: the put loop alone, then with `idle` idle watchers on `streams` streams and
/// one stalled watcher of the hot key.
async fn stalled(
    url: &str,
    pid: u32,
    w: &Workload,
    idle: usize,
    streams: usize,
    total: u64,
    time_limit: Duration,
) -> anyhow::Result<WatchOutcome> {
    let rss = || procfs::rss_mib(pid).unwrap_or(f64::NAN);
    let at_start = rss();
    let baseline = put_loop(url, pid, workloads::STALLED_BASELINE, total, time_limit).await?;
    let before = rss();

    let setup = tokio::time::Instant::now() + time_limit;
    let conns = channels(url, w.conns, None).await?;
    let mut open_streams = Vec::new();
    let mut drains = Vec::new();
    let (tx, _ignored) = mpsc::unbounded_channel();
    let mut next_key = 0;
    for (i, n) in spread(idle, streams).into_iter().enumerate() {
        let keys: Vec<Vec<u8>> = (next_key..next_key + n).map(workloads::idle_key).collect();
        next_key += n;
        let (requests, responses) = open(conns[i % conns.len()].clone(), &keys, setup).await?;
        open_streams.push(requests);
        // Read on, as a live client would (nothing comes: the keys are never written).
        drains.push(report_arrivals(responses, tx.clone()));
    }
    // The stalled reader: its created response is read, nothing after it.
    let stalled_conn = channels(url, 1, Some(STALLED_WINDOW)).await?;
    let stalled_stream = open(stalled_conn[0].clone(), &[workloads::HOT_KEY.to_vec()], setup).await?;
    let with_watchers = rss();

    let puts = put_loop(url, pid, w.name, total, time_limit).await?;
    let after = rss();
    drop(drains);
    drop(open_streams);

    // The stalled reader reads at last: it gets every put of the loop (and nothing else).
    let last = revision(url).await?;
    let (_requests, mut responses) = stalled_stream;
    let began = Instant::now();
    let deadline = tokio::time::Instant::now() + time_limit;
    let (mut received, mut newest) = (0_u64, 0);
    while newest < last {
        match tokio::time::timeout_at(deadline, responses.message()).await {
            Ok(Ok(Some(resp))) => {
                received += resp.events.len() as u64;
                newest = resp.events.last().and_then(|e| e.kv.as_ref()).map_or(newest, |kv| kv.mod_revision);
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
    let drained = began.elapsed().as_secs_f64();
    if received != puts.outcome.ops {
        eprintln!(
            "  {}: the stalled watcher got {received} events for the loop's {} acknowledged puts (up to revision {newest} of {last})",
            w.name, puts.outcome.ops
        );
    }
    Ok(WatchOutcome {
        puts,
        baseline: Some(baseline),
        events_per_sec: None,
        rss_mib: vec![
            ("at start", at_start),
            ("after the puts without watchers", before),
            ("with the watchers", with_watchers),
            ("after the puts with the watchers", after),
        ],
        seconds: vec![("stalled watcher drained", drained)],
    })
}

/// The server's revision, from a linearizable read.
async fn revision(url: &str) -> anyhow::Result<i64> {
    let mut kv = load::connect(url, 1).await?.remove(0);
    let req = RangeRequest { key: workloads::HOT_KEY.to_vec(), ..Default::default() };
    Ok(kv.range(req).await?.into_inner().header.map_or(0, |h| h.revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_is_delivered_when_the_last_watcher_got_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut arrivals = Arrivals::default();
        arrivals.record(5, at(3));
        arrivals.record(5, at(1));
        assert_eq!(arrivals.complete(5, 3), None);
        arrivals.record(4, at(0)); // a late arrival of an earlier put
        arrivals.record(6, at(4)); // the next put, already
        arrivals.record(5, at(2));
        assert_eq!(arrivals.count(5), 3);
        assert_eq!(arrivals.complete(5, 3), Some(at(3)));
        // Revision 5 and older are forgotten, newer ones kept.
        assert_eq!((arrivals.count(4), arrivals.count(5), arrivals.count(6)), (0, 0, 1));
        assert_eq!(arrivals.complete(6, 1), Some(at(4)));
    }

    #[test]
    fn watchers_spread_evenly_over_streams() {
        assert_eq!(spread(1000, 100), vec![10; 100]);
        assert_eq!(spread(5, 3), [2, 2, 1]);
        assert_eq!(spread(1, 1), [1]);
        assert_eq!(spread(2, 10), [1, 1]);
        assert_eq!(spread(10_000, 100).iter().sum::<usize>(), 10_000);
    }
}
