//! The in-memory key index: for every key, the revisions that changed it.
//!
//! Values stay in the engine; the index holds per revision only what Range needs to filter,
//! sort and count (create revision, version, lease), so memory does not grow with value size
//! and `keys_only` / `count_only` reads never touch the engine.

use std::collections::BTreeMap;
use std::ops::Bound;

use ferrocd_types::{KeyRange, Revision};

/// One change of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) rev: Revision,
    /// Main revision of the key's creation (0 for a tombstone).
    pub(crate) create: i64,
    /// Number of puts since creation (0 for a tombstone).
    pub(crate) version: i64,
    pub(crate) lease: i64,
}

impl Entry {
    pub(crate) fn is_tombstone(&self) -> bool {
        self.version == 0
    }
}

/// Key → changes in revision order.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    keys: BTreeMap<Vec<u8>, Vec<Entry>>,
    revisions: usize,
}

/// A key alive at a revision, with its newest change at or below that revision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) entry: Entry,
}

fn latest_at(entries: &[Entry], rev: i64) -> Option<Entry> {
    let n = entries.partition_point(|e| e.rev.main <= rev);
    n.checked_sub(1).map(|i| entries[i])
}

impl KeyIndex {
    /// The newest change of `key` at or below `rev`, if the key is alive then.
    pub(crate) fn get(&self, key: &[u8], rev: i64) -> Option<Entry> {
        self.keys.get(key).and_then(|e| latest_at(e, rev)).filter(|e| !e.is_tombstone())
    }

    /// Visits the keys of `range` alive at `rev`, in key order (reverse order with `reverse`),
    /// until `visit` returns false.
    pub(crate) fn visit_live(
        &self,
        range: &KeyRange,
        rev: i64,
        reverse: bool,
        mut visit: impl FnMut(Live<'_>) -> bool,
    ) {
        let mut step = |(k, entries): (&Vec<u8>, &Vec<Entry>)| match latest_at(entries, rev) {
            Some(entry) if !entry.is_tombstone() => visit(Live { key: k, entry }),
            _ => true,
        };
        match range {
            KeyRange::Single(k) => {
                if let Some(kv) = self.keys.get_key_value(k) {
                    step(kv);
                }
            }
            r if r.is_empty() => {}
            KeyRange::Range { start, end } => {
                let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let iter = self.keys.range::<[u8], _>((Bound::Included(start.as_slice()), upper));
                if reverse {
                    for kv in iter.rev() {
                        if !step(kv) {
                            break;
                        }
                    }
                } else {
                    for kv in iter {
                        if !step(kv) {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Records a change. Changes of one key arrive in increasing revision order.
    pub(crate) fn push(&mut self, key: &[u8], entry: Entry) {
        match self.keys.get_mut(key) {
            Some(entries) => {
                debug_assert!(entries.last().is_none_or(|last| last.rev < entry.rev));
                entries.push(entry);
            }
            None => {
                self.keys.insert(key.to_vec(), vec![entry]);
            }
        }
        self.revisions += 1;
    }

    /// Drops the history that a compaction at `at` makes unreachable: for each key, every change
    /// older than its newest change at or below `at`, and that newest change too when it is a
    /// tombstone. Calls `removed` for each dropped change.
    pub(crate) fn compact(&mut self, at: i64, mut removed: impl FnMut(Revision, bool)) {
        let mut dropped = 0;
        self.keys.retain(|_, entries| {
            let n = entries.partition_point(|e| e.rev.main <= at);
            if n == 0 {
                return true;
            }
            let keep_from = if entries[n - 1].is_tombstone() { n } else { n - 1 };
            for e in &entries[..keep_from] {
                removed(e.rev, e.is_tombstone());
            }
            dropped += keep_from;
            entries.drain(..keep_from);
            !entries.is_empty()
        });
        self.revisions -= dropped;
    }

    /// Whether `rev` of `key` is still part of the reachable history.
    pub(crate) fn holds(&self, key: &[u8], rev: Revision) -> bool {
        self.keys.get(key).is_some_and(|entries| entries.binary_search_by(|e| e.rev.cmp(&rev)).is_ok())
    }

    /// The number of keys with any history.
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The number of changes held.
    pub(crate) fn revision_count(&self) -> usize {
        self.revisions
    }
}
