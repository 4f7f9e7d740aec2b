//! The whole server in one process: three members on `MemEngine`, Raft over the in-memory
//! router, clients over gRPC writing through followers as well as the leader, the leader cut
//! off from the others and healed, and the history recorded for the linearizability checker.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use ferrocd_engine::MemEngine;
use ferrocd_lincheck::{History, Op, Outcome, Output, check};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use ferrocd_raft::mem::MemRouter;
use ferrocd_server::{Config, Server, Transport, storage};
use tonic::transport::Channel;

const MEMBERS: usize = 3;
const CLIENTS: u64 = 4;
const OPS_PER_CLIENT: u64 = 60;
/// Each operation's own deadline (sent as `grpc-timeout`, so the server gives up too).
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Ports free now on loopback, held until all are chosen so no two are the same.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

struct Cluster {
    servers: Vec<Server<MemEngine>>,
    channels: Vec<Channel>,
    router: MemRouter,
    _dir: tempfile::TempDir,
}

async fn start() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2 * MEMBERS);
    let peer = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
    let initial: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}={}", peer(i))).collect();
    let router = MemRouter::new();
    let starts = (0..MEMBERS).map(|i| {
        let client = format!("http://127.0.0.1:{}", ports[2 * i]);
        let data_dir = dir.path().join(format!("m{i}"));
        let args = [
            "ferrocd".to_string(),
            format!("--name=m{i}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={}", peer(i)),
            format!("--initial-advertise-peer-urls={}", peer(i)),
            format!("--initial-cluster={}", initial.join(",")),
            "--heartbeat-interval=50".into(),
            "--election-timeout=500".into(),
        ];
        let config = Config::try_parse_from(args).unwrap();
        let transport = Transport::Mem(router.clone());
        async move {
            let engine = Arc::new(MemEngine::new(&storage::buckets()));
            Server::start_on(&config, engine, transport).await.unwrap()
        }
    });
    // Each member serves only once its publish is committed, which takes a quorum: together.
    let servers = futures::future::join_all(starts).await;
    let channels = servers
        .iter()
        .map(|s| Channel::from_shared(format!("http://{}", s.client_addrs()[0])).unwrap().connect_lazy())
        .collect();
    Cluster { servers, channels, router, _dir: dir }
}

impl Cluster {
    /// The leader, as the members report it once all of `among` agree on one other than `not`.
    async fn leader(&self, among: &[usize], not: Option<u64>) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for &i in among {
                let status = MaintenanceClient::new(self.channels[i].clone()).status(StatusRequest {}).await;
                seen.push(status.map_or(0, |s| s.into_inner().leader));
            }
            if seen[0] != 0 && Some(seen[0]) != not && seen.iter().all(|l| *l == seen[0]) {
                return seen[0];
            }
            assert!(tokio::time::Instant::now() < deadline, "no agreed leader among {among:?}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn index_of(&self, member_id: u64) -> usize {
        self.servers.iter().position(|s| s.member_id() == member_id).unwrap()
    }
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(OP_TIMEOUT);
    request
}

/// One client: puts and linearizable gets, each sent to the members in turn (followers forward
/// writes to the leader); an operation that fails or times out has an unknown outcome.
async fn client(channels: Vec<Channel>, history: Arc<History>, id: u64, acked: Arc<[std::sync::atomic::AtomicU64; 2]>) {
    for seq in 0..OPS_PER_CLIENT {
        // The key changes every other operation, the member every operation: each key is
        // written and read through every member.
        let key = format!("k{}", (id * 5 + seq / 2) % 3);
        let mut kv = KvClient::new(channels[((id + seq) % channels.len() as u64) as usize].clone());
        let (op, result) = if seq % 2 == 0 {
            let value = format!("c{id}-{seq}");
            let op = history.invoke(id, Op::put(key.clone(), value.clone()));
            let put = PutRequest { key: key.into_bytes(), value: value.into_bytes(), ..Default::default() };
            let done = tokio::time::timeout(OP_TIMEOUT * 2, kv.put(timed(put))).await;
            (op, matches!(done, Ok(Ok(_))).then_some(Output::Ack))
        } else {
            let op = history.invoke(id, Op::get(key.clone()));
            let get = RangeRequest { key: key.into_bytes(), ..Default::default() };
            let done = tokio::time::timeout(OP_TIMEOUT * 2, kv.range(timed(get))).await;
            let read = done.ok().and_then(Result::ok).map(|r| r.into_inner().kvs.first().map(|kv| kv.value.clone()));
            (op, read.map(Output::Read))
        };
        let outcome = match result {
            Some(output) => {
                acked[usize::from(matches!(output, Output::Read(_)))]
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Outcome::Ok(output)
            }
            None => {
                // Back off as real clients do, so a fault does not use up the run in failures.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Outcome::Unknown
            }
        };
        history.complete(op, outcome);
    }
}

/// Runs the scenario: answers whether the history was linearizable, after checking that enough
/// operations succeeded to judge and that the healed members converge.
pub async fn leader_cut_off() -> Result<(), ferrocd_lincheck::Violation> {
    let cluster = start().await;
    let all: Vec<usize> = (0..MEMBERS).collect();
    let first = cluster.leader(&all, None).await;
    let history = Arc::new(History::new());
    let acked = Arc::new([std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)]);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(cluster.channels.clone(), Arc::clone(&history), id, Arc::clone(&acked))))
        .collect();

    // Let the clients run, then cut the leader off from the other two: they elect a new one
    // while the old one, still answering clients, can commit nothing.
    let progress = |n: u64| {
        let acked = Arc::clone(&acked);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while acked.iter().map(|a| a.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>() < n {
                assert!(tokio::time::Instant::now() < deadline, "the clients stopped making progress");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    progress(30).await;
    cluster.router.isolate(first);
    let rest: Vec<usize> = all.iter().copied().filter(|i| *i != cluster.index_of(first)).collect();
    // The members cut off from the leader elect another.
    cluster.leader(&rest, Some(first)).await;
    progress(90).await;
    cluster.router.heal();
    for c in clients {
        c.await.unwrap();
    }

    let [puts, gets] = &*acked;
    let (puts, gets) =
        (puts.load(std::sync::atomic::Ordering::Relaxed), gets.load(std::sync::atomic::Ordering::Relaxed));
    assert!(puts >= 20 && gets >= 20, "too few operations succeeded to judge: {puts} puts, {gets} gets");
    let verdict = check(&history);

    // Healed, every member converges on the same keyspace.
    cluster.leader(&all, None).await;
    let mut contents = BTreeMap::new();
    for (i, channel) in cluster.channels.iter().enumerate() {
        let all_keys = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        let resp = KvClient::new(channel.clone()).range(all_keys).await.unwrap().into_inner();
        contents.insert(i, resp.kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect::<Vec<_>>());
    }
    assert!(contents.values().all(|c| *c == contents[&0]), "members disagree: {contents:?}");
    for server in cluster.servers {
        server.shutdown().await.unwrap();
    }
    verdict
}
