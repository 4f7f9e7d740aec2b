//! The in-process transport: members of one test talk through a [`MemRouter`] that can cut
//! links (partitions, isolated or crashed members) and delay every message.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::NodeId;
use crate::network::Inbound;

/// What a message is, for links that drop only some messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Traffic {
    /// AppendEntries: replication and heartbeats.
    Append,
    /// Everything else (votes, snapshots, transfers, forwarded requests).
    Other,
}

/// Connects the members of one process.
#[derive(Clone, Default)]
pub struct MemRouter {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    members: HashMap<NodeId, Arc<dyn Inbound>>,
    /// Directed links that drop every message.
    cut: HashSet<(NodeId, NodeId)>,
    /// Directed links that drop appends (replication and heartbeats) only.
    appends_cut: HashSet<(NodeId, NodeId)>,
    delay: Duration,
}

impl fmt::Debug for MemRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("MemRouter")
            .field("members", &state.members.keys().collect::<Vec<_>>())
            .field("cut", &state.cut)
            .field("delay", &state.delay)
            .finish()
    }
}

impl MemRouter {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register(&self, id: NodeId, inbound: Arc<dyn Inbound>) {
        self.state.lock().members.insert(id, inbound);
    }

    /// Makes `id` unreachable as if it had crashed (its node keeps running until shut down).
    pub fn unregister(&self, id: NodeId) {
        self.state.lock().members.remove(&id);
    }

    /// Cuts every link between `id` and the others, both ways.
    pub fn isolate(&self, id: NodeId) {
        let mut state = self.state.lock();
        let others: Vec<NodeId> = state.members.keys().copied().filter(|&o| o != id).collect();
        for other in others {
            state.cut.insert((id, other));
            state.cut.insert((other, id));
        }
    }

    /// Splits the members into `groups`: links between groups are cut, both ways.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut state = self.state.lock();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in *a {
                    for &y in *b {
                        state.cut.insert((x, y));
                        state.cut.insert((y, x));
                    }
                }
            }
        }
    }

    /// Drops the appends (replication and heartbeats) `from` sends to each of `to`, one way;
    /// its votes still go through. A member cut so can win an election yet never hear a
    /// follower acknowledge it.
    pub fn cut_appends(&self, from: NodeId, to: &[NodeId]) {
        let mut state = self.state.lock();
        for &other in to {
            state.appends_cut.insert((from, other));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        let mut state = self.state.lock();
        state.cut.clear();
        state.appends_cut.clear();
    }

    /// Delays every message by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().delay = delay;
    }

    /// The receiving side of `to`, after the link's delay; an error when the link is cut or
    /// `to` is not there.
    pub(crate) async fn deliver(&self, from: NodeId, to: NodeId, traffic: Traffic) -> Result<Arc<dyn Inbound>, String> {
        let delay = self.state.lock().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let state = self.state.lock();
        if state.cut.contains(&(from, to)) || (traffic == Traffic::Append && state.appends_cut.contains(&(from, to))) {
            return Err(format!("link {from} → {to} is cut"));
        }
        state.members.get(&to).cloned().ok_or_else(|| format!("member {to} is not reachable"))
    }
}
