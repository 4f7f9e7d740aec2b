//! The faults: each injected into a running cluster under traffic, held for a while, then
//! healed (the member restarted, resumed, the links restored), all choices drawn from the
//! history's seeded random numbers.

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cluster::ChaosCluster;
use crate::workload::Traffic;

/// The fault classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL a member (the leader or a follower), restart it a moment later.
    Kill,
    /// SIGSTOP a member for longer than an election timeout, then SIGCONT.
    Pause,
    /// Cut the leader off from every other member, both ways.
    IsolateLeader,
    /// Cut one follower off from every other member, both ways.
    IsolateFollower,
    /// Drop what one follower receives from the leader (one way).
    OneWay,
    /// Split the others in two halves that only one member (the bridge) connects.
    Bridge,
    /// Fill the disk of the member with a small one: it must stop; freed, it starts again.
    DiskFull,
    /// Move leadership around, several times.
    MoveLeader,
    /// Add a learner, promote it, remove it again.
    Membership,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::Kill,
        Fault::Pause,
        Fault::IsolateLeader,
        Fault::IsolateFollower,
        Fault::OneWay,
        Fault::Bridge,
        Fault::DiskFull,
        Fault::MoveLeader,
        Fault::Membership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateFollower => "isolate-follower",
            Fault::OneWay => "one-way",
            Fault::Bridge => "bridge",
            Fault::DiskFull => "disk-full",
            Fault::MoveLeader => "move-leader",
            Fault::Membership => "membership",
        }
    }

    /// # Errors
    /// An unknown name.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name).with_context(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
            format!("unknown fault {name:?} (known: {})", names.join(", "))
        })
    }
}

fn millis(rng: &mut fastrand::Rng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.u64(from..to))
}

/// Injects `fault` into `cluster` and heals it; answers what was done.
///
/// # Errors
/// When the fault cannot be injected or healed (a member that does not come back is one).
pub async fn inject(
    fault: Fault,
    cluster: &mut ChaosCluster,
    traffic: &Traffic,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<String> {
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let members = cluster.members();
    let followers: Vec<usize> = members.iter().copied().filter(|&m| m != leader).collect();
    let follower = followers[rng.usize(..followers.len())];
    Ok(match fault {
        Fault::Kill => {
            let target = if rng.bool() { leader } else { follower };
            let down = millis(rng, 500, 3000);
            cluster.kill(target);
            tokio::time::sleep(down).await;
            cluster.restart(target).await?;
            format!("killed host {target}{} for {down:?}", role(target, leader))
        }
        Fault::Pause => {
            let target = if rng.bool() { leader } else { follower };
            let paused = millis(rng, 1500, 4000);
            cluster.host(target).member.pause();
            tokio::time::sleep(paused).await;
            cluster.host(target).member.resume();
            format!("paused host {target}{} for {paused:?}", role(target, leader))
        }
        Fault::IsolateLeader | Fault::IsolateFollower => {
            let target = if fault == Fault::IsolateLeader { leader } else { follower };
            let cut = millis(rng, 1500, 4000);
            for &other in &members {
                if other != target {
                    cluster.net.cut(target, other)?;
                }
            }
            tokio::time::sleep(cut).await;
            cluster.net.heal()?;
            format!("isolated host {target}{} for {cut:?}", role(target, leader))
        }
        Fault::OneWay => {
            let cut = millis(rng, 1500, 4000);
            cluster.net.drop_from(follower, leader)?;
            tokio::time::sleep(cut).await;
            cluster.net.heal()?;
            format!("dropped what host {follower} receives from leader host {leader} for {cut:?}")
        }
        Fault::Bridge => {
            // The bridge talks to everyone; the halves only to it and among themselves.
            let mut others = members.clone();
            rng.shuffle(&mut others);
            let bridge = others.pop().context("members")?;
            let (a, b) = others.split_at(others.len() / 2);
            let cut = millis(rng, 1500, 4000);
            for &x in a {
                for &y in b {
                    cluster.net.cut(x, y)?;
                }
            }
            tokio::time::sleep(cut).await;
            cluster.net.heal()?;
            format!("host {bridge} bridged {a:?} and {b:?} for {cut:?} (leader was host {leader})")
        }
        Fault::DiskFull => disk_full(cluster).await?,
        Fault::MoveLeader => {
            let mut moves = Vec::new();
            for _ in 0..3 {
                let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
                let others: Vec<usize> = cluster.members().into_iter().filter(|&m| m != leader).collect();
                let to = others[rng.usize(..others.len())];
                cluster.move_leader(leader, to).await?;
                moves.push(format!("{leader}->{to}"));
                tokio::time::sleep(millis(rng, 200, 1000)).await;
            }
            format!("moved leadership {}", moves.join(", "))
        }
        Fault::Membership => {
            let spare = (1..=cluster.net.slots()).find(|&s| cluster.hosts[s - 1].is_none()).context("no free host")?;
            cluster.add_learner(spare).await?;
            traffic.endpoints.write().push((spare, cluster.host(spare).raw.clone()));
            cluster.promote(spare, Duration::from_secs(30)).await?;
            tokio::time::sleep(millis(rng, 300, 1500)).await;
            // Clients stop using it before it goes (they would only see it refuse).
            traffic.endpoints.write().retain(|(slot, _)| *slot != spare);
            cluster.remove(spare, Duration::from_secs(30)).await?;
            format!("added host {spare} as a learner, promoted it, removed it")
        }
    })
}

fn role(target: usize, leader: usize) -> &'static str {
    if target == leader { " (the leader)" } else { " (a follower)" }
}

/// Fills the small disk: the member must exit with a fatal error (a write or its log fails);
/// then the disk is freed and the member restarted.
async fn disk_full(cluster: &mut ChaosCluster) -> anyhow::Result<String> {
    let slot = (1..=cluster.hosts.len())
        .find(|&s| cluster.hosts[s - 1].as_ref().is_some_and(|h| h.disk.is_some()))
        .context("no member has a small disk")?;
    let filled = {
        let host = cluster.host(slot);
        host.disk.as_ref().map_or(0, ferrocd_test_utils::Tmpfs::fill)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let host = cluster.host_mut(slot);
        if host.member.exited() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            if let Some(disk) = &host.disk {
                disk.free();
            }
            bail!("host {slot} went on running 30 s after its disk filled up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let host = cluster.host_mut(slot);
    let status = host.member.exit_status().context("an exit status")?;
    let log = host.member.log();
    if let Some(disk) = &host.disk {
        disk.free();
    }
    if status.success() {
        bail!("host {slot} exited successfully on a full disk");
    }
    if !log.contains("raft stopped on a fatal error") {
        bail!("host {slot} exited ({status}) without the fatal log line");
    }
    cluster.restart(slot).await?;
    Ok(format!("filled host {slot}'s disk ({} MiB): it stopped ({status}), freed, restarted", filled >> 20))
}
