//! etcd's software transactional memory (`clientv3/concurrency`'s STM): a function reads and
//! writes keys through an [`Stm`]; its writes are buffered and committed in one transaction
//! that holds only if what it read is still what it would read, and the function runs again
//! when it does not. The [`Isolation`] level says which reads must still hold.
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! use ferrocd_client::stm::Isolation;
//!
//! // Move 10 from one account to another, however many clients do the same at once.
//! let committed = client
//!     .stm(Isolation::SerializableSnapshot, |stm| {
//!         Box::pin(async move {
//!             let parse = |v: Option<Vec<u8>>| -> i64 { v.and_then(|v| String::from_utf8(v).ok()?.parse().ok()).unwrap_or(0) };
//!             let from = parse(stm.get("accounts/a").await?);
//!             let to = parse(stm.get("accounts/b").await?);
//!             stm.put("accounts/a", (from - 10).to_string(), None);
//!             stm.put("accounts/b", (to + 10).to_string(), None);
//!             Ok(from - 10)
//!         })
//!     })
//!     .await?;
//! println!("a holds {} since revision {}", committed.value, committed.revision);
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use ferrocd_proto::etcdserverpb::response_op::Response as Reply;
use ferrocd_proto::etcdserverpb::{RangeRequest, RangeResponse};

use crate::kv::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp};
use crate::{Client, Result};

/// Which reads of an STM function must still hold for its writes to commit (etcd's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Every read at the revision of the first; commits only if no key read or written changed
    /// since that revision. Serializable, and no key is ever seen at two revisions. etcd's
    /// default.
    #[default]
    SerializableSnapshot,
    /// Every read at the revision of the first; commits only if every key read is still at the
    /// revision read (keys only written are not checked).
    Serializable,
    /// Each key read at the newest revision when first read; commits only if every key read is
    /// still at the revision read.
    RepeatableReads,
    /// Reads at the newest revision; commits whatever was read.
    ReadCommitted,
}

/// A buffered write.
#[derive(Debug, Clone)]
enum Write {
    Put { value: Vec<u8>, lease: i64 },
    Delete,
}

/// What an STM function reads and writes through; see the [module](self) docs.
#[derive(Debug)]
pub struct Stm {
    client: Client,
    isolation: Isolation,
    /// Each key read, as the server answered.
    reads: BTreeMap<Vec<u8>, RangeResponse>,
    writes: BTreeMap<Vec<u8>, Write>,
    /// The revision every read is made at, once the first read set it (serializable levels).
    pinned: Option<i64>,
    /// Keys read by the last attempt, as they were when its commit failed: the next attempt
    /// starts from them instead of asking again.
    prefetched: BTreeMap<Vec<u8>, RangeResponse>,
}

/// What an STM function returns: a boxed future borrowing the [`Stm`] (boxed so that the STM's
/// own future is `Send` and can be spawned).
pub type StmFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What [`Client::stm`] answers: the function's value from the attempt that committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T> {
    pub value: T,
    /// The revision of the commit.
    pub revision: i64,
    /// How many times the function ran.
    pub attempts: u32,
}

impl Stm {
    /// The key's value as this transaction sees it: its own write first, else as read.
    /// `None`: no such key (or deleted here).
    ///
    /// # Errors
    /// The read's failure (e.g. [`crate::EtcdError::Compacted`] when the pinned revision was
    /// compacted away); it ends the STM.
    pub async fn get(&mut self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let key = key.into();
        if let Some(write) = self.writes.get(&key) {
            return Ok(match write {
                Write::Put { value, .. } => Some(value.clone()),
                Write::Delete => None,
            });
        }
        Ok(self.read(key).await?.kvs.first().map(|kv| kv.value.clone()))
    }

    /// The revision the key was last changed at, as read (0: no such key). Its own writes are
    /// not counted, as in etcd.
    ///
    /// # Errors
    /// As [`Stm::get`].
    pub async fn rev(&mut self, key: impl Into<Vec<u8>>) -> Result<i64> {
        Ok(self.read(key.into()).await?.kvs.first().map_or(0, |kv| kv.mod_revision))
    }

