//! The workload catalogue: what each workload sends, with how many clients over how many
//! connections, and in which phase of a repetition it runs.
//!
//! Keys are 8 bytes and values 256 bytes unless noted, as in etcd's own benchmark documentation.
//! The phases run in a fixed order, because etcd 3.4's read path slows down after a burst of
//! writes: reads on fresh data (only the keys they read are loaded), then the preload of the put
//! key space and the writes, then the same reads again. The cluster and watch workloads run on
//! servers of their own.

/// Size of every value written.
pub const VALUE_SIZE: usize = 256;
/// Keys `k0000000`… of the put workloads (and of the preload).
pub const PUT_KEY_SPACE: u64 = 100_000;
/// Keys `t0000000`… of the txn-put workload: each is created once, then updated.
pub const TXN_KEY_SPACE: u64 = 10_000;
/// The key single-key reads fetch.
pub const READ_KEY: &[u8] = b"foo";
/// `/r/0000` … `/r/0999`: the keys of the 1000-key range.
pub const RANGE_KEYS: usize = 1000;
/// The key watch-latency's watcher watches and its client puts.
pub const LATENCY_KEY: &[u8] = b"/w/lat";
/// The key watch-fanout's watchers watch and its client puts.
pub const FANOUT_KEY: &[u8] = b"/w/fan";
/// The key watch-stalled's put loop writes and its stalled watcher watches.
pub const HOT_KEY: &[u8] = b"/w/hot";
/// The name under which watch-stalled reports its put loop without watchers.
pub const STALLED_BASELINE: &str = "watch-stalled-baseline";

/// The key of the put workloads' `i`th key.
pub fn put_key(i: u64) -> Vec<u8> {
    format!("k{:07}", i % PUT_KEY_SPACE).into_bytes()
}

/// The key of the txn-put workload's `i`th key.
pub fn txn_key(i: u64) -> Vec<u8> {
    format!("t{:07}", i % TXN_KEY_SPACE).into_bytes()
}

/// The `i`th key of the 1000-key range.
pub fn range_key(i: usize) -> Vec<u8> {
    format!("/r/{i:04}").into_bytes()
}

/// What the reads need: [`READ_KEY`] and the 1000 range keys.
pub fn read_keys() -> Vec<Vec<u8>> {
    std::iter::once(READ_KEY.to_vec()).chain((0..RANGE_KEYS).map(range_key)).collect()
}

/// The key attached to the `i`th lease of the lease workloads.
pub fn lease_key(i: u64) -> Vec<u8> {
    format!("/l/{i:08}").into_bytes()
}

/// The `i`th key watched by an idle watcher of watch-stalled (never written).
pub fn idle_key(i: usize) -> Vec<u8> {
    format!("/w/idle/{i:05}").into_bytes()
}

/// The first `n` keys of the put key space.
pub fn put_keys(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(put_key).collect()
}

/// When in a repetition a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before any write burst: only the keys the reads need are loaded.
    Fresh,
    /// The write burst.
    Writes,
    /// After the write burst.
    AfterWrites,
    /// On a fresh 3-member cluster, against its leader (the other phases run on one member).
    Cluster,
    /// On a fresh member of its own: watchers, and one client putting the keys they watch.
    Watch,
    /// On a fresh member of its own: leases.
    Lease,
}

/// What one operation of a workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Put a random key of the put key space, or (sequential) the next one.
    Put { sequential: bool },
    /// Kubernetes' write: `Txn(If mod_revision(key) == known, Then put, Else get)`. Every client
    /// owns its keys, so the compare holds unless the server lost or misordered a write.
    TxnPut,
    /// A Range of [`READ_KEY`].
    Get { serializable: bool },
    /// A serializable Range of all [`RANGE_KEYS`] keys.
    Range1k,
    /// Put [`HOT_KEY`] (watch-stalled's put loop).
    PutHot,
    /// A watch workload: one client puts sequentially while watchers receive the events.
    Watch(WatchLoad),
    /// A lease workload.
    Lease(LeaseLoad),
}

/// What a lease workload does (see the `lease` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLoad {
    /// Each client renews its own lease on its own keep-alive stream.
    KeepAlive,
    /// Each operation grants a lease and puts a key attached to it.
    GrantAttach,
    /// `total` leases with a key each fall due at once; a put loop runs while they are revoked.
    MassExpiry,
}

/// What a watch workload sets up around its sequential puts. Watch streams are spread over the
/// workload's `conns` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchLoad {
    /// One watcher of [`LATENCY_KEY`]: the time from sending a put until its event arrives.
    Latency,
    /// `watchers` watchers of [`FANOUT_KEY`] on `streams` streams: the time from sending a put
    /// until every watcher got its event.
    Fanout { watchers: usize, streams: usize },
    /// `idle` watchers of keys never written on `streams` streams, plus one watcher of
    /// [`HOT_KEY`] on a stream whose reader never reads: the put loop's latency with them and
    /// without, and the server's memory.
    Stalled { idle: usize, streams: usize },
}

/// A workload of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub phase: Phase,
    pub op: Op,
    pub clients: usize,
    pub conns: usize,
    /// Operations at `--scale 1`.
    pub total: u64,
}

const fn w(name: &'static str, phase: Phase, op: Op, clients: usize, conns: usize, total: u64) -> Workload {
    Workload { name, phase, op, clients, conns, total }
}

const L: Op = Op::Get { serializable: false };
const S: Op = Op::Get { serializable: true };

