//! Watches that survive failures: [`Client::watch`] opens a stream of events that, when its
//! server fails, stops or loses its leader, is opened again on the next endpoint from the
//! revision after the last one delivered — nothing missed, nothing repeated. A watch ends only
//! when dropped, canceled, or canceled by the server for good (its start compacted away).
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! use ferrocd_client::watch::WatchOptions;
//!
//! let mut watch = client.watch("config/", Some(WatchOptions::new().with_prefix().with_prev_key())).await?;
//! client.put("config/a", "1", None).await?;
//! while let Some(response) = watch.message().await? {
//!     for event in &response.events {
//!         println!("{:?} {:?}", event.r#type(), event.kv.as_ref().map(|kv| &kv.key));
//!     }
//!     if !response.events.is_empty() {
//!         break;
//!     }
//! }
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_create_request::FilterType;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::kv::Span;
use crate::{Client, Error, Result};

/// Options of [`Client::watch`] (etcd's `WatchCreateRequest`).
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    span: Span,
    request: WatchCreateRequest,
}

impl WatchOptions {
    pub fn new() -> Self {
        Self::default()
    }

    crate::kv::span_methods!();

    /// Events from `revision` on (history first); 0: from now.
    #[must_use]
    pub fn with_start_revision(mut self, revision: i64) -> Self {
        self.request.start_revision = revision;
        self
    }

    /// Each event with the key-value pair before it.
    #[must_use]
    pub fn with_prev_key(mut self) -> Self {
        self.request.prev_kv = true;
        self
    }

    /// Progress notifications (an empty response with the current revision) while idle.
    #[must_use]
    pub fn with_progress_notify(mut self) -> Self {
        self.request.progress_notify = true;
        self
    }

    /// Lets the server split big responses (reassembled here: callers see whole ones).
    #[must_use]
    pub fn with_fragment(mut self) -> Self {
        self.request.fragment = true;
        self
    }

    /// Leaves out puts.
    #[must_use]
    pub fn with_no_put(mut self) -> Self {
        self.request.filters.push(FilterType::Noput as i32);
        self
    }

    /// Leaves out deletes.
    #[must_use]
    pub fn with_no_delete(mut self) -> Self {
        self.request.filters.push(FilterType::Nodelete as i32);
        self
    }

    pub(crate) fn build(&self, key: Vec<u8>) -> WatchCreateRequest {
        let (key, range_end) = self.span.resolve(key);
        WatchCreateRequest { key, range_end, ..self.request.clone() }
    }
}

/// What the caller asks of a running watch.
#[derive(Debug)]
enum Control {
    Progress,
}

/// The responses of one watch (see [`Client::watch`]); also a [`futures_core::Stream`].
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchResponse>>,
    control: mpsc::UnboundedSender<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchStream {
    /// The next response: the creation first, then events and progress notifications.
    /// `None` once the watch ended.
    ///
    /// # Errors
    /// [`Error::WatchCanceled`] when the server canceled it for good (e.g. its start revision
    /// was compacted); etcd's errors for a watch it refused.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>> {
        self.rx.recv().await.transpose()
    }

    /// Asks the server for a progress notification (the revision everything before which was
    /// sent).
    pub fn request_progress(&self) {
        let _ = self.control.send(Control::Progress);
    }
}

impl futures_core::Stream for WatchStream {
    type Item = Result<WatchResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Watches the key (or the keys the options name). Answers once the first server accepted
    /// the watch; a start revision compacted away is then reported by the stream, as
    /// [`Error::WatchCanceled`] after the creation, as etcd reports it.
    ///
    /// # Errors
    /// The first attempt's refusal (e.g. permission denied) or cancellation.
    pub async fn watch(&self, key: impl Into<Vec<u8>>, options: Option<WatchOptions>) -> Result<WatchStream> {
        self.watch_request(options.unwrap_or_default().build(key.into()), 0).await
    }

    /// A watch of `create`, its events' keys without their first `strip` bytes (a namespace's
    /// prefix).
    pub(crate) async fn watch_request(&self, create: WatchCreateRequest, strip: usize) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(64);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (ready, created) = oneshot::channel();
        let resuming = Resuming { client: self.clone(), create, strip, tx, ready: Some(ready) };
        let task = tokio::spawn(resuming.run(control_rx));
        let stream = WatchStream { rx, control, task };
        match created.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::WatchCanceled { reason: "the watch task ended".into(), compact_revision: 0 }),
        }
    }
}