    /// Sets the key's value when the transaction commits; `lease` attaches it to a lease.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: Option<i64>) {
        self.writes.insert(key.into(), Write::Put { value: value.into(), lease: lease.unwrap_or(0) });
    }

    /// Deletes the key when the transaction commits.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), Write::Delete);
    }

    async fn read(&mut self, key: Vec<u8>) -> Result<&RangeResponse> {
        if !self.reads.contains_key(&key) {
            let response = match self.prefetched.remove(&key) {
                Some(response) => response,
                None => {
                    let request = RangeRequest {
                        key: key.clone(),
                        revision: self.pinned.unwrap_or(0),
                        ..RangeRequest::default()
                    };
                    self.client.range(request).await?
                }
            };
            if self.serializable() && self.pinned.is_none() {
                self.pinned = response.header.as_ref().map(|h| h.revision);
            }
            self.reads.insert(key.clone(), response);
        }
        Ok(&self.reads[&key])
    }

    fn serializable(&self) -> bool {
        matches!(self.isolation, Isolation::SerializableSnapshot | Isolation::Serializable)
    }

    /// The conditions of the commit.
    fn conflicts(&self) -> Vec<Compare> {
        if self.isolation == Isolation::ReadCommitted {
            return Vec::new();
        }
        // Every key read is still at the revision read (0: still absent).
        let mut compares: Vec<Compare> = self
            .reads
            .iter()
            .map(|(key, read)| {
                let revision = read.kvs.first().map_or(0, |kv| kv.mod_revision);
                Compare::mod_revision(key.clone(), CompareOp::Equal, revision)
            })
            .collect();
        if self.isolation == Isolation::SerializableSnapshot {
            // And no key written changed after the snapshot the reads were made at.
            let first = self.reads.values().filter_map(|r| r.header.as_ref()).map(|h| h.revision).min();
            let snapshot = first.unwrap_or(i64::MAX - 1);
            compares.extend(
                self.writes.keys().map(|key| Compare::mod_revision(key.clone(), CompareOp::Less, snapshot + 1)),
            );
        }
        compares
    }

    /// The transaction that commits this attempt; on the serializable levels its failure
    /// branch reads again what was read, for the next attempt.
    fn commit(&self) -> (Txn, Vec<Vec<u8>>) {
        let writes = self.writes.iter().map(|(key, write)| match write {
            Write::Put { value, lease } => {
                let options = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                TxnOp::put(key.clone(), value.clone(), options)
            }
            Write::Delete => TxnOp::delete(key.clone(), None::<DeleteOptions>),
        });
        let txn = Txn::new().when(self.conflicts()).and_then(writes);
        if !self.serializable() {
            return (txn, Vec::new());
        }
        let keys: Vec<Vec<u8>> = self.reads.keys().cloned().collect();
        (txn.or_else(keys.iter().map(|key| TxnOp::get(key.clone(), None))), keys)
    }

    /// Ready for the function to run again.
    fn reset(&mut self) {
        self.reads.clear();
        self.writes.clear();
        self.pinned = None;
    }
}

impl Client {
    /// Runs `apply` as etcd's STM at `isolation` until its writes commit, and answers its
    /// value. `apply` may run several times; only the last run's writes are made, and nothing
    /// else it does should have effects outside the [`Stm`].
    ///
    /// # Errors
    /// The first error `apply` returns (its writes are dropped), or a failed read or commit.
    pub async fn stm<T, F>(&self, isolation: Isolation, mut apply: F) -> Result<Committed<T>>
    where
        F: for<'a> FnMut(&'a mut Stm) -> StmFuture<'a, T>,
    {
        let mut stm = Stm {
            client: self.clone(),
            isolation,
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            pinned: None,
            prefetched: BTreeMap::new(),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            stm.reset();
            let value = apply(&mut stm).await?;
            let (txn, prefetch) = stm.commit();
            let reply = self.txn(txn).await?;
            if reply.succeeded {
                let revision = reply.header.map_or(0, |h| h.revision);
                return Ok(Committed { value, revision, attempts });
            }
            for (key, op) in prefetch.into_iter().zip(reply.responses) {
                if let Some(Reply::ResponseRange(mut read)) = op.response {
                    // Read at the transaction's revision, whatever header the server gave
                    // the operation inside it.
                    if read.header.as_ref().is_none_or(|h| h.revision == 0) {
                        read.header.clone_from(&reply.header);
                    }
                    stm.prefetched.insert(key, read);
                }
            }
        }
    }
}
