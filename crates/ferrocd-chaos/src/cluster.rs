//! A cluster of real `ferrocd` processes, one per network namespace, with the operations the
//! faults need: stop, pause, restart, membership changes, leader moves, a disk that fills up;
//! and the end-of-history checks that every member converged.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{
    HashKvRequest, MemberAddRequest, MemberPromoteRequest, MemberRemoveRequest, MoveLeaderRequest, StatusRequest,
    StatusResponse,
};
use ferrocd_test_utils::{Cluster, Kind, Member, Tmpfs};
use tonic::transport::{Channel, Endpoint};

use crate::auth::{self, Authed, Session};
use crate::net::Net;
use crate::tls::ChaosTls;

/// How big the one small disk of a cluster is.
const SMALL_DISK_MIB: u64 = 256;

/// A member host: its process (when started) and what the cluster knows of it.
#[derive(Debug)]
pub struct Host {
    /// The filesystem its data dir is on, when it is the small disk (unmounted first).
    pub disk: Option<Tmpfs>,
    pub member: Member,
    /// Its member ID (once known).
    pub id: u64,
    /// Its client URL, without a token.
    pub raw: Channel,
    /// Its client URL, as root (when auth is on).
    pub channel: Authed,
}

/// A running cluster in `net`.
#[derive(Debug)]
pub struct ChaosCluster {
    pub net: Arc<Net>,
    /// Host `slot` at index `slot - 1`; `None`: nothing there (never started, or removed).
    pub hosts: Vec<Option<Host>>,
    flags: Vec<String>,
    /// The orchestrator's session: root's once auth is on.
    pub root: Session,
    /// The etcdctl arguments that tell a member serves.
    probe: Vec<String>,
    /// The certificates, when the cluster speaks TLS.
    pub tls: Option<ChaosTls>,
}

/// A client connection to `endpoint`, over TLS with `tls` (tonic sees `http` either way: the
/// connector decides).
fn channel(endpoint: &str, tls: Option<&ChaosTls>) -> anyhow::Result<Channel> {
    let endpoint =
        Endpoint::from_shared(format!("http://{endpoint}"))?.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true);
    Ok(match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
        None => endpoint.connect_lazy(),
    })
}

/// The member of host `slot` (not started), with `flags`, over TLS with `tls`.
fn new_member(net: &Net, slot: usize, flags: &[String], tls: Option<&ChaosTls>) -> Member {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut member = Member::in_namespace(Kind::Ferrocd, &format!("m{slot}"), &flags, &net.ns(slot), &net.ip(slot));
    if let Some(tls) = tls {
        member.set_https(&tls.https());
    }
    member
}

impl ChaosCluster {
    /// Starts `size` members in hosts 1..=size of `net` with `flags`, host `small_disk` (if
    /// any) with its data dir on a small filesystem of its own, and waits until each serves.
    ///
    /// # Errors
    /// A member that does not start.
    pub async fn start(
        net: Arc<Net>,
        size: usize,
        flags: &[String],
        small_disk: Option<usize>,
        tls: Option<ChaosTls>,
    ) -> anyhow::Result<Self> {
        let mut flags = flags.to_vec();
        flags.extend(tls.as_ref().map(ChaosTls::flags).unwrap_or_default());
        let mut members: Vec<Member> = (1..=size).map(|slot| new_member(&net, slot, &flags, tls.as_ref())).collect();
        let spec = Cluster::spec(members.iter());
        let mut hosts = Vec::new();
        for (i, mut member) in members.drain(..).enumerate() {
            member.in_cluster(&spec, "new");
            let disk = (small_disk == Some(i + 1)).then(|| Tmpfs::mount(&member.data_dir(), SMALL_DISK_MIB));
            member.spawn();
            let raw = channel(&member.endpoint(), tls.as_ref())?;
            hosts.push(Some(Host { member, id: 0, channel: Session::anonymous().on(raw.clone()), raw, disk }));
        }
        hosts.resize_with(net.slots(), || None);
        let probe = vec!["get".to_string(), "probe".to_string()];
        let mut cluster = Self { net, hosts, flags, root: Session::anonymous(), probe, tls };
        for slot in 1..=size {
            cluster.wait_serving(slot).await?;
        }
        Ok(cluster)
    }

