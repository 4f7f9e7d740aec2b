//! etcd's Watch service: each call is one bidirectional stream of watchers, served from this
//! member's watch hub (every member, leader or follower, serves watches from what it applied).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::watch_server::Watch;
use ferrocd_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use ferrocd_watch::{WatchStream, fragment};
use futures::Stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::auth::{Auth, Credential};
use crate::error::ServerError;
use crate::history::StoreHistory;

/// The metadata with which a client asks that its stream fail without a leader (etcd's
/// `clientv3.WithRequireLeader`).
const REQUIRE_LEADER: &str = "hasleader";

/// The Watch service.
#[derive(Debug)]
pub struct WatchService<E: Engine> {
    shared: Arc<Shared<E>>,
    /// Turns true when the server stops: open streams end then.
    stopped: watch::Receiver<bool>,
    /// Responses larger than this are split for watchers that asked for fragments.
    fragment_bytes: usize,
}

impl<E: Engine> WatchService<E> {
    pub fn new(shared: Arc<Shared<E>>, stopped: watch::Receiver<bool>, fragment_bytes: usize) -> Self {
        Self { shared, stopped, fragment_bytes }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// Aborts the task reading a stream's requests when its responses are dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The sending half of one Watch call.
struct Outbound<E: Engine> {
    stream: Arc<WatchStream<StoreHistory<E>>>,
    shared: Arc<Shared<E>>,
    stopped: watch::Receiver<bool>,
    fragment_bytes: usize,
    /// Fragments of a split response still to send.
    pending: VecDeque<WatchResponse>,
    /// For a client that required a leader: resolves once the member has had none for three
    /// election timeouts, which ends the stream (etcd's `hasleader` streams).
    leaderless: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    _reader: AbortOnDrop,
}

impl<E: Engine> Outbound<E> {
    async fn next(&mut self) -> Option<Result<WatchResponse, Status>> {
        if let Some(resp) = self.pending.pop_front() {
            return Some(Ok(resp));
        }
        let leaderless = async {
            match self.leaderless.as_mut() {
                Some(monitor) => monitor.await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            message = self.stream.next() => message,
            _ = self.stopped.wait_for(|s| *s) => return Some(Err(ServerError::Stopped.into())),
            () = leaderless => return Some(Err(ServerError::NoLeader.into())),
        };
        let split = message.wants_fragments();
        let mut resp = message.into_response();
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = self.shared.header(revision);
        if split {
            self.pending.extend(fragment(resp, self.fragment_bytes));
            self.pending.pop_front().map(Ok)
        } else {
            Some(Ok(resp))
        }
    }
}

/// Resolves once this member has had no leader for three election timeouts. A cheap check
/// twice per election timeout: Kubernetes asks this of every watch stream.
async fn leaderless_for<E: Engine>(shared: Arc<Shared<E>>) {
    let limit = shared.replica.election_timeout() * 3;
    let mut ticks = tokio::time::interval(shared.replica.election_timeout() / 2);
    let mut since = None;
    loop {
        ticks.tick().await;
        if shared.replica.leader().is_some() {
            since = None;
        } else if since.get_or_insert_with(tokio::time::Instant::now).elapsed() >= limit {
            return;
        }
    }
}

/// Whether the caller `credential` names may watch what `create` asks for (READ on its range; an
/// empty key is key `"\0"`, as the watch itself takes it). Checked at each create: a simple
/// token stands for the store's revision at that moment.
fn permitted(auth: &Auth, credential: Option<&Credential>, create: &WatchCreateRequest) -> Result<(), Status> {
    let key: &[u8] = if create.key.is_empty() { &[0] } else { &create.key };
    auth.check(&auth.resolve(credential), |c| c.watch(key, &create.range_end)).map_err(Status::from)
}

#[tonic::async_trait]
impl<E: Engine> Watch for WatchService<E> {
    type WatchStream = ResponseStream;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<ResponseStream>, Status> {
        let shared = &self.shared;
        shared.not_learner()?;
        let require_leader = request.metadata().get(REQUIRE_LEADER).is_some_and(|v| v == "true");
        if require_leader && shared.replica.leader().is_none() {
            return Err(ServerError::NoLeader.into());
        }
        let stream = Arc::new(shared.replica.hub().stream());
        let credential = shared.context(&request).credential;
        let auth = Arc::clone(&shared.auth);
        let mut inbound = request.into_inner();
        let reader = {
            let stream = Arc::clone(&stream);
            tokio::spawn(async move {
                // A client that stops sending (or goes away) ends only this loop: its watchers
                // live until the response stream is dropped, as in etcd.
                while let Ok(Some(req)) = inbound.message().await {
                    match req.request_union {
                        Some(RequestUnion::CreateRequest(create)) => {
                            match permitted(&auth, credential.as_ref(), &create) {
                                Ok(()) => stream.create(&create),
                                // etcd refuses with the error as gRPC would print it.
                                Err(status) => stream.refuse(format!(
                                    "rpc error: code = {:?} desc = {}",
                                    status.code(),
                                    status.message()
                                )),
                            }
                        }
                        Some(RequestUnion::CancelRequest(cancel)) => stream.cancel(cancel.watch_id),
                        Some(RequestUnion::ProgressRequest(_)) => stream.request_progress(),
                        None => {}
                    }
                }
            })
        };
        let outbound = Outbound {
            stream,
            shared: Arc::clone(shared),
            stopped: self.stopped.clone(),
            fragment_bytes: self.fragment_bytes,
            pending: VecDeque::new(),
            leaderless: require_leader.then(|| Box::pin(leaderless_for(Arc::clone(shared))) as Pin<Box<_>>),
            _reader: AbortOnDrop(reader),
        };
        let responses = futures::stream::unfold(Some(outbound), |outbound| async move {
            let mut outbound = outbound?;
            let item = outbound.next().await?;
            // After an error (the server stopping) the stream ends.
            let next = item.is_ok().then_some(outbound);
            Some((item, next))
        });
        Ok(Response::new(Box::pin(responses)))
    }
}
