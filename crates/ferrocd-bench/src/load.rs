//! The load generator: clients spread over gRPC connections issue a workload's operations until
//! its count is done or its time is up, each latency recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::request_op::Request as OpRequest;
use ferrocd_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::workloads::{self, Op, Workload};

/// What one run of a workload observed.
#[derive(Debug)]
pub struct Outcome {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed; the first failure's message is kept.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Txn-put compares that failed (a sign of a lost or misordered write).
    pub conflicts: u64,
    pub elapsed: Duration,
    /// Latency of every successful operation, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` (nearest rank), in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.latencies_us.len() as f64).ceil() as usize).clamp(1, self.latencies_us.len());
        f64::from(self.latencies_us[rank - 1]) / 1000.0
    }
}

/// The auth token every KV request carries (`--auth`), set once the server is set up.
static TOKEN: std::sync::RwLock<Option<tonic::metadata::AsciiMetadataValue>> = std::sync::RwLock::new(None);

/// Sends every request with `token` (none: without).
pub fn set_token(token: Option<&str>) -> anyhow::Result<()> {
    let value = token.map(str::parse).transpose().context("a token usable as metadata")?;
    *TOKEN.write().expect("the token lock") = value;
    Ok(())
}

/// Adds the token, if any, to a request.
#[derive(Debug, Clone, Copy)]
pub struct WithToken;

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = TOKEN.read().expect("the token lock").clone() {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

/// A KV client whose requests carry the token.
pub type Kv = KvClient<InterceptedService<Channel, WithToken>>;

/// Opens `n` separate HTTP/2 connections to `url`.
pub async fn connect(url: &str, n: usize) -> anyhow::Result<Vec<Kv>> {
    let endpoint = Endpoint::from_shared(url.to_string())?.connect_timeout(Duration::from_secs(5));
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = endpoint.connect().await.with_context(|| format!("connect to {url}"))?;
        clients.push(kv_client(channel));
    }
    Ok(clients)
}

/// A KV client on `channel`.
pub fn kv_client(channel: Channel) -> Kv {
    KvClient::with_interceptor(channel, WithToken).max_decoding_message_size(64 << 20)
}

pub(crate) fn value() -> Vec<u8> {
    // Fresh random bytes per write: nothing for either server's compression to exploit.
    let mut v = vec![0; workloads::VALUE_SIZE];
    fastrand::fill(&mut v);
    v
}

fn put(key: Vec<u8>) -> RequestOp {
    RequestOp { request: Some(OpRequest::RequestPut(PutRequest { key, value: value(), ..Default::default() })) }
}

