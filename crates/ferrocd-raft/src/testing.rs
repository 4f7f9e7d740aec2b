//! A small state machine on this crate: a string map kept in memory, with snapshots as one file.
//! It shows what an application implements, and the crate's tests run on it.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use parking_lot::Mutex;

use crate::types::{decode, encode};
use crate::{Apply, Committed, Payload};

/// A map from string keys to string values; a command sets one key.
#[derive(Debug, Default)]
pub struct MemKv {
    inner: Mutex<Inner>,
    /// What this member did itself (not part of snapshots), for tests.
    local: Mutex<Local>,
}

/// The replicated state: what a snapshot holds.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Inner {
    map: BTreeMap<String, String>,
    raft_state: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Local {
    /// Indexes of the command entries this member applied, in order.
    applied: Vec<u64>,
    /// Snapshots this member installed.
    installs: usize,
}

impl MemKv {
    /// The command that sets `key` to `value`.
    pub fn set(key: &str, value: &str) -> Vec<u8> {
        encode(&(key, value)).expect("encodable")
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.inner.lock().map.get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The log indexes of the commands this member applied itself, in order (entries that
    /// arrived inside a snapshot are not among them).
    pub fn applied(&self) -> Vec<u64> {
        self.local.lock().applied.clone()
    }

    /// How many snapshots this member installed.
    pub fn installs(&self) -> usize {
        self.local.lock().installs
    }
}

const FILE: &str = "kv";

impl Apply for MemKv {
    /// The key's previous value.
    type Response = Option<String>;

    fn apply(&self, entries: &[Committed<'_>]) -> io::Result<Vec<Option<Self::Response>>> {
        let mut inner = self.inner.lock();
        let mut local = self.local.lock();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            out.push(match entry.payload {
                Payload::Command(bytes) => {
                    let (key, value): (String, String) = decode(bytes)?;
                    local.applied.push(entry.index);
                    Some(inner.map.insert(key, value))
                }
                Payload::Membership(_) | Payload::Noop => None,
            });
        }
        // The whole batch changes atomically (under one lock): the last entry's state suffices.
        if let Some(last) = entries.last() {
            inner.raft_state = Some(last.raft_state.to_vec());
        }
        Ok(out)
    }

    fn raft_state(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.inner.lock().raft_state.clone())
    }

    fn snapshot(&self, dir: &Path) -> io::Result<Vec<u8>> {
        let inner = self.inner.lock().clone();
        std::fs::write(dir.join(FILE), encode(&inner)?)?;
        Ok(inner.raft_state.unwrap_or_default())
    }

    fn install(&self, dir: &Path) -> io::Result<()> {
        let image: Inner = decode(&std::fs::read(dir.join(FILE))?)?;
        *self.inner.lock() = image;
        self.local.lock().installs += 1;
        Ok(())
    }
}