/// Every workload, in the order a repetition runs them.
pub const CATALOGUE: &[Workload] = &[
    w("range-l-c1", Phase::Fresh, L, 1, 1, 10_000),
    w("range-s-c1", Phase::Fresh, S, 1, 1, 10_000),
    w("range-l-c100", Phase::Fresh, L, 100, 10, 100_000),
    w("range-s-c100", Phase::Fresh, S, 100, 10, 100_000),
    w("range-1k-s-c10", Phase::Fresh, Op::Range1k, 10, 10, 2_000),
    w("put-seq-c1", Phase::Writes, Op::Put { sequential: true }, 1, 1, 3_000),
    w("put-c100", Phase::Writes, Op::Put { sequential: false }, 100, 10, 30_000),
    w("put-c1000", Phase::Writes, Op::Put { sequential: false }, 1000, 100, 100_000),
    w("txn-put-c100", Phase::Writes, Op::TxnPut, 100, 10, 30_000),
    w("range-l-c1-after", Phase::AfterWrites, L, 1, 1, 10_000),
    w("range-s-c1-after", Phase::AfterWrites, S, 1, 1, 10_000),
    w("range-l-c100-after", Phase::AfterWrites, L, 100, 10, 100_000),
    w("range-s-c100-after", Phase::AfterWrites, S, 100, 10, 100_000),
    w("cluster3-put-seq-c1", Phase::Cluster, Op::Put { sequential: true }, 1, 1, 3_000),
    w("cluster3-put-c100", Phase::Cluster, Op::Put { sequential: false }, 100, 10, 30_000),
    w("cluster3-put-c1000", Phase::Cluster, Op::Put { sequential: false }, 1000, 100, 100_000),
    w("cluster3-range-l-c100", Phase::Cluster, L, 100, 10, 100_000),
    w("watch-latency", Phase::Watch, Op::Watch(WatchLoad::Latency), 1, 1, 3_000),
    w("watch-fanout-1000", Phase::Watch, Op::Watch(WatchLoad::Fanout { watchers: 1000, streams: 100 }), 1, 10, 1_000),
    w("watch-stalled", Phase::Watch, Op::Watch(WatchLoad::Stalled { idle: 10_000, streams: 100 }), 1, 10, 3_000),
    w("lease-keepalive", Phase::Lease, Op::Lease(LeaseLoad::KeepAlive), 100, 10, 100_000),
    w("lease-grant-attach", Phase::Lease, Op::Lease(LeaseLoad::GrantAttach), 100, 10, 20_000),
    w("lease-mass-expiry", Phase::Lease, Op::Lease(LeaseLoad::MassExpiry), 100, 10, 20_000),
];

/// The pseudo-workload that measures memory after the run and the restart.
pub const RESTART: &str = "restart";

/// Resolves `--workloads`: names, or the groups `reads`, `writes`, `after`, `cluster`, `watch`,
/// `all`.
pub fn select(spec: &str) -> Result<(Vec<Workload>, bool), String> {
    let mut chosen = Vec::new();
    let mut restart = false;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let group: Vec<Workload> = match part {
            "all" => {
                restart = true;
                CATALOGUE.to_vec()
            }
            "reads" => CATALOGUE.iter().filter(|w| w.phase == Phase::Fresh).copied().collect(),
            "writes" => CATALOGUE.iter().filter(|w| w.phase == Phase::Writes).copied().collect(),
            "after" => CATALOGUE.iter().filter(|w| w.phase == Phase::AfterWrites).copied().collect(),
            "cluster" => CATALOGUE.iter().filter(|w| w.phase == Phase::Cluster).copied().collect(),
            "watch" => CATALOGUE.iter().filter(|w| w.phase == Phase::Watch).copied().collect(),
            "lease" => CATALOGUE.iter().filter(|w| w.phase == Phase::Lease).copied().collect(),
            RESTART => {
                restart = true;
                Vec::new()
            }
            name => match CATALOGUE.iter().find(|w| w.name == name) {
                Some(w) => vec![*w],
                None => {
                    let names: Vec<&str> = CATALOGUE.iter().map(|w| w.name).collect();
                    return Err(format!(
                        "unknown workload {name:?}; choose from all, reads, writes, after, cluster, watch, {RESTART}, {}",
                        names.join(", ")
                    ));
                }
            },
        };
        chosen.extend(group);
    }
    // Catalogue order, each once.
    let ordered = CATALOGUE.iter().filter(|w| chosen.iter().any(|c| c.name == w.name)).copied().collect();
    Ok((ordered, restart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_eight_bytes() {
        assert_eq!(put_key(42), b"k0000042");
        assert_eq!(put_key(PUT_KEY_SPACE + 1), b"k0000001");
        assert_eq!(txn_key(TXN_KEY_SPACE - 1), b"t0009999");
        assert_eq!(range_key(999), b"/r/0999");
        assert_eq!(idle_key(9999), b"/w/idle/09999");
    }

    #[test]
    fn selection_keeps_catalogue_order_and_rejects_unknown_names() {
        let (chosen, restart) = select("put-c100,range-l-c1,put-c100").unwrap();
        assert_eq!(chosen.iter().map(|w| w.name).collect::<Vec<_>>(), ["range-l-c1", "put-c100"]);
        assert!(!restart);
        let (all, restart) = select("all").unwrap();
        assert_eq!(all.len(), CATALOGUE.len());
        assert!(restart);
        assert_eq!(select("writes").unwrap().0.len(), 4);
        assert!(select("cluster").unwrap().0.iter().all(|w| w.phase == Phase::Cluster));
        let watch: Vec<&str> = select("watch").unwrap().0.iter().map(|w| w.name).collect();
        assert_eq!(watch, ["watch-latency", "watch-fanout-1000", "watch-stalled"]);
        assert!(select("nope").unwrap_err().contains("unknown workload \"nope\""));
    }
}
