//! The ferrocd server: etcd's v3 gRPC API over ferrocd's storage.
//!
//! This crate is the composition root. It is the one place that names concrete types
//! ([`RocksEngine`](ferrocd_engine_rocks::RocksEngine), the write path), maps every error to
//! etcd's gRPC status, and parses etcd's flags. Below it, no crate knows about gRPC transport.
//!
//! Request flow: a service checks the request as etcd does, then reads from the MVCC store
//! directly or hands a write to the [`write_path::WritePath`], which applies it and answers
//! once it is durable and visible.

pub mod config;
pub mod error;
pub mod ids;
pub mod logging;
pub mod services;
pub mod storage;
pub mod write_path;

use std::net::SocketAddr;
use std::sync::Arc;

use ferrocd_engine_rocks::RocksEngine;
use ferrocd_mvcc::{KvStore, Options};
use ferrocd_proto::etcdserverpb::kv_server::KvServer;
use ferrocd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::Config;
use services::kv::KvService;
use services::maintenance::MaintenanceService;
use services::{Shared, SizeCache};
use write_path::LocalWritePath;

/// gRPC's per-message overhead etcd allows on top of `--max-request-bytes`.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// A started server.
#[derive(Debug)]
pub struct Server {
    client_addrs: Vec<SocketAddr>,
    member_id: u64,
    cluster_id: u64,
    stop: watch::Sender<bool>,
    listeners: JoinSet<Result<(), tonic::transport::Error>>,
    kv: Arc<KvStore<RocksEngine>>,
}

impl Server {
    /// Opens the data directory and starts serving clients on every listen URL.
    ///
    /// # Errors
    /// An invalid configuration, a data directory that cannot be opened, an address in use.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        config.validate()?;
        let data_dir = config.data_dir();
        let engine = storage::open_engine(&data_dir)?;
        let kv = Arc::new(KvStore::open(Arc::clone(&engine), Options { max_txn_ops: config.max_txn_ops as usize })?);
        let fresh_member = ids::member_id(&config.advertise_peer_urls(), &config.initial_cluster_token);
        let (member_id, cluster_id) = storage::identity(&*engine, (fresh_member, ids::cluster_id(&[fresh_member])))?;
        let writes = LocalWritePath::start(Arc::clone(&kv), storage::applied_index(&*engine)?)?;
        let shared = Arc::new(Shared {
            kv: Arc::clone(&kv),
            writes,
            member_id,
            cluster_id,
            max_request_bytes: config.max_request_bytes as usize,
            max_txn_ops: config.max_txn_ops as usize,
            quota_bytes: config.quota_bytes(),
            db_size: SizeCache::default(),
        });
        let max_message = config.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
        let (stop, stopped) = watch::channel(false);
        let mut listeners = JoinSet::new();
        let mut client_addrs = Vec::new();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", tonic_health::ServingStatus::Serving).await;
        for addr in config.client_listen_addrs()? {
            let listener =
                TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            client_addrs.push(listener.local_addr()?);
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                if let Ok(stream) = &conn {
                    let _ = stream.set_nodelay(true);
                }
                conn
            });
            let router = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(std::time::Duration::from_secs(2 * 60 * 60)))
                .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
                .add_service(health_service.clone())
                .add_service(
                    KvServer::new(KvService(Arc::clone(&shared)))
                        .max_decoding_message_size(max_message)
                        .max_encoding_message_size(usize::MAX),
                )
                .add_service(
                    MaintenanceServer::new(MaintenanceService(Arc::clone(&shared)))
                        .max_decoding_message_size(max_message)
                        .max_encoding_message_size(usize::MAX),
                );
            let mut stopped = stopped.clone();
            listeners.spawn(router.serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
        }
        tracing::info!(
            name = %config.name,
            data_dir = %data_dir.display(),
            member_id = %format!("{member_id:x}"),
            cluster_id = %format!("{cluster_id:x}"),
            revision = kv.current_revision(),
            "ready to serve client requests on {client_addrs:?}"
        );
        Ok(Self { client_addrs, member_id, cluster_id, stop, listeners, kv })
    }

    /// The addresses clients can reach the server on (with the ports actually bound).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Waits until a listener fails (it never stops on its own otherwise).
    ///
    /// # Errors
    /// The failure of a listener.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        while let Some(done) = self.listeners.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Stops accepting requests, lets the ones in flight finish, and flushes the engine.
    ///
    /// # Errors
    /// A listener or the final sync failed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        while let Some(done) = self.listeners.join_next().await {
            done??;
        }
        self.kv.sync()?;
        tracing::info!("stopped serving");
        Ok(())
    }
}