    /// Turns auth on (see [`auth::enable`]); from then on the orchestrator works as root.
    ///
    /// # Errors
    /// A refused request.
    pub async fn enable_auth(&mut self) -> anyhow::Result<()> {
        let slot = self.wait_leader(Duration::from_secs(30)).await?;
        let raw = self.host(slot).raw.clone();
        auth::enable(raw.clone()).await.context("turn auth on")?;
        self.root = Session::user(auth::ROOT);
        self.root.login(raw).await.context("log in as root")?;
        for host in self.hosts.iter_mut().flatten() {
            host.channel = self.root.on(host.raw.clone());
        }
        self.probe = ["--user", &format!("{}:{}", auth::ROOT.0, auth::ROOT.1), "get", "probe"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Ok(())
    }

    /// Sends `call` to host `slot` as root, and again after logging in anew when the token was
    /// no good any more (a restarted member forgets simple tokens; a JWT names an old revision).
    ///
    /// # Errors
    /// The call's error.
    pub async fn as_root<T, F: Future<Output = Result<T, tonic::Status>>>(
        &self,
        slot: usize,
        call: impl Fn(Authed) -> F,
    ) -> Result<T, tonic::Status> {
        let host = self.host(slot);
        match call(host.channel.clone()).await {
            Err(status) if self.root.renew(&status, host.raw.clone()).await => call(host.channel.clone()).await,
            answer => answer,
        }
    }

    /// Waits (up to 60 s) until host `slot` serves a linearizable read, then records its ID.
    async fn wait_serving(&mut self, slot: usize) -> anyhow::Result<()> {
        let host = self.hosts[slot - 1].as_mut().context("no such host")?;
        let probe: Vec<&str> = self.probe.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| host.member.wait_until_ready(&probe));
        let status = self.status(slot, Duration::from_secs(5)).await.context("the status of a started member")?;
        if let Some(host) = self.hosts[slot - 1].as_mut() {
            host.id = status.header.map_or(0, |h| h.member_id);
        }
        Ok(())
    }

    /// The hosts with a member process running (paused ones included).
    pub fn running(&mut self) -> Vec<usize> {
        (1..=self.hosts.len())
            .filter(|&slot| self.hosts[slot - 1].as_mut().is_some_and(|h| !h.member.exited()))
            .collect()
    }

    /// The hosts of the cluster's members (running or not).
    pub fn members(&self) -> Vec<usize> {
        (1..=self.hosts.len()).filter(|&slot| self.hosts[slot - 1].is_some()).collect()
    }

    pub fn host(&self, slot: usize) -> &Host {
        self.hosts[slot - 1].as_ref().expect("a member on that host")
    }

    pub fn host_mut(&mut self, slot: usize) -> &mut Host {
        self.hosts[slot - 1].as_mut().expect("a member on that host")
    }

    /// Maintenance.Status of host `slot`, if it answers within `timeout`.
    pub async fn status(&self, slot: usize, timeout: Duration) -> Option<StatusResponse> {
        self.hosts.get(slot - 1)?.as_ref()?;
        let status = |channel| async move { MaintenanceClient::new(channel).status(StatusRequest {}).await };
        let answer = tokio::time::timeout(timeout, self.as_root(slot, status)).await;
        answer.ok()?.ok().map(tonic::Response::into_inner)
    }

    /// The host whose member leads, as a majority of the members that answer say.
    pub async fn leader(&mut self) -> Option<usize> {
        let members = self.members();
        let mut named = Vec::new();
        for &slot in &members {
            if let Some(s) = self.status(slot, Duration::from_millis(500)).await {
                named.push(s.leader);
            }
        }
        let leader =
            *named.iter().find(|&&l| l != 0 && named.iter().filter(|&&m| m == l).count() * 2 > members.len())?;
        members.into_iter().find(|&slot| self.host(slot).id == leader)
    }

