//! The `snapshot` pseudo-workload: a store filled with `--snapshot-mib` MiB of random values,
//! then one `Maintenance.Snapshot` streamed to a file as `etcdctl snapshot save` does — its
//! time, its size, and the server's resident memory before it and at its peak during it.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::request_op::Request as OpRequest;
use ferrocd_proto::etcdserverpb::{PutRequest, RequestOp, SnapshotRequest, TxnRequest};

use crate::{load, procfs};

/// Bytes of one value.
const VALUE_BYTES: usize = 64 * 1024;
/// Values per transaction (1 MiB, under etcd's request limit).
const PER_TXN: u64 = 16;

/// Writes `mib` MiB of random values under distinct keys, from 8 clients.
pub async fn fill(url: &str, mib: u64) -> anyhow::Result<()> {
    let txns = mib * (1 << 20) / VALUE_BYTES as u64 / PER_TXN;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in load::connect(url, 2).await?.into_iter().cycle().take(8) {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let mut rng = fastrand::Rng::new();
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= txns {
                    return Ok::<_, anyhow::Error>(());
                }
                let success = (0..PER_TXN)
                    .map(|i| {
                        let mut value = vec![0u8; VALUE_BYTES];
                        rng.fill(&mut value);
                        let key = format!("/snapshot/{:08}", t * PER_TXN + i).into_bytes();
                        RequestOp {
                            request: Some(OpRequest::RequestPut(PutRequest { key, value, ..Default::default() })),
                        }
                    })
                    .collect();
                client.txn(TxnRequest { success, ..Default::default() }).await.context("filling the store")?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// What one snapshot took.
#[derive(Debug)]
pub struct Saved {
    pub seconds: f64,
    pub bytes: u64,
    /// The server's resident memory at its highest while it sent the snapshot, in MiB.
    pub peak_rss_mib: f64,
}

/// Streams a snapshot of the server at `url` (process `pid`) into `path`, fsynced, sampling
/// the server's memory every 20 ms.
pub async fn save(url: &str, pid: u32, path: &Path) -> anyhow::Result<Saved> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?.connect().await?;
    let mut client = MaintenanceClient::new(channel).max_decoding_message_size(usize::MAX);
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let kib = (procfs::rss_mib(pid).unwrap_or(0.0) * 1024.0) as u64;
                peak.fetch_max(kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut stream = client.snapshot(SnapshotRequest {}).await?.into_inner();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = 0u64;
    while let Some(message) = stream.message().await? {
        bytes += message.blob.len() as u64;
        file.write_all(&message.blob)?;
    }
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    Ok(Saved { seconds, bytes, peak_rss_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0 })
}
