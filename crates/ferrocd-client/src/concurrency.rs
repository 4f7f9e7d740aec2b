//! etcd's concurrency recipes, run by this client on KV, Watch and Lease (as Go's
//! `clientv3/concurrency` runs them): a distributed lock ([`Client::lock`], [`Client::unlock`])
//! and a leader election ([`Client::campaign`], [`Client::proclaim`], [`Client::leader`],
//! [`Client::observe`], [`Client::resign`]). ferrocd's Lock and Election services are these
//! same recipes, run by the server for its callers.
//!
//! Each contender puts a key `<name>/<lease in hex>` attached to its lease; the contender with
//! the oldest key holds the lock or leads; the others wait, with a watch, never polling, for
//! the deletion of the key just ahead of theirs. A contender that gives up (its call dropped)
//! withdraws its key.
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! let lease = client.lease_grant(30, None).await?.id;
//! let held = client.lock("jobs/nightly", Some(lease)).await?;
//! // ... the critical section ...
//! client.unlock(held.key).await?;
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use ferrocd_proto::etcdserverpb::ResponseHeader;
use ferrocd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use ferrocd_proto::etcdserverpb::response_op::Response as OpResponse;
use ferrocd_proto::etcdserverpb::{RangeResponse, TxnResponse};
use ferrocd_proto::mvccpb::KeyValue;
use ferrocd_proto::mvccpb::event::EventType;
pub use ferrocd_proto::v3electionpb::{CampaignResponse, LeaderKey, LeaderResponse, ProclaimResponse, ResignResponse};
pub use ferrocd_proto::v3lockpb::{LockResponse, UnlockResponse};
use tokio::sync::mpsc;

use crate::kv::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use crate::watch::WatchOptions;
use crate::{Client, Error, Result};

/// The TTL of the lease a lock or campaign without one gets (etcd's session default); it is not
/// kept alive.
pub const SESSION_TTL: i64 = 60;

/// The recipes' own errors, with etcd's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipeError {
    /// The contender's key is gone (its lease expired) before it got its turn.
    #[error("mutex: session is expired")]
    SessionExpired,
    /// A proclamation or resignation by a contender that does not lead.
    #[error("election: not leader")]
    NotLeader,
    /// The election has no leader.
    #[error("election: no leader")]
    NoLeader,
}

/// `<name>/`: the prefix of a lock's or an election's keys.
fn with_slash(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// `<prefix><lease in hex>`: a contender's key.
fn contender_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// The oldest key under a prefix (the lock holder, the leader).
fn first_created() -> GetOptions {
    GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1)
}

fn range(resp: &TxnResponse, i: usize) -> Option<&RangeResponse> {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(r)) => Some(r),
        _ => None,
    }
}

/// Where a contender stands after queueing.
struct Queued {
    /// Its key's create revision.
    rev: i64,
    /// Its key's value, when the key existed already.
    existing: Option<Vec<u8>>,
    /// The oldest key under the prefix.
    owner: Option<KeyValue>,
}

impl Client {
    /// The lease to hold a key with: the caller's, or a new one of [`SESSION_TTL`].
    async fn session(&self, lease: Option<i64>) -> Result<i64> {
        match lease {
            Some(lease) if lease != 0 => Ok(lease),
            _ => Ok(self.lease_grant(SESSION_TTL, None).await?.id),
        }
    }