    /// Waits (up to `timeout`) for a leader a majority agrees on.
    ///
    /// # Errors
    /// When none is agreed on in time.
    pub async fn wait_leader(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no leader agreed on within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills host `slot`'s process (SIGKILL).
    pub fn kill(&mut self, slot: usize) {
        self.host_mut(slot).member.kill();
    }

    /// Starts host `slot`'s member again on its data dir and waits until it serves.
    ///
    /// # Errors
    /// When it does not come back.
    pub async fn restart(&mut self, slot: usize) -> anyhow::Result<()> {
        let host = self.host_mut(slot);
        host.member.kill();
        host.member.respawn();
        self.wait_serving(slot).await
    }

    /// Hands leadership from the leader to `to`.
    ///
    /// # Errors
    /// etcd's errors for MoveLeader.
    pub async fn move_leader(&mut self, leader: usize, to: usize) -> anyhow::Result<()> {
        let target_id = self.host(to).id;
        let send =
            |channel| async move { MaintenanceClient::new(channel).move_leader(MoveLeaderRequest { target_id }).await };
        tokio::time::timeout(Duration::from_secs(15), self.as_root(leader, send))
            .await
            .context("move-leader timed out")??;
        Ok(())
    }

    /// Adds a learner on the free host `slot` (MemberAdd through any member, then its process
    /// with `--initial-cluster-state existing`) and waits until it serves.
    ///
    /// # Errors
    /// A refused MemberAdd, a member that does not start.
    pub async fn add_learner(&mut self, slot: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.hosts[slot - 1].is_none(), "host {slot} is taken");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let peer_url = format!("{scheme}://{}:2380", self.net.ip(slot));
        let via = *self.members().first().context("no member")?;
        let add = |channel| {
            let req = MemberAddRequest { peer_ur_ls: vec![peer_url.clone()], is_learner: true };
            async move { ClusterClient::new(channel).member_add(req).await }
        };
        let added = tokio::time::timeout(Duration::from_secs(15), self.as_root(via, add))
            .await
            .context("member add timed out")??
            .into_inner();
        let mut member = new_member(&self.net, slot, &self.flags, self.tls.as_ref());
        let mut with_new: Vec<&Member> = self.hosts.iter().flatten().map(|h| &h.member).collect();
        with_new.push(&member);
        let spec = Cluster::spec(with_new.into_iter());
        member.in_cluster(&spec, "existing");
        member.spawn();
        let raw = channel(&member.endpoint(), self.tls.as_ref())?;
        let id = added.member.map_or(0, |m| m.id);
        self.hosts[slot - 1] = Some(Host { member, id, channel: self.root.on(raw.clone()), raw, disk: None });
        if self.root.is_anonymous() {
            // A learner serves only serializable reads.
            let host = self.host_mut(slot);
            tokio::task::block_in_place(|| host.member.wait_until_ready(&["get", "probe", "--consistency=s"]));
            return Ok(());
        }
        // A learner does not authenticate (etcdctl's probe logs in): its Status, as root,
        // logged in through a voter.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.status(slot, Duration::from_secs(1)).await.is_none() {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the learner on host {slot} did not serve in 30 s");
            let _ = self.root.login(self.host(via).raw.clone()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Sends a membership change through the leader until it succeeds (or `done` says its
    /// refusal means it is done already), up to `timeout`; other refusals and timeouts are
    /// retried meanwhile.
    async fn change<F: Future<Output = Result<(), tonic::Status>>>(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&tonic::Status) -> bool,
        send: impl Fn(ClusterClient<Authed>) -> F,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let via = self.wait_leader(timeout).await?;
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                self.as_root(via, |channel| send(ClusterClient::new(channel))),
            );
            let late = tokio::time::Instant::now() >= deadline;
            match answer.await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(status)) if done(&status) => return Ok(()),
                Ok(Err(status)) if late => bail!("{what}: {}", status.message()),
                Ok(Err(status)) => note(&format!("{what} refused for now: {}", status.message())),
                Err(_) if late => bail!("{what} timed out"),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Promotes the learner on host `slot`, retrying (up to `timeout`) while it is not yet in
    /// sync with the leader.
    ///
    /// # Errors
    /// When it is not promoted in time.
    pub async fn promote(&mut self, slot: usize, timeout: Duration) -> anyhow::Result<()> {
        let id = self.host(slot).id;
        let send = move |mut client: ClusterClient<Authed>| async move {
            client.member_promote(MemberPromoteRequest { id }).await.map(drop)
        };
        self.change(&format!("promote of host {slot}"), timeout, |_| false, send).await
    }

    /// Removes the member on host `slot` from the cluster (through the leader) and stops its
    /// process; the host is free again.
    ///
    /// # Errors
    /// A refused MemberRemove.
    pub async fn remove(&mut self, slot: usize, timeout: Duration) -> anyhow::Result<()> {
        let id = self.host(slot).id;
        let send = move |mut client: ClusterClient<Authed>| async move {
            client.member_remove(MemberRemoveRequest { id }).await.map(drop)
        };
        let gone = |status: &tonic::Status| status.message().contains("member not found");
        self.change(&format!("remove of host {slot}"), timeout, gone, send).await?;
        if let Some(mut host) = self.hosts[slot - 1].take() {
            host.member.kill();
        }
        Ok(())
    }

    /// Waits (up to `timeout`) until every member runs, agrees on the leader, has applied the
    /// same index and reports the same revision; then checks that every member's HashKV at that
    /// revision is the same. Answers the revision.
    ///
    /// # Errors
    /// Members that do not converge, or differ.
    pub async fn converged(&mut self, timeout: Duration) -> anyhow::Result<i64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let members = self.members();
        let revision = loop {
            let mut statuses = Vec::new();
            for &slot in &members {
                statuses.push(self.status(slot, Duration::from_secs(1)).await);
            }
            let all: Option<Vec<StatusResponse>> = statuses.into_iter().collect();
            if let Some(all) = all {
                let first = &all[0];
                let revision = first.header.as_ref().map_or(0, |h| h.revision);
                let same = all.iter().all(|s| {
                    s.leader != 0
                        && s.leader == first.leader
                        && s.raft_applied_index == first.raft_applied_index
                        && s.header.as_ref().map_or(0, |h| h.revision) == revision
                });
                if same {
                    break revision;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the members did not converge within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut hashes = Vec::new();
        for &slot in &members {
            let hash_kv =
                |channel| async move { MaintenanceClient::new(channel).hash_kv(HashKvRequest { revision }).await };
            let hash = tokio::time::timeout(Duration::from_secs(10), self.as_root(slot, hash_kv))
                .await
                .context("HashKV timed out")??
                .into_inner();
            hashes.push((slot, hash.hash, hash.compact_revision));
        }
        if hashes.iter().any(|h| (h.1, h.2) != (hashes[0].1, hashes[0].2)) {
            bail!("HashKV differs at revision {revision}: (host, hash, compact revision) {hashes:?}");
        }
        Ok(revision)
    }
}

/// Progress notes go to standard error (the suite's own output is its report).
pub fn note(note: &str) {
    eprintln!("  note: {note}");
}
