//! etcd's Lock and Election services, built as etcd builds them: the concurrency recipes of
//! `ferrocd-client` (a key per contender under the name's prefix, attached to a lease; the
//! contender with the oldest key holds the lock or leads; the others wait for the deletion of
//! the key just ahead of theirs, with a watch, never polling), run server-side through this
//! member's own KV, Watch and Lease services over a loopback connection, as the caller (its
//! token or certificate name), so they inherit forwarding to the leader, the caller's
//! permissions and every guarantee of those services.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use ferrocd_client::{Client, ConnectOptions};
use ferrocd_proto::v3electionpb::election_server::Election;
use ferrocd_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest,
    ResignResponse,
};
use ferrocd_proto::v3lockpb::lock_server::Lock;
use ferrocd_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::Credential;
use crate::context::{COMMON_NAME, RequestContext};
use crate::error::ServerError;

/// A connection to this member's own client services, in process (no socket, no TLS), set
/// once they are built.
#[derive(Debug, Clone, Default)]
pub struct Loopback(Arc<OnceLock<Channel>>);

impl Loopback {
    /// Serves `router` (the client services behind [`crate::context::Edge::loopback`]) to this
    /// loopback's channel, over in-memory pipes, until `stopped` turns true.
    pub fn serve(
        &self,
        router: tonic::transport::server::Router,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(), tonic::transport::Error>> + use<> {
        let (tx, rx) = mpsc::channel::<std::io::Result<tokio::io::DuplexStream>>(16);
        let endpoint = tonic::transport::Endpoint::from_static("http://loopback");
        let _ = self.0.set(endpoint.connect_with_connector_lazy(Pipes(tx)));
        router.serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
    }

    /// The channel, once the loopback serves.
    ///
    /// # Errors
    /// `NotServing` before that.
    pub(crate) fn channel(&self) -> Result<Channel, Status> {
        self.0.get().cloned().ok_or_else(|| ServerError::NotServing.into())
    }
}

/// The loopback's connector: each connection is a pipe whose other end goes to the server.
#[derive(Debug, Clone)]
struct Pipes(mpsc::Sender<std::io::Result<tokio::io::DuplexStream>>);

/// Bytes a loopback pipe buffers each way.
const PIPE_BYTES: usize = 256 * 1024;

impl tower_service::Service<http::Uri> for Pipes {
    type Response = hyper_util::rt::TokioIo<tokio::io::DuplexStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
            server.send(Ok(theirs)).await.map_err(|_| std::io::Error::other("the server has stopped"))?;
            Ok(hyper_util::rt::TokioIo::new(ours))
        })
    }
}

/// A client of this member's own services, as the caller of `request`: every request carries
/// the caller's token (or certificate name), so the recipes run with the caller's permissions
/// (as etcd's do), never the server's. No retries: the services it calls already forward to
/// the leader, and the caller retries as it sees fit.
fn as_caller<T>(loopback: &Loopback, request: &Request<T>) -> Result<Client, Status> {
    let options = ConnectOptions::new().with_retries(0, std::time::Duration::ZERO);
    let client = Client::from_channel("loopback", loopback.channel()?, options);
    let credential = request.extensions().get::<RequestContext>().and_then(|c| c.credential.clone());
    let with = match &credential {
        Some(Credential::Token(token)) => client.with_metadata("token", token),
        Some(Credential::CommonName(name)) => client.with_metadata(COMMON_NAME, name),
        None => Ok(client),
    };
    with.map_err(refused)
}

/// A recipe's error as the Lock and Election services answer it.
fn refused(e: ferrocd_client::Error) -> Status {
    crate::error::through_in_process_client(Status::from(e))
}

/// The Lock service.
#[derive(Debug, Clone)]
pub struct LockService(Loopback);

impl LockService {
    pub fn new(loopback: Loopback) -> Self {
        Self(loopback)
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let client = as_caller(&self.0, &request)?;
        let req = request.into_inner();
        let lease = (req.lease != 0).then_some(req.lease);
        client.lock(req.name, lease).await.map(Response::new).map_err(refused)
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let client = as_caller(&self.0, &request)?;
        client.unlock(request.into_inner().key).await.map(Response::new).map_err(refused)
    }
}

/// The Election service.
#[derive(Debug, Clone)]
pub struct ElectionService(Loopback);

impl ElectionService {
    pub fn new(loopback: Loopback) -> Self {
        Self(loopback)
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let client = as_caller(&self.0, &request)?;
        let req = request.into_inner();
        let lease = (req.lease != 0).then_some(req.lease);
        client.campaign(req.name, req.value, lease).await.map(Response::new).map_err(refused)
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let client = as_caller(&self.0, &request)?;
        let req = request.into_inner();
        let leader = req.leader.ok_or_else(|| Status::from(ServerError::MissingLeaderField))?;
        client.proclaim(&leader, req.value).await.map(Response::new).map_err(refused)
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let client = as_caller(&self.0, &request)?;
        client.leader(request.into_inner().name).await.map(Response::new).map_err(refused)
    }

    type ObserveStream = ObserveStream;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<ObserveStream>, Status> {
        let client = as_caller(&self.0, &request)?;
        let changes = client.observe(request.into_inner().name);
        let stream =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(changes), |r| r.map_err(refused));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let client = as_caller(&self.0, &request)?;
        let leader = request.into_inner().leader.ok_or_else(|| Status::from(ServerError::MissingLeaderField))?;
        client.resign(&leader).await.map(Response::new).map_err(refused)
    }
}
