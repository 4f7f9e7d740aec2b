//! etcd's corruption checks: members compare the hash of their keyspace (HashKV) at one
//! revision, asked over the peer listener (`Maintenance.HashKV`, which a member answers another
//! member without auth, as it answers Raft's messages there).
//!
//! - **Initial** (`--experimental-initial-corrupt-check`): before serving clients, a member
//!   with data compares its hash with every peer's at its revision; on a mismatch (same
//!   compacted revision, another hash) it refuses to start.
//! - **Periodic** (`--corrupt-check-time`): the leader hashes, asks every member at that
//!   revision, passes the read barrier and hashes again; it raises CORRUPT for the first member
//!   that disagrees (itself if its own hash moved under an unchanged revision, a member ahead
//!   of it, one compacted further, or one with another hash at the same compaction).
//! - **After compactions** (`--experimental-compact-hash-check-enabled`): when the compacted
//!   revision has moved, the leader compares every member's hash at it; members outside a
//!   majority with one hash get CORRUPT, and when no majority agrees the alarm names member 0
//!   (the whole cluster), as etcd's. etcd compares hashes it stored while compacting; every
//!   ferrocd member can hash its state at the compacted revision, so the leader asks for them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::Engine;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{AlarmType, HashKvRequest, HashKvResponse};
use tokio::sync::watch;

use crate::error::ServerError;
use crate::services::Shared;

/// A member's answer, by member ID.
type Answers = BTreeMap<u64, HashKvResponse>;

/// This member's HashKV at `revision` (0: the current one).
async fn local_hash<E: Engine>(shared: &Arc<Shared<E>>, revision: i64) -> Result<HashKvResponse, ServerError> {
    let kv = Arc::clone(&shared.kv);
    let h = tokio::task::spawn_blocking(move || kv.hash_kv(revision))
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))?
        .map_err(ServerError::from)?;
    Ok(HashKvResponse {
        header: shared.header(shared.kv.current_revision()),
        hash: h.hash,
        compact_revision: h.compact_revision,
        hash_revision: h.revision,
    })
}

/// Every other member's HashKV at `revision`; members that do not answer (down, compacted
/// past it, behind it) are left out with a warning.
async fn peer_hashes<E: Engine>(shared: &Arc<Shared<E>>, revision: i64) -> Answers {
    let status = shared.replica.status();
    let members = status.members.voters.iter().chain(&status.members.learners);
    let mut answers = Answers::new();
    for (id, node) in members.filter(|(id, _)| **id != shared.member_id) {
        let call = async {
            let channel = shared.peers.channel(&node.urls)?;
            let resp = MaintenanceClient::new(channel).hash_kv(HashKvRequest { revision }).await?;
            Ok::<_, tonic::Status>(resp.into_inner())
        };
        match tokio::time::timeout(shared.request_timeout, call).await {
            Ok(Ok(resp)) => {
                answers.insert(*id, resp);
            }
            Ok(Err(e)) => {
                tracing::warn!(peer = %format!("{id:x}"), error = %e.message(), "cannot fetch the hash of a peer")
            }
            Err(_) => tracing::warn!(peer = %format!("{id:x}"), "timed out fetching the hash of a peer"),
        }
    }
    answers
}

/// The initial check: `Err` names the inconsistency when a peer at the same compaction has
/// another hash.
///
/// # Errors
/// etcd's `<id> found data inconsistency with peers`; this member cannot hash its keyspace.
pub async fn initial_check<E: Engine>(shared: &Arc<Shared<E>>) -> anyhow::Result<()> {
    let id = format!("{:x}", shared.member_id);
    let local = local_hash(shared, 0).await.map_err(|e| anyhow::anyhow!("{id} failed to fetch hash ({e})"))?;
    tracing::info!(local_member_id = %id, "starting initial corruption check");
    let mut mismatch = false;
    for (peer, answer) in peer_hashes(shared, local.hash_revision).await {
        if answer.compact_revision != local.compact_revision {
            tracing::warn!(peer = %format!("{peer:x}"), "cannot compare the hash of a peer with another compacted revision");
        } else if answer.hash != local.hash {
            tracing::error!(peer = %format!("{peer:x}"), local = local.hash, remote = answer.hash, revision = local.hash_revision, "found different hash values from a peer");
            mismatch = true;
        }
    }
    if mismatch {
        anyhow::bail!("{id} found data inconsistency with peers");
    }
    tracing::info!(local_member_id = %id, "initial corruption checking passed; no corruption was found");
    Ok(())
}

/// The member the periodic check finds corrupt, if any.
fn periodic_verdict(me: u64, first: &HashKvResponse, second: &HashKvResponse, peers: &Answers) -> Option<u64> {
    if second.hash != first.hash
        && second.hash_revision == first.hash_revision
        && second.compact_revision == first.compact_revision
    {
        return Some(me);
    }
    let rev2 = second.header.as_ref().map_or(0, |h| h.revision);
    peers.iter().find_map(|(id, p)| {
        let ahead = p.header.as_ref().is_some_and(|h| h.revision > rev2);
        let compacted_further = p.compact_revision > second.compact_revision;
        let differs = p.compact_revision == first.compact_revision && p.hash != first.hash;
        (ahead || compacted_further || differs).then_some(*id)
    })
}

