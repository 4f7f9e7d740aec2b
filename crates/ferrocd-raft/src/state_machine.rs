//! openraft's state machine, delegating to the application's [`Apply`].
//!
//! Raft's own state (the last applied log id and the membership) travels as an opaque blob the
//! application stores atomically with the effects of the entries it applies, so a crash can
//! never leave an entry half-applied or applied twice.

use std::io;
use std::sync::Arc;

use futures::TryStreamExt as _;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};

use crate::pending::Pending;
use crate::snapshot::{SnapshotDir, SnapshotStore};
use crate::types::{LogId, Reply, SnapshotMeta, StoredMembership, TypeConfig, decode, encode};
use crate::{Apply, Committed, Members, Payload};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotDir>;

/// What Raft itself needs back from the application: encoded as the blob of [`Apply`].
type RaftState = (Option<LogId>, StoredMembership);

fn load<A: Apply>(app: &A) -> io::Result<RaftState> {
    match app.raft_state()? {
        Some(blob) => decode(&blob),
        None => Ok((None, StoredMembership::default())),
    }
}

pub(crate) struct StateMachine<A: Apply> {
    app: Arc<A>,
    /// This member's proposals waiting for their responses.
    pending: Arc<Pending<A::Response>>,
    snapshots: Arc<SnapshotStore>,
    state: RaftState,
    /// Held by the state machine and its snapshot builders: while any is alive, the
    /// application may still be called.
    alive: Arc<()>,
}

impl<A: Apply> StateMachine<A> {
    pub(crate) fn new(
        app: Arc<A>,
        pending: Arc<Pending<A::Response>>,
        snapshots: Arc<SnapshotStore>,
    ) -> io::Result<Self> {
        let state = load(app.as_ref())?;
        Ok(Self { app, pending, snapshots, state, alive: Arc::new(()) })
    }

    /// Gone once neither the state machine nor any of its builders can call the application.
    pub(crate) fn liveness(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.alive)
    }
}

impl<A: Apply> RaftStateMachine<TypeConfig> for StateMachine<A> {
    type SnapshotData = SnapshotDir;
    type SnapshotBuilder = Builder<A>;

    async fn applied_state(&mut self) -> io::Result<RaftState> {
        Ok(self.state.clone())
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: futures::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        if batch.is_empty() {
            return Ok(());
        }
        // Raft's state after each entry, and each membership entry's members.
        let mut membership = self.state.1.clone();
        let mut states = Vec::with_capacity(batch.len());
        let mut members = Vec::with_capacity(batch.len());
        for (entry, _) in &batch {
            if let EntryPayload::Membership(m) = &entry.payload {
                membership = StoredMembership::new(Some(entry.log_id), m.clone());
                members.push(Members::from_membership(m));
            } else {
                members.push(Members::default());
            }
            states.push(encode(&(Some(entry.log_id), membership.clone()))?);
        }
        let committed: Vec<Committed<'_>> = batch
            .iter()
            .zip(&members)
            .zip(&states)
            .map(|(((entry, _), members), state)| Committed {
                index: entry.log_id.index,
                term: entry.log_id.leader_id.term,
                payload: match &entry.payload {
                    EntryPayload::Blank => Payload::Noop,
                    EntryPayload::Normal(command) => Payload::Command(&command.bytes),
                    EntryPayload::Membership(_) => Payload::Membership(members),
                },
                raft_state: state,
            })
            .collect();
        let responses = self.app.apply(&committed)?;
        drop(committed);
        let last = batch.last().map(|(entry, _)| entry.log_id);
        self.state = (last, membership);
        for ((entry, responder), response) in batch.into_iter().zip(responses) {
            if let (EntryPayload::Normal(command), Some(response)) = (&entry.payload, response)
                && let Some(tag) = command.tag
            {
                self.pending.complete(tag, response);
            }
            if let Some(responder) = responder {
                responder.send(Reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder { app: self.app.clone(), snapshots: self.snapshots.clone(), _alive: self.alive.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotDir) -> io::Result<()> {
        let (app, snapshots, meta) = (self.app.clone(), self.snapshots.clone(), meta.clone());
        // Installing copies the whole state: off the async workers, so heartbeats go on.
        self.state = blocking(move || {
            let _exclusive = snapshots.exclusive.lock();
            let adopted = snapshots.adopt(&meta, &snapshot.path)?;
            app.install(&adopted.path)?;
            load(app.as_ref())
        })
        .await?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        Ok(self.snapshots.current()?.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// Builds a snapshot from the application's consistent image.
pub(crate) struct Builder<A> {
    app: Arc<A>,
    snapshots: Arc<SnapshotStore>,
    _alive: Arc<()>,
}

impl<A: Apply> RaftSnapshotBuilder<TypeConfig> for Builder<A> {
    type SnapshotData = SnapshotDir;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let (app, snapshots) = (self.app.clone(), self.snapshots.clone());
        blocking(move || {
            let _exclusive = snapshots.exclusive.lock();
            let dir = snapshots.scratch()?;
            let blob = app.snapshot(&dir)?;
            // An application that never applied anything has no blob yet.
            let (last_log_id, last_membership): RaftState =
                if blob.is_empty() { (None, StoredMembership::default()) } else { decode(&blob)? };
            let meta = SnapshotMeta { last_log_id, last_membership };
            let snapshot = snapshots.adopt(&meta, &dir)?;
            Ok(Snapshot { meta, snapshot })
        })
        .await
    }
}

/// Runs blocking storage work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}
