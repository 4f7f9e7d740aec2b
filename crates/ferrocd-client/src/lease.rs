//! Leases: [`Client::lease_grant`], [`Client::lease_revoke`], [`Client::lease_time_to_live`],
//! [`Client::lease_leases`], and [`Client::lease_keep_alive`], a task that renews a lease
//! until it is dropped.
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! use ferrocd_client::kv::PutOptions;
//!
//! let lease = client.lease_grant(10, None).await?.id;
//! client.put("session", "alive", Some(PutOptions::new().with_lease(lease))).await?;
//! let keeper = client.lease_keep_alive(lease).await?;
//! // ... while `keeper` lives, the lease (and the key) stay.
//! drop(keeper);
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use std::time::Duration;

use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::watch;

use crate::{Client, Error, Repeat, Result};

impl Client {
    /// A lease of `ttl` seconds (the server may raise it to its minimum), with the given ID or
    /// one the server picks.
    ///
    /// # Errors
    /// etcd's: [`crate::EtcdError::LeaseExists`], [`crate::EtcdError::LeaseTtlTooLarge`],
    /// [`crate::EtcdError::NoSpace`].
    pub async fn lease_grant(&self, ttl: i64, id: Option<i64>) -> Result<LeaseGrantResponse> {
        let request = LeaseGrantRequest { ttl, id: id.unwrap_or(0) };
        // With an ID a repeat is answered "already exists"; without one it would grant twice.
        let repeat = if id.is_some() { Repeat::Idempotent } else { Repeat::Once };
        self.call(request, repeat, |ch, r| async move { LeaseClient::new(ch).lease_grant(r).await }).await
    }

    /// Revokes the lease and deletes its keys.
    ///
    /// # Errors
    /// etcd's: [`crate::EtcdError::LeaseNotFound`].
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse> {
        let request = LeaseRevokeRequest { id };
        self.call(request, Repeat::Once, |ch, r| async move { LeaseClient::new(ch).lease_revoke(r).await }).await
    }

    /// The lease's remaining and granted TTL, with its keys when `keys`.
    ///
    /// # Errors
    /// An unreachable cluster (an unknown lease answers TTL -1).
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        let request = LeaseTimeToLiveRequest { id, keys };
        self.call(request, Repeat::Idempotent, |ch, r| async move { LeaseClient::new(ch).lease_time_to_live(r).await })
            .await
    }

    /// Every lease.
    ///
    /// # Errors
    /// An unreachable cluster.
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse> {
        self.call(LeaseLeasesRequest {}, Repeat::Idempotent, |ch, r| async move {
            LeaseClient::new(ch).lease_leases(r).await
        })
        .await
    }

    /// Renews the lease once; its TTL as renewed.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] when the lease is gone; an unreachable cluster.
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64> {
        Ok(self.lease_keep_alive_response(id).await?.ttl)
    }

    /// [`Client::lease_keep_alive_once`]'s whole answer, header included.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] when the lease is gone; an unreachable cluster.
    pub async fn lease_keep_alive_response(&self, id: i64) -> Result<LeaseKeepAliveResponse> {
        let reply = self
            .call(id, Repeat::Idempotent, |ch, r: tonic::Request<i64>| async move {
                let (metadata, extensions, id) = r.into_parts();
                let request =
                    tonic::Request::from_parts(metadata, extensions, tokio_stream::once(LeaseKeepAliveRequest { id }));
                let mut stream = LeaseClient::new(ch).lease_keep_alive(request).await?.into_inner();
                match stream.message().await? {
                    Some(reply) => Ok(tonic::Response::new(reply)),
                    None => Err(tonic::Status::unavailable("the keep-alive stream ended")),
                }
            })
            .await?;
        if reply.ttl <= 0 { Err(Error::LeaseExpired { id }) } else { Ok(reply) }
    }

    /// A task that renews the lease every third of its TTL (as etcd's clients do) until the
    /// returned keeper is dropped or the lease is found gone; failures in between are retried
    /// on the next endpoint.
    ///
    /// # Errors
    /// The first renewal's: [`Error::LeaseExpired`] when the lease is gone already.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeeper> {
        let ttl = self.lease_keep_alive_once(id).await?;
        let (tx, rx) = watch::channel(Ok(ttl));
        let client = self.clone();
        let task = tokio::spawn(async move {
            let mut ttl = ttl;
            loop {
                let wait = Duration::from_secs(u64::try_from(ttl).unwrap_or(1)) / 3;
                tokio::select! {
                    () = tokio::time::sleep(wait.max(Duration::from_millis(500))) => {}
                    () = tx.closed() => return,
                }
                match client.lease_keep_alive_once(id).await {
                    Ok(renewed) => {
                        ttl = renewed;
                        let _ = tx.send(Ok(renewed));
                    }
                    Err(Error::LeaseExpired { id }) => {
                        let _ = tx.send(Err(id));
                        return;
                    }
                    // Unreachable for now: try again sooner, while the lease still runs.
                    Err(_) => ttl = (ttl / 2).max(1),
                }
            }
        });
        Ok(LeaseKeeper { id, rx, task })
    }
}

/// Keeps a lease alive while it lives (see [`Client::lease_keep_alive`]).
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    /// The TTL of the last renewal, or the lease found gone.
    rx: watch::Receiver<std::result::Result<i64, i64>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// The lease's ID.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL the last renewal answered.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] once a renewal found the lease gone.
    pub fn ttl(&self) -> Result<i64> {
        (*self.rx.borrow()).map_err(|id| Error::LeaseExpired { id })
    }

    /// Waits for the next renewal; its TTL.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] once a renewal found the lease gone.
    pub async fn renewed(&mut self) -> Result<i64> {
        if self.rx.changed().await.is_err() {
            return self.ttl().and(Err(Error::LeaseExpired { id: self.id }));
        }
        self.ttl()
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