/// A watch's task: one stream at a time, opened again after a failure from the revision after
/// the last delivered.
struct Resuming {
    client: Client,
    create: WatchCreateRequest,
    /// How many bytes to take off the front of every key delivered.
    strip: usize,
    tx: mpsc::Sender<Result<WatchResponse>>,
    /// Told when the first server accepted the watch, or refused it for good.
    ready: Option<oneshot::Sender<Result<()>>>,
}

/// How one stream ended.
enum Ended {
    /// The caller went away, or the server ended the watch for good.
    Done,
    /// The stream failed: open another.
    Failed(Error),
}

impl Resuming {
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut created = false;
        let mut attempts = 0u32;
        loop {
            let (index, channel) = self.client.pick();
            let err = match self.stream(channel, &mut created, &mut attempts, &mut control).await {
                Ended::Done => return,
                Ended::Failed(err) => err,
            };
            // A first creation that was refused for good goes to the caller as it is.
            if !created && !err.retryable() && !err.auth_stale() {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(err));
                }
                return;
            }
            if err.auth_stale() {
                let _ = self.client.authenticate().await;
            } else {
                self.client.failed(index);
            }
            attempts += 1;
            tokio::select! {
                () = tokio::time::sleep(crate::backoff(self.client.options().backoff, attempts.min(6))) => {}
                () = self.tx.closed() => return,
            }
        }
    }

    /// One stream: created from where the watch is, then forwarded until it fails.
    async fn stream(
        &mut self,
        channel: tonic::transport::Channel,
        created: &mut bool,
        attempts: &mut u32,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Ended {
        let (requests, requests_rx) = mpsc::channel(8);
        let create = WatchRequest { request_union: Some(RequestUnion::CreateRequest(self.create.clone())) };
        let _ = requests.try_send(create);
        let request = self.client.request(ReceiverStream::new(requests_rx), None);
        let mut responses = match WatchClient::new(channel).watch(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Ended::Failed(status.into()),
        };
        // A response the server split, until its last part.
        let mut partial: Option<WatchResponse> = None;
        loop {
            let message = tokio::select! {
                m = responses.message() => m,
                Some(Control::Progress) = control.recv() => {
                    let progress = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
                    let _ = requests.send(progress).await;
                    continue;
                }
                () = self.tx.closed() => {
                    let cancel = WatchRequest { request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: -1 })) };
                    let _ = requests.try_send(cancel);
                    return Ended::Done;
                }
            };
            let mut response = match message {
                Ok(Some(r)) => r,
                Ok(None) => return Ended::Failed(Error::Grpc(tonic::Status::unavailable("the watch stream ended"))),
                Err(status) => return Ended::Failed(status.into()),
            };
            if response.fragment {
                match &mut partial {
                    Some(p) => p.events.append(&mut response.events),
                    None => partial = Some(response),
                }
                continue;
            }
            if let Some(mut p) = partial.take() {
                p.events.append(&mut response.events);
                p.fragment = false;
                response = p;
            }
            if response.canceled {
                let reason = response.cancel_reason.clone();
                // A leader lost (with `require_leader`) is a failure to recover from; the rest
                // (compaction, permission) end the watch.
                if reason.contains("no leader") {
                    return Ended::Failed(Error::Grpc(tonic::Status::unavailable(reason)));
                }
                let err = Error::WatchCanceled { reason, compact_revision: response.compact_revision };
                match self.ready.take() {
                    Some(ready) => drop(ready.send(Err(err))),
                    None => drop(self.tx.send(Err(err)).await),
                }
                return Ended::Done;
            }
            let revision = response.header.as_ref().map_or(0, |h| h.revision);
            if response.created {
                *attempts = 0;
                // From now on: resume after the revision the server started at.
                if self.create.start_revision == 0 {
                    self.create.start_revision = revision + 1;
                }
                if *created {
                    continue;
                }
                *created = true;
            } else if let Some(last) = response.events.last().and_then(|e| e.kv.as_ref()) {
                self.create.start_revision = last.mod_revision + 1;
            } else {
                // A progress notification: everything up to its revision was sent.
                self.create.start_revision = self.create.start_revision.max(revision + 1);
            }
            if self.strip > 0 {
                for event in &mut response.events {
                    crate::namespace::strip_prefix(self.strip, event.kv.as_mut());
                    crate::namespace::strip_prefix(self.strip, event.prev_kv.as_mut());
                }
            }
            if self.tx.send(Ok(response)).await.is_err() {
                return Ended::Done;
            }
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Ok(()));
            }
        }
    }
}
