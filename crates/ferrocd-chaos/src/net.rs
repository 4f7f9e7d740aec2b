//! Hosts on one machine: each member in a network namespace of its own, all on one bridge, so
//! that faults cut real links — `iptables` rules in a member's namespace drop what arrives from
//! chosen peers (a partition, one way or both, a bridge between two halves).
//!
//! The switch namespace holds the bridge and the address the driver (this process) talks from;
//! the driver moves itself into it before it starts any thread. Everything is made by this run,
//! named after its process ID, and deleted when dropped; the host's own network is not touched.

use std::process::Command;

use anyhow::{Context as _, bail};

/// The members' subnet: private to this run's namespaces (no other host sees it).
const SUBNET: &str = "10.218.0";
/// The switch's (and the driver's) address on it.
pub const DRIVER: u8 = 254;

/// The namespaces of one run: a switch and up to `slots` member hosts.
#[derive(Debug)]
pub struct Net {
    prefix: String,
    slots: usize,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("run {}", args[0]))?;
    if !out.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Net {
    /// Makes the switch and `slots` member namespaces (hosts 1..=slots). Namespaces a crashed
    /// earlier run of this tool left behind (named after a process that is gone) are removed
    /// first.
    ///
    /// # Errors
    /// Without root, or without `ip` (Debian's iproute2).
    pub fn create(slots: usize) -> anyhow::Result<Self> {
        remove_stale();
        let prefix = format!("fcd{}", std::process::id());
        let net = Self { prefix, slots };
        let sw = net.switch();
        run(&["ip", "netns", "add", &sw])?;
        run(&["ip", "netns", "exec", &sw, "ip", "link", "set", "lo", "up"])?;
        run(&["ip", "netns", "exec", &sw, "ip", "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "netns", "exec", &sw, "ip", "addr", "add", &format!("{SUBNET}.{DRIVER}/24"), "dev", "br0"])?;
        run(&["ip", "netns", "exec", &sw, "ip", "link", "set", "br0", "up"])?;
        for slot in 1..=slots {
            let ns = net.ns(slot);
            let (inside, outside) = (format!("{}m{slot}", net.prefix), format!("{}v{slot}", net.prefix));
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &inside, "netns", &ns, "type", "veth", "peer", "name", &outside, "netns", &sw])?;
            run(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{}/24", net.ip(slot)), "dev", &inside])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &inside, "up"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            run(&["ip", "netns", "exec", &sw, "ip", "link", "set", &outside, "master", "br0"])?;
            run(&["ip", "netns", "exec", &sw, "ip", "link", "set", &outside, "up"])?;
        }
        Ok(net)
    }

    /// Moves the calling thread into the switch namespace. Call it before any other thread
    /// starts: threads made afterwards inherit it.
    ///
    /// # Errors
    /// When the namespace cannot be entered.
    pub fn enter_switch(&self) -> anyhow::Result<()> {
        let file =
            std::fs::File::open(format!("/var/run/netns/{}", self.switch())).context("open the switch namespace")?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("enter the switch namespace")
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The namespace of member host `slot`.
    pub fn ns(&self, slot: usize) -> String {
        format!("{}-{slot}", self.prefix)
    }

    /// The address of member host `slot`.
    pub fn ip(&self, slot: usize) -> String {
        format!("{SUBNET}.{slot}")
    }

    /// How many member hosts there are.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Drops every packet host `to` receives from host `from` (one way).
    ///
    /// # Errors
    /// When iptables fails.
    pub fn drop_from(&self, to: usize, from: usize) -> anyhow::Result<()> {
        let ns = self.ns(to);
        run(&["ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &self.ip(from), "-j", "DROP"])
    }

    /// Cuts the links between `a` and `b`, both ways.
    ///
    /// # Errors
    /// When iptables fails.
    pub fn cut(&self, a: usize, b: usize) -> anyhow::Result<()> {
        self.drop_from(a, b)?;
        self.drop_from(b, a)
    }

    /// Restores every link.
    ///
    /// # Errors
    /// When iptables fails.
    pub fn heal(&self) -> anyhow::Result<()> {
        for slot in 1..=self.slots {
            run(&["ip", "netns", "exec", &self.ns(slot), "iptables", "-F", "INPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for slot in 1..=self.slots {
            let _ = run(&["ip", "netns", "del", &self.ns(slot)]);
        }
        let _ = run(&["ip", "netns", "del", &self.switch()]);
    }
}

/// Deletes namespaces named after a run of this tool whose process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix("fcd").and_then(|rest| rest.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}
