//! Backups in etcd's format: the member's state as etcd's backend (`Maintenance.Snapshot`,
//! `Maintenance.Hash`), and a data directory restored from such a snapshot — ferrocd's or a
//! real etcd's (`ferrocdutl snapshot restore`).
//!
//! A restored data directory holds the snapshot's keyspace, leases and users, the member's
//! IDs, and the membership of the new cluster. Its first start bootstraps Raft with that
//! membership (whatever `--initial-cluster` says then) and, once this member's attributes are
//! applied, snapshots and purges its log: the restored state never came through the log, so a
//! member that joins later must be sent a snapshot rather than replay the log from its start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ferrocd_backup::schema::Member;
use ferrocd_backup::{BackendHash, Cluster, RestoreOptions, Restored};
use ferrocd_engine::{Engine, ReadView};
use ferrocd_proto::etcdserverpb::AlarmType;

use crate::config::{Config, ETCD_VERSION};
use crate::error::ServerError;
use crate::ids;
use crate::services::Shared;
use crate::storage;

/// What etcd's backend holds beyond this member's engine, as the member knows it now.
///
/// # Errors
/// A storage failure reading the members' attributes.
pub fn cluster_facts<E: Engine>(shared: &Shared<E>, applied_index: u64) -> Result<Cluster, ServerError> {
    let raft = shared.replica.status();
    let attrs = shared.replica.member_attrs()?;
    let member = |id: &u64, urls: &Vec<String>, is_learner: bool| {
        let a = attrs.get(id);
        Member {
            id: *id,
            peer_urls: urls.clone(),
            is_learner,
            name: a.map(|a| a.name.clone()).unwrap_or_default(),
            client_urls: a.map(|a| a.client_urls.clone()).unwrap_or_default(),
        }
    };
    let mut members: Vec<Member> = raft.members.voters.iter().map(|(id, n)| member(id, &n.urls, false)).collect();
    members.extend(raft.members.learners.iter().map(|(id, n)| member(id, &n.urls, true)));
    Ok(Cluster {
        members,
        alarms: shared.replica.alarms().list(AlarmType::None),
        version: ETCD_VERSION.to_string(),
        applied_index,
        term: raft.term,
    })
}

/// The index of the last entry applied into `view`.
fn applied_index(view: &impl ReadView) -> Result<u64, ServerError> {
    Ok(storage::read_u64(view, storage::APPLIED_INDEX).map_err(|e| ServerError::Storage(e.to_string()))?.unwrap_or(0))
}

/// Writes the member's state, at one point in time, as etcd's backend into a bbolt file at
/// `path`; answers its size.
///
/// # Errors
/// Storage failures.
pub fn write_snapshot<E: Engine>(shared: &Shared<E>, path: &Path) -> Result<u64, ServerError> {
    let engine = Arc::clone(shared.kv.engine());
    let view = engine.snapshot();
    let cluster = cluster_facts(shared, applied_index(&view)?)?;
    ferrocd_backup::write_db(&view, &cluster, path).map_err(|e| ServerError::Storage(e.to_string()))
}

/// etcd's `Maintenance.Hash`: CRC-32C of the member's state as etcd's backend, less the
/// records that differ between members with the same data.
///
/// # Errors
/// Storage failures.
pub fn backend_hash<E: Engine>(shared: &Shared<E>) -> Result<u32, ServerError> {
    let engine = Arc::clone(shared.kv.engine());
    let view = engine.snapshot();
    let cluster = cluster_facts(shared, applied_index(&view)?)?;
    let mut hash = BackendHash::default();
    ferrocd_backup::export(&view, &cluster, &mut hash).map_err(|e| ServerError::Storage(e.to_string()))?;
    Ok(hash.finish())
}

/// etcdutl's `snapshot restore` flags that say what to build.
#[derive(Debug, Clone)]
pub struct RestoreRequest<'a> {
    pub snapshot: &'a Path,
    /// The new member, as its server flags would give it (`--name`, `--data-dir`,
    /// `--initial-cluster`, `--initial-cluster-token`, `--initial-advertise-peer-urls`).
    pub config: &'a Config,
    pub skip_hash_check: bool,
    pub options: RestoreOptions,
}

/// Builds a data directory for `request.config`'s member from the snapshot: every revision
/// kept, the new cluster's membership recorded for its first start.
///
/// # Errors
/// etcdutl's errors (a data directory that is not empty, a checksum missing or wrong, options
/// that do not go together, a member not in its cluster); a file that is not etcd's backend.
pub fn restore(request: &RestoreRequest<'_>) -> anyhow::Result<Restored> {
    restore_reporting(request, &|_| {})
}

/// [`restore`], calling `progress` with what was written so far as it goes (see
/// [`ferrocd_backup::restore_reporting`]).
///
/// # Errors
/// [`restore`]'s.
pub fn restore_reporting(request: &RestoreRequest<'_>, progress: &dyn Fn(&Restored)) -> anyhow::Result<Restored> {
    let config = request.config;
    request.options.validate()?;
    config.validate()?;
    let data_dir = config.data_dir();
    if std::fs::read_dir(&data_dir).map(|mut d| d.next().is_some()).unwrap_or(data_dir.exists()) {
        anyhow::bail!("data-dir {:?} not empty or could not be read", data_dir.display().to_string());
    }
    ferrocd_backup::snapshot_file::verify(request.snapshot, request.skip_hash_check)?;
    let db = ferrocd_bbolt::Reader::open(request.snapshot)?;
    db.check().map_err(|e| anyhow::anyhow!("snapshot file integrity check failed: {e}"))?;
    let token = &config.initial_cluster_token;
    let members: BTreeMap<u64, Vec<String>> =
        config.initial_members()?.into_iter().map(|(_, urls)| (ids::member_id(&urls, token), urls)).collect();
    let member_id = ids::member_id(&config.advertise_peer_urls(), token);
    let cluster_id = ids::cluster_id(&members.keys().copied().collect::<Vec<_>>());
    let engine = storage::open_engine(&data_dir)?;
    let restored = ferrocd_backup::restore_reporting(&db, &engine, request.options, &mut |r| progress(r))?;
    storage::identity(&engine, (member_id, cluster_id))?;
    storage::record_restored_members(&engine, &members)?;
    Ok(restored)
}
