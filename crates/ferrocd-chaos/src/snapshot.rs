//! Backups under faults: while each history's fault is on, a member is asked for a snapshot in
//! etcd's format (as root, as `etcdctl snapshot save` asks). A snapshot that cannot be taken
//! then is no violation (its member may be cut off or killed); one that is taken must be a
//! point of the agreed history:
//!
//! - the stream ends with the SHA-256 of everything before it, and the file passes bbolt's
//!   consistency check;
//! - restored into a fresh store, its events under the history's prefix are exactly the agreed
//!   history's events up to the snapshot's revision — nothing missing, nothing extra, nothing
//!   from a write that was not committed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferrocd_engine::{Bucket, MemEngine};
use ferrocd_mvcc::KvStore;
use ferrocd_proto::etcdserverpb::SnapshotRequest;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::mvccpb::Event;

use crate::auth::Authed;
use crate::check::Findings;

/// A snapshot saved to a file, from host `slot`.
#[derive(Debug)]
pub struct Taken {
    pub slot: usize,
    pub path: PathBuf,
}

/// Asks host `slot` (through `channel`, as root) for a snapshot into `dir`; `None` when it
/// could not be taken within 20 s.
pub async fn take(slot: usize, channel: Authed, dir: &Path) -> Option<Taken> {
    let path = dir.join(format!("snapshot-host{slot}.db"));
    let save = async {
        let mut client = MaintenanceClient::new(channel).max_decoding_message_size(usize::MAX);
        let mut stream = client.snapshot(SnapshotRequest {}).await?.into_inner();
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        while let Some(message) = stream.message().await? {
            file.write_all(&message.blob)?;
        }
        file.flush()?;
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(20), save).await {
        Ok(Ok(())) => Some(Taken { slot, path }),
        Ok(Err(e)) => {
            eprintln!("    (a snapshot from host {slot} was not taken during the fault: {e:#})");
            None
        }
        Err(_) => None,
    }
}

/// Checks `taken` against `truth`, the agreed events under `prefix` from `from` on; returns a
/// phrase for the history's summary line.
pub fn check(taken: &Taken, prefix: &[u8], from: i64, truth: &[Event], findings: &mut Findings) -> String {
    match check_one(taken, prefix, from, truth) {
        Ok((revision, events)) => {
            format!(", a snapshot from host {} at revision {revision} holding {events} history events", taken.slot)
        }
        Err(e) => {
            findings.violation(format!("the snapshot from host {}: {e:#}", taken.slot));
            String::new()
        }
    }
}

/// The snapshot's revision and how many of the history's events it holds.
fn check_one(taken: &Taken, prefix: &[u8], from: i64, truth: &[Event]) -> anyhow::Result<(i64, usize)> {
    ferrocd_backup::snapshot_file::verify(&taken.path, false).context("its checksum")?;
    ferrocd_backup::status(&taken.path).context("its consistency")?;
    let db = ferrocd_bbolt::Reader::open(&taken.path)?;
    let mut buckets: Vec<Bucket> = KvStore::<MemEngine>::BUCKETS.to_vec();
    buckets.extend_from_slice(ferrocd_lease::Lessor::BUCKETS);
    buckets.extend_from_slice(&ferrocd_auth::BUCKETS);
    let engine = Arc::new(MemEngine::new(&buckets));
    let restored = ferrocd_backup::restore(&db, &*engine, ferrocd_backup::RestoreOptions::default())?;
    let kv = KvStore::open(engine, ferrocd_mvcc::Options::default())?;
    let upto = restored.revision;
    if upto < from {
        return Ok((upto, 0));
    }
    let events = match kv.events(from, upto, usize::MAX) {
        Ok((events, _)) => events,
        // Compacted past the history's start: nothing of it to compare.
        Err(ferrocd_mvcc::Error::Compacted) => return Ok((upto, 0)),
        Err(e) => return Err(e.into()),
    };
    let ours: Vec<&Event> =
        events.iter().filter(|e| e.kv.as_ref().is_some_and(|kv| kv.key.starts_with(prefix))).collect();
    let agreed: Vec<&Event> =
        truth.iter().filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= upto)).collect();
    if ours != agreed {
        let at = ours.iter().zip(&agreed).position(|(a, b)| a != b).unwrap_or(ours.len().min(agreed.len()));
        anyhow::bail!(
            "at revision {upto} it holds {} events of the history, the agreed history {}; first difference at event {at}: {:?} / {:?}",
            ours.len(),
            agreed.len(),
            ours.get(at),
            agreed.get(at)
        );
    }
    Ok((upto, ours.len()))
}
