//! The keys attached to one lease, cheap for the common lease with a handful of keys.
//!
//! Most leases hold one key (a service registration) or a few; a `BTreeSet` would cost a
//! ~270-byte node for one key. So a lease keeps a small sorted `Vec` and switches to a
//! `BTreeSet` past [`SMALL`] keys, where inserting into a `Vec` would start moving a lot.

use std::collections::BTreeSet;

/// The most keys kept in the sorted `Vec` form.
const SMALL: usize = 16;

/// A non-empty set of keys (an empty set is not kept: the lease holds `None`).
#[derive(Debug, Clone)]
pub(crate) enum Keys {
    Small(Vec<Vec<u8>>),
    Large(BTreeSet<Vec<u8>>),
}

impl Keys {
    /// A set holding just `key`.
    pub(crate) fn one(key: Vec<u8>) -> Self {
        Self::Small(vec![key])
    }

    /// Adds `key`; false if it was there.
    pub(crate) fn insert(&mut self, key: Vec<u8>) -> bool {
        match self {
            Self::Small(keys) => match keys.binary_search(&key) {
                Ok(_) => false,
                Err(at) if keys.len() < SMALL => {
                    keys.insert(at, key);
                    true
                }
                Err(_) => {
                    let mut set: BTreeSet<Vec<u8>> = std::mem::take(keys).into_iter().collect();
                    set.insert(key);
                    *self = Self::Large(set);
                    true
                }
            },
            Self::Large(set) => set.insert(key),
        }
    }

    /// Removes `key`; false if it was not there.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        match self {
            Self::Small(keys) => match keys.binary_search_by(|k| k.as_slice().cmp(key)) {
                Ok(at) => {
                    keys.remove(at);
                    true
                }
                Err(_) => false,
            },
            Self::Large(set) => set.remove(key),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Small(keys) => keys.len(),
            Self::Large(set) => set.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys in ascending order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = &Vec<u8>> + '_> {
        match self {
            Self::Small(keys) => Box::new(keys.iter()),
            Self::Large(set) => Box::new(set.iter()),
        }
    }

    /// The keys in ascending order, consuming the set.
    pub(crate) fn into_sorted_vec(self) -> Vec<Vec<u8>> {
        match self {
            Self::Small(keys) => keys,
            Self::Large(set) => set.into_iter().collect(),
        }
    }
}
