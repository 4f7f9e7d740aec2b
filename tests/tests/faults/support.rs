//! A blocking gRPC client for one member, and cluster helpers shared by the fault tests.

use std::time::Duration;

use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest, StatusResponse};
use ferrocd_test_utils::{Cluster, wait_for};
use tonic::transport::Channel;

/// etcd's default timings (the tests run beside others on 2 cores).
pub const TIMING: &[&str] = &["--heartbeat-interval", "100", "--election-timeout", "1000"];
pub const WAIT: Duration = Duration::from_secs(60);

/// The fault tests run one at a time: each runs a cluster and pauses or fills parts of it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A blocking client of one member's KV, Lease and Maintenance services.
pub struct Client {
    pub rt: tokio::runtime::Runtime,
    pub kv: KvClient<Channel>,
    pub lease: LeaseClient<Channel>,
    pub maintenance: MaintenanceClient<Channel>,
}

impl Client {
    pub fn connect(endpoint: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let _guard = rt.enter();
        let channel = Channel::from_shared(format!("http://{endpoint}")).expect("a URI").connect_lazy();
        Self {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
            lease: LeaseClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel),
            rt,
        }
    }

    /// Maintenance.Status, within `timeout`.
    pub fn status(&mut self, timeout: Duration) -> Option<StatusResponse> {
        let call = self.maintenance.status(StatusRequest {});
        self.rt
            .block_on(async { tokio::time::timeout(timeout, call).await.ok()?.ok() })
            .map(tonic::Response::into_inner)
    }

    pub fn put(&mut self, key: &str, value: Vec<u8>) -> Result<i64, tonic::Status> {
        let req = PutRequest { key: key.as_bytes().to_vec(), value, ..Default::default() };
        let resp = self.rt.block_on(self.kv.put(req))?.into_inner();
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// A serializable count of the keys under `prefix`.
    pub fn count_serializable(&mut self, prefix: &str) -> Result<i64, tonic::Status> {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a prefix") += 1;
        let req = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            count_only: true,
            serializable: true,
            ..Default::default()
        };
        Ok(self.rt.block_on(self.kv.range(req))?.into_inner().count)
    }
}

/// The index in `cluster.members` of the member every member names leader (waits for one).
pub fn leader(cluster: &Cluster) -> usize {
    let mut found = None;
    wait_for("a leader every member agrees on", WAIT, || {
        let statuses: Vec<Option<StatusResponse>> =
            cluster.members.iter().map(|m| Client::connect(&m.endpoint()).status(Duration::from_secs(2))).collect();
        let Some(Some(first)) = statuses.first() else { return false };
        let agreed = statuses.iter().all(|s| s.as_ref().is_some_and(|s| s.leader == first.leader && s.leader != 0));
        found = agreed
            .then(|| {
                statuses.iter().position(|s| {
                    s.as_ref().is_some_and(|s| s.header.as_ref().is_some_and(|h| h.member_id == s.leader))
                })
            })
            .flatten();
        found.is_some()
    });
    found.expect("a leader")
}
