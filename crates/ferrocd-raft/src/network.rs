//! The transports between members, behind openraft's network traits: the application picks one
//! with a [`Network`] value and never sees openraft's messages.

use std::sync::Arc;

use openraft::error::{RPCError, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};

use crate::mem::MemRouter;
use crate::snapshot::SnapshotDir;
use crate::state_machine::StateMachine;
use crate::types::{TypeConfig, Vote};
use crate::{Apply, Node, NodeId};

pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotDir>;
type BoxFuture<T> = futures::future::BoxFuture<'static, Result<T, String>>;

/// How this member reaches the others.
#[derive(Debug, Clone)]
pub struct Network {
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// In-process, through a router tests can partition and slow down.
    Mem { router: MemRouter, from: NodeId },
}

impl Network {
    /// In-process messages through `router`, sent as member `from`.
    pub fn mem(router: &MemRouter, from: NodeId) -> Self {
        Self { kind: Kind::Mem { router: router.clone(), from } }
    }
}

/// A member's receiving side, with the application's type erased.
pub(crate) trait Inbound: Send + Sync + 'static {
    fn append(&self, req: AppendEntriesRequest<TypeConfig>) -> BoxFuture<AppendEntriesResponse<TypeConfig>>;
    fn vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>>;
    fn pre_vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>>;
    fn snapshot(&self, vote: Vote, snapshot: Snapshot) -> BoxFuture<SnapshotResponse<TypeConfig>>;
}

impl<A: Apply> Inbound for openraft::Raft<TypeConfig, StateMachine<A>> {
    fn append(&self, req: AppendEntriesRequest<TypeConfig>) -> BoxFuture<AppendEntriesResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.append_entries(req).await.map_err(|e| e.to_string()) })
    }

    fn vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.vote(req).await.map_err(|e| e.to_string()) })
    }

    fn pre_vote(&self, req: VoteRequest<TypeConfig>) -> BoxFuture<VoteResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.pre_vote(req).await.map_err(|e| e.to_string()) })
    }

    fn snapshot(&self, vote: Vote, snapshot: Snapshot) -> BoxFuture<SnapshotResponse<TypeConfig>> {
        let raft = self.clone();
        Box::pin(async move { raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string()) })
    }
}

/// A connection to one peer.
pub(crate) struct Client {
    kind: Kind,
    to: NodeId,
}

impl Client {
    async fn inbound(&self) -> Result<Arc<dyn Inbound>, String> {
        match &self.kind {
            Kind::Mem { router, from } => router.deliver(*from, self.to).await,
        }
    }
}

fn unreachable(e: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(e))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Client {
        Client { kind: self.kind.clone(), to: target }
    }
}

impl RaftNetworkV2<TypeConfig> for Client {
    type SnapshotData = SnapshotDir;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let inbound = self.inbound().await.map_err(unreachable)?;
        inbound.append(rpc).await.map_err(unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let inbound = self.inbound().await.map_err(unreachable)?;
        inbound.vote(rpc).await.map_err(unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let inbound = self.inbound().await.map_err(unreachable)?;
        inbound.pre_vote(rpc).await.map_err(unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = openraft::error::ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_streaming = |e: String| StreamingError::Unreachable(Unreachable::from_string(e));
        let inbound = self.inbound().await.map_err(to_streaming)?;
        inbound.snapshot(vote, snapshot).await.map_err(to_streaming)
    }
}