/// The URL (of `urls`) of the member that leads, by asking each for its status.
///
/// # Errors
/// When no member names itself the leader within 30 s.
pub async fn leader(urls: &[String]) -> anyhow::Result<String> {
    use ferrocd_proto::etcdserverpb::StatusRequest;
    use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for url in urls {
            let Ok(channel) = Endpoint::from_shared(url.clone())?.connect().await else { continue };
            let Ok(status) = MaintenanceClient::new(channel).status(StatusRequest {}).await else { continue };
            let status = status.into_inner();
            if status.leader != 0 && status.header.is_some_and(|h| h.member_id == status.leader) {
                return Ok(url.clone());
            }
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no member of {urls:?} leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `all` (random values), in transactions of 100 puts from a few concurrent clients.
pub async fn preload(url: &str, all: Vec<Vec<u8>>) -> anyhow::Result<()> {
    let batches: Vec<Vec<Vec<u8>>> = all.chunks(100).map(<[_]>::to_vec).collect();
    let next = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(batches);
    let mut tasks = Vec::new();
    for client in connect(url, 2).await?.into_iter().cycle().take(8) {
        let (next, batches) = (next.clone(), batches.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(batch) = batches.get(i) else { return Ok::<_, anyhow::Error>(()) };
                let txn = TxnRequest { success: batch.iter().cloned().map(put).collect(), ..Default::default() };
                client.txn(txn).await.context("preload txn")?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Runs `workload` with `total` operations against `url`, stopping early at `time_limit`.
pub async fn run(url: &str, workload: &Workload, total: u64, time_limit: Duration) -> anyhow::Result<Outcome> {
    let conns = connect(url, workload.conns).await?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + time_limit;
    let mut tasks = Vec::with_capacity(workload.clients);
    for (id, client) in conns.into_iter().cycle().take(workload.clients).enumerate() {
        let mut client =
            Client { kv: client, id: id as u64, clients: workload.clients as u64, known: HashMap::new(), sent: 0 };
        let (next, op) = (next.clone(), workload.op);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let sent = Instant::now();
                match client.issue(op, i).await {
                    Ok(conflict) => {
                        tally.latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                        tally.conflicts += u64::from(conflict);
                    }
                    Err(status) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| status.to_string());
                    }
                }
            }
            tally
        }));
    }
    let mut sum = Tally::default();
    for task in tasks {
        let tally = task.await?;
        sum.latencies_us.extend(tally.latencies_us);
        sum.errors += tally.errors;
        sum.conflicts += tally.conflicts;
        if sum.first_error.is_none() {
            sum.first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed();
    sum.latencies_us.sort_unstable();
    Ok(Outcome {
        ops: sum.latencies_us.len() as u64,
        errors: sum.errors,
        first_error: sum.first_error,
        conflicts: sum.conflicts,
        elapsed,
        latencies_us: sum.latencies_us,
    })
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    conflicts: u64,
    first_error: Option<String>,
}

struct Client {
    kv: Kv,
    id: u64,
    clients: u64,
    /// Txn-put: the mod revision this client last saw for each of its keys.
    known: HashMap<u64, i64>,
    /// Txn-puts this client has sent.
    sent: u64,
}

impl Client {
    /// Issues operation number `i` of `op`; answers whether a txn compare failed.
    async fn issue(&mut self, op: Op, i: u64) -> Result<bool, tonic::Status> {
        match op {
            Op::Put { sequential } => {
                let key = if sequential { workloads::put_key(i) } else { workloads::put_key(fastrand::u64(..)) };
                self.kv.put(PutRequest { key, value: value(), ..Default::default() }).await?;
                Ok(false)
            }
            Op::PutHot => {
                self.kv
                    .put(PutRequest { key: workloads::HOT_KEY.to_vec(), value: value(), ..Default::default() })
                    .await?;
                Ok(false)
            }
            Op::Watch(_) => Err(tonic::Status::invalid_argument("watch workloads are driven by the watch module")),
            Op::Lease(_) => Err(tonic::Status::invalid_argument("lease workloads are driven by the lease module")),
            Op::Get { serializable } => {
                let key = workloads::READ_KEY.to_vec();
                self.kv.range(RangeRequest { key, serializable, ..Default::default() }).await?;
                Ok(false)
            }
            Op::Range1k => {
                let (key, range_end) = (b"/r/".to_vec(), b"/r0".to_vec());
                let resp =
                    self.kv.range(RangeRequest { key, range_end, serializable: true, ..Default::default() }).await?;
                let n = resp.get_ref().kvs.len();
                if n == workloads::RANGE_KEYS {
                    Ok(false)
                } else {
                    Err(tonic::Status::data_loss(format!("a range of the 1000 preloaded keys returned {n}")))
                }
            }
            Op::TxnPut => self.txn_put().await,
        }
    }

    async fn txn_put(&mut self) -> Result<bool, tonic::Status> {
        // This client's keys are those ≡ id (mod clients), taken in turn.
        let owned = (workloads::TXN_KEY_SPACE / self.clients).max(1);
        let slot = self.sent % owned;
        self.sent += 1;
        let index = slot * self.clients + self.id;
        let key = workloads::txn_key(index);
        let known = self.known.get(&index).copied().unwrap_or(0);
        let compare = Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::ModRevision(known)),
            ..Default::default()
        };
        let get = RequestOp {
            request: Some(OpRequest::RequestRange(RangeRequest { key: key.clone(), ..Default::default() })),
        };
        let txn = TxnRequest { compare: vec![compare], success: vec![put(key)], failure: vec![get] };
        let resp = self.kv.txn(txn).await?.into_inner();
        if resp.succeeded {
            let revision = resp.header.map_or(0, |h| h.revision);
            self.known.insert(index, revision);
            return Ok(false);
        }
        // Learn the current revision from the Else branch and carry on.
        let current = resp.responses.first().and_then(|r| match &r.response {
            Some(ferrocd_proto::etcdserverpb::response_op::Response::ResponseRange(range)) => {
                range.kvs.first().map(|kv| kv.mod_revision)
            }
            _ => None,
        });
        self.known.insert(index, current.unwrap_or(0));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let outcome = Outcome {
            ops: 4,
            errors: 0,
            first_error: None,
            conflicts: 0,
            elapsed: Duration::from_secs(2),
            latencies_us: vec![1000, 2000, 3000, 4000],
        };
        assert_eq!(outcome.throughput(), 2.0);
        assert_eq!(outcome.latency_ms(0.5), 2.0);
        assert_eq!(outcome.latency_ms(0.99), 4.0);
        assert_eq!(outcome.latency_ms(0.0), 1.0);
    }
}