    /// Creates `key` with `value` under `lease` unless it exists.
    async fn enqueue(&self, prefix: &[u8], key: &[u8], value: &[u8], lease: i64) -> Result<Queued> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
                TxnOp::get(prefix, Some(first_created())),
            ])
            .or_else([TxnOp::get(key, None), TxnOp::get(prefix, Some(first_created()))]);
        let resp = self.txn(txn).await?;
        let owner = range(&resp, 1).and_then(|r| r.kvs.first().cloned());
        if resp.succeeded {
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            return Ok(Queued { rev, existing: None, owner });
        }
        let mine = range(&resp, 0).and_then(|r| r.kvs.first().cloned()).ok_or(RecipeError::SessionExpired)?;
        Ok(Queued { rev: mine.create_revision, existing: Some(mine.value), owner })
    }

    /// Waits until no key under `prefix` created at or below `max_create_rev` is left: for the
    /// newest such key, waits for its deletion; again until none is left.
    async fn wait_deletes(&self, prefix: &[u8], max_create_rev: i64) -> Result<()> {
        loop {
            let options = first_created()
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_max_create_revision(max_create_rev);
            let resp = self.get(prefix, Some(options)).await?;
            let Some(ahead) = resp.kvs.first() else { return Ok(()) };
            let rev = resp.header.map_or(0, |h| h.revision);
            self.wait_delete(&ahead.key, rev + 1).await?;
        }
    }

    /// Waits for the deletion of `key` at `from` or later.
    async fn wait_delete(&self, key: &[u8], from: i64) -> Result<()> {
        let options = WatchOptions::new().with_start_revision(from).with_no_put();
        let mut watch = self.watch(key, Some(options)).await?;
        while let Some(resp) = watch.message().await? {
            if resp.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                return Ok(());
            }
        }
        Err(Error::WatchCanceled { reason: String::new(), compact_revision: 0 })
    }

    /// Waits until the key created at `rev` under `prefix` is the oldest; if that fails or the
    /// call is dropped, the key is deleted, as etcd's clients do, so a contender that gave up
    /// does not hold its place.
    async fn wait_turn(&self, prefix: &[u8], key: &[u8], queued: &Queued) -> Result<()> {
        if queued.owner.as_ref().is_none_or(|o| o.create_revision == queued.rev) {
            return Ok(());
        }
        let mut guard = Withdraw { client: Some(self.clone()), key: key.to_vec() };
        self.wait_deletes(prefix, queued.rev - 1).await?;
        guard.client = None;
        Ok(())
    }

    /// The header of a read of `key`, failing when the key is gone (its lease expired).
    async fn still_held(&self, key: &[u8]) -> Result<Option<ResponseHeader>> {
        let resp = self.get(key, None).await?;
        if resp.kvs.is_empty() { Err(RecipeError::SessionExpired.into()) } else { Ok(resp.header) }
    }

    /// Acquires the lock `name`, waiting for it as long as it takes, with its key attached to
    /// `lease` (or to a new lease of [`SESSION_TTL`]). The answer's key is the lock's
    /// ownership: [`Client::unlock`] it, or let the lease go.
    ///
    /// # Errors
    /// [`RecipeError::SessionExpired`] when the lease expired while waiting; etcd's errors.
    pub async fn lock(&self, name: impl AsRef<[u8]>, lease: Option<i64>) -> Result<LockResponse> {
        let lease = self.session(lease).await?;
        let prefix = with_slash(name.as_ref());
        let key = contender_key(&prefix, lease);
        let queued = self.enqueue(&prefix, &key, b"", lease).await?;
        self.wait_turn(&prefix, &key, &queued).await?;
        let header = self.still_held(&key).await?;
        Ok(LockResponse { header, key })
    }

    /// Releases the lock held by `key` (the key [`Client::lock`] answered).
    ///
    /// # Errors
    /// etcd's errors.
    pub async fn unlock(&self, key: impl Into<Vec<u8>>) -> Result<UnlockResponse> {
        let header = self.delete(key, None).await?.header;
        Ok(UnlockResponse { header })
    }

    /// Campaigns in election `name` with `value`, waiting until this contender leads; its key is
    /// attached to `lease` (or to a new lease of [`SESSION_TTL`]). Campaigning again with the
    /// same lease and another value proclaims that value.
    ///
    /// # Errors
    /// [`RecipeError::NotLeader`] when the lease expired while waiting; etcd's errors.
    pub async fn campaign(
        &self,
        name: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: Option<i64>,
    ) -> Result<CampaignResponse> {
        let (name, value) = (name.into(), value.into());
        let lease = self.session(lease).await?;
        let prefix = with_slash(&name);
        let key = contender_key(&prefix, lease);
        let queued = self.enqueue(&prefix, &key, &value, lease).await?;
        let leader = LeaderKey { name, key: key.clone(), rev: queued.rev, lease };
        if queued.existing.as_ref().is_some_and(|v| *v != value) {
            self.proclaim(&leader, value).await?;
        }
        self.wait_turn(&prefix, &key, &queued).await?;
        let header = self.still_held(&key).await.map_err(|_| Error::from(RecipeError::NotLeader))?;
        Ok(CampaignResponse { header, leader: Some(leader) })
    }

    /// Puts `value` on the leader's key, if `leader` still leads.
    ///
    /// # Errors
    /// [`RecipeError::NotLeader`]; etcd's errors.
    pub async fn proclaim(&self, leader: &LeaderKey, value: impl Into<Vec<u8>>) -> Result<ProclaimResponse> {
        let txn = Txn::new()
            .when([Compare::create_revision(leader.key.clone(), CompareOp::Equal, leader.rev)])
            .and_then([TxnOp::put(leader.key.clone(), value, Some(PutOptions::new().with_lease(leader.lease)))]);
        let resp = self.txn(txn).await?;
        if resp.succeeded { Ok(ProclaimResponse { header: resp.header }) } else { Err(RecipeError::NotLeader.into()) }
    }

    /// The leader of election `name`: its key and value.
    ///
    /// # Errors
    /// [`RecipeError::NoLeader`]; etcd's errors.
    pub async fn leader(&self, name: impl AsRef<[u8]>) -> Result<LeaderResponse> {
        let resp = self.get(with_slash(name.as_ref()), Some(first_created())).await?;
        let kv = resp.kvs.into_iter().next().ok_or(RecipeError::NoLeader)?;
        Ok(LeaderResponse { header: resp.header, kv: Some(kv) })
    }

    /// Gives up leadership (a no-op when `leader` does not lead any more).
    ///
    /// # Errors
    /// etcd's errors.
    pub async fn resign(&self, leader: &LeaderKey) -> Result<ResignResponse> {
        let txn = Txn::new()
            .when([Compare::create_revision(leader.key.clone(), CompareOp::Equal, leader.rev)])
            .and_then([TxnOp::delete(leader.key.clone(), Some(DeleteOptions::new()))]);
        Ok(ResignResponse { header: self.txn(txn).await?.header })
    }

    /// The leader of election `name` now and at each change (a new value, a new leader), until
    /// the receiver is dropped.
    pub fn observe(&self, name: impl AsRef<[u8]>) -> mpsc::Receiver<Result<LeaderResponse>> {
        let (tx, rx) = mpsc::channel(16);
        let (client, prefix) = (self.clone(), with_slash(name.as_ref()));
        tokio::spawn(async move {
            let gone = tx.clone();
            tokio::select! {
                result = client.follow(prefix, &tx) => {
                    if let Err(e) = result {
                        let _ = tx.send(Err(e)).await;
                    }
                }
                () = gone.closed() => {}
            }
        });
        rx
    }

    /// Sends the election's leader and each change of it to `tx` until it is closed.
    async fn follow(&self, prefix: Vec<u8>, tx: &mpsc::Sender<Result<LeaderResponse>>) -> Result<()> {
        loop {
            let resp = self.get(prefix.clone(), Some(first_created())).await?;
            let from = resp.header.as_ref().map_or(0, |h| h.revision) + 1;
            let (leader, header) = match resp.kvs.into_iter().next() {
                Some(kv) => (kv, resp.header),
                None => match self.next_put(&prefix, from).await? {
                    Some(found) => found,
                    None => return Ok(()),
                },
            };
            if tx.send(Ok(LeaderResponse { header, kv: Some(leader.clone()) })).await.is_err() {
                return Ok(());
            }
            // The leader's key until it is deleted.
            let options = WatchOptions::new().with_start_revision(leader.mod_revision + 1);
            let mut watch = self.watch(leader.key.clone(), Some(options)).await?;
            'leader: while let Some(resp) = watch.message().await? {
                for event in resp.events {
                    if event.r#type == EventType::Delete as i32 {
                        break 'leader;
                    }
                    if tx.send(Ok(LeaderResponse { header: resp.header, kv: event.kv })).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The first key put under `prefix` from revision `from` on, with its response header.
    async fn next_put(&self, prefix: &[u8], from: i64) -> Result<Option<(KeyValue, Option<ResponseHeader>)>> {
        let options = WatchOptions::new().with_prefix().with_start_revision(from).with_no_delete();
        let mut watch = self.watch(prefix, Some(options)).await?;
        while let Some(resp) = watch.message().await? {
            if let Some(kv) = resp.events.into_iter().find_map(|e| e.kv) {
                return Ok(Some((kv, resp.header)));
            }
        }
        Ok(None)
    }
}

/// Deletes a contender's key unless disarmed.
struct Withdraw {
    client: Option<Client>,
    key: Vec<u8>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let key = std::mem::take(&mut self.key);
            tokio::spawn(async move {
                let _ = client.delete(key, None).await;
            });
        }
    }
}