/// The members the compaction check finds corrupt: those outside the majority that agrees, or
/// member 0 (the whole cluster) when no majority does; none when all agree.
fn compaction_verdict(answers: &Answers) -> Vec<u64> {
    let mut groups: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (id, a) in answers {
        groups.entry(a.hash).or_default().push(*id);
    }
    if groups.len() <= 1 {
        return Vec::new();
    }
    let quorum = answers.len() / 2 + 1;
    match groups.values().find(|g| g.len() >= quorum) {
        Some(majority) => answers.keys().filter(|id| !majority.contains(id)).copied().collect(),
        None => vec![0],
    }
}

/// Raises CORRUPT for `member`.
async fn raise<E: Engine>(shared: &Arc<Shared<E>>, member: u64) {
    tracing::error!(member = %format!("{member:x}"), "raising the CORRUPT alarm");
    if let Err(e) = shared.replica.raise_alarm_for(member, AlarmType::Corrupt, shared.request_timeout).await {
        tracing::warn!(error = %e, "could not raise the CORRUPT alarm");
    }
}

/// One periodic check, on the leader.
async fn periodic<E: Engine>(shared: &Arc<Shared<E>>) -> Result<(), ServerError> {
    let first = local_hash(shared, 0).await?;
    let peers = peer_hashes(shared, first.hash_revision).await;
    shared.read_barrier().await?;
    let second = local_hash(shared, 0).await?;
    if let Some(member) = periodic_verdict(shared.member_id, &first, &second, &peers) {
        raise(shared, member).await;
    }
    Ok(())
}

/// One compaction check, on the leader, when the compacted revision is past `checked`;
/// answers the revision checked.
async fn after_compaction<E: Engine>(shared: &Arc<Shared<E>>, checked: i64) -> Result<i64, ServerError> {
    let compacted = shared.kv.compact_revision();
    if compacted <= checked || compacted <= 0 {
        return Ok(checked);
    }
    let mut answers = peer_hashes(shared, compacted).await;
    answers.retain(|_, a| a.compact_revision == compacted);
    answers.insert(shared.member_id, local_hash(shared, compacted).await?);
    let corrupt = compaction_verdict(&answers);
    if corrupt.is_empty() {
        return Ok(compacted);
    }
    tracing::error!(revision = compacted, "detected compaction hash mismatch");
    for member in corrupt {
        raise(shared, member).await;
    }
    Ok(compacted)
}

/// Runs the periodic and compaction checks (each when its interval is set) while this member
/// leads, until `stopped`.
pub async fn run<E: Engine>(
    shared: Arc<Shared<E>>,
    periodic_every: Option<Duration>,
    compaction_every: Option<Duration>,
    mut stopped: watch::Receiver<bool>,
) {
    let tick = |every: Option<Duration>| {
        let mut interval = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    };
    let (mut periodic_tick, mut compaction_tick) = (tick(periodic_every), tick(compaction_every));
    // The first tick of an interval is immediate; the checks start one interval in.
    periodic_tick.tick().await;
    compaction_tick.tick().await;
    let mut checked = shared.kv.compact_revision();
    loop {
        let leads = || shared.replica.leader() == Some(shared.member_id);
        tokio::select! {
            _ = stopped.changed() => return,
            _ = periodic_tick.tick(), if periodic_every.is_some() => {
                if leads() && let Err(e) = periodic(&shared).await {
                    tracing::warn!(error = %e, "the periodic corruption check failed");
                }
            }
            _ = compaction_tick.tick(), if compaction_every.is_some() => {
                if leads() {
                    match after_compaction(&shared, checked).await {
                        Ok(rev) => checked = rev,
                        Err(e) => tracing::warn!(error = %e, "the compaction hash check failed"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::ResponseHeader;

    fn answer(revision: i64, hash: u32, compact: i64) -> HashKvResponse {
        HashKvResponse {
            header: Some(ResponseHeader { revision, ..Default::default() }),
            hash,
            compact_revision: compact,
            hash_revision: revision,
        }
    }

    #[test]
    fn the_periodic_check_names_the_first_member_that_disagrees() {
        let me = answer(10, 7, 2);
        let agree: Answers = [(2, answer(10, 7, 2)), (3, answer(9, 7, 2))].into();
        assert_eq!(periodic_verdict(1, &me, &me, &agree), None);
        let other_hash: Answers = [(2, answer(10, 7, 2)), (3, answer(10, 8, 2))].into();
        assert_eq!(periodic_verdict(1, &me, &me, &other_hash), Some(3));
        let ahead: Answers = [(2, answer(11, 7, 2))].into();
        assert_eq!(periodic_verdict(1, &me, &me, &ahead), Some(2));
        let compacted_further: Answers = [(2, answer(10, 9, 5))].into();
        assert_eq!(periodic_verdict(1, &me, &me, &compacted_further), Some(2));
        // This member's own hash moved with the revision unchanged.
        assert_eq!(periodic_verdict(1, &me, &answer(10, 8, 2), &agree), Some(1));
    }

    #[test]
    fn the_compaction_check_names_the_minority_or_the_whole_cluster() {
        let all: Answers = [(1, answer(5, 1, 5)), (2, answer(5, 1, 5)), (3, answer(5, 1, 5))].into();
        assert!(compaction_verdict(&all).is_empty());
        let one_off: Answers = [(1, answer(5, 1, 5)), (2, answer(5, 2, 5)), (3, answer(5, 1, 5))].into();
        assert_eq!(compaction_verdict(&one_off), [2]);
        let split: Answers = [(1, answer(5, 1, 5)), (2, answer(5, 2, 5))].into();
        assert_eq!(compaction_verdict(&split), [0]);
    }
}
