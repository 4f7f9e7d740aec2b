//! Proposals waiting for their application's response, as etcd's `wait.Wait`: the proposer
//! registers a [`Tag`] before proposing, the state machine completes the tag when it applies the
//! entry carrying it, and the response reaches the proposer with its own type (no `Any`).
//!
//! A waiter that gives up (its future is dropped) removes itself; an entry whose tag has no
//! waiter (proposed elsewhere, before a restart, or abandoned) is applied and its response
//! dropped.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::types::Tag;

/// The waiting proposals of one member.
#[derive(Debug)]
pub(crate) struct Pending<R> {
    incarnation: u64,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<R>>>,
}

/// A registered proposal: resolves to the response; unregisters itself when dropped.
#[derive(Debug)]
pub(crate) struct Waiter<R> {
    pending: Arc<Pending<R>>,
    seq: u64,
    response: oneshot::Receiver<R>,
}

impl<R> Default for Pending<R> {
    fn default() -> Self {
        // Random per process: the standard library seeds its hasher keys from the OS.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos()));
        hasher.write_u32(std::process::id());
        Self { incarnation: hasher.finish(), next: AtomicU64::new(1), waiting: Mutex::new(HashMap::new()) }
    }
}

impl<R> Pending<R> {
    /// Registers a new proposal: its tag, to put in the command, and its waiter.
    pub(crate) fn register(self: &Arc<Self>) -> (Tag, Waiter<R>) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(seq, tx);
        (Tag { incarnation: self.incarnation, seq }, Waiter { pending: Arc::clone(self), seq, response: rx })
    }

    /// Hands `response` to the waiter of `tag`, if it is one of this member's and still waits.
    pub(crate) fn complete(&self, tag: Tag, response: R) {
        if tag.incarnation != self.incarnation {
            return;
        }
        if let Some(tx) = self.waiting.lock().remove(&tag.seq) {
            let _ = tx.send(response);
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.lock().len()
    }
}

impl<R> Waiter<R> {
    /// The response, if the entry was applied here (call once the proposal has returned).
    pub(crate) fn take(mut self) -> Option<R> {
        self.response.try_recv().ok()
    }
}

impl<R> Drop for Waiter<R> {
    fn drop(&mut self) {
        self.pending.waiting.lock().remove(&self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_reaches_only_its_own_waiter() {
        let pending = Arc::new(Pending::<String>::default());
        let (a, wait_a) = pending.register();
        let (b, wait_b) = pending.register();
        assert_ne!(a, b);
        pending.complete(b, "b".into());
        pending.complete(a, "a".into());
        assert_eq!(wait_a.take().as_deref(), Some("a"));
        assert_eq!(wait_b.take().as_deref(), Some("b"));
        assert_eq!(pending.waiting(), 0);
    }

    #[test]
    fn another_members_or_an_earlier_processs_tag_matches_nothing() {
        let mine = Arc::new(Pending::<u32>::default());
        let theirs = Arc::new(Pending::<u32>::default());
        let (tag, waiter) = mine.register();
        let (other, _their_waiter) = theirs.register();
        // Same sequence number, another incarnation.
        assert_eq!(tag.seq, other.seq);
        mine.complete(other, 7);
        mine.complete(tag, 1);
        assert_eq!(waiter.take(), Some(1));
    }

    #[test]
    fn an_abandoned_waiter_leaves_nothing_behind() {
        let pending = Arc::new(Pending::<u32>::default());
        let (tag, waiter) = pending.register();
        drop(waiter);
        assert_eq!(pending.waiting(), 0);
        // Its entry applied later: the response is dropped.
        pending.complete(tag, 1);
        assert_eq!(pending.waiting(), 0);
        // A waiter whose entry was never applied has nothing to take.
        let (_, waiter) = pending.register();
        assert_eq!(waiter.take(), None);
    }
}
