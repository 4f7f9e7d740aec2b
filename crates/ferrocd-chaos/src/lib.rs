//! ferrocd's fault suite: clusters of the real `ferrocd` binary, one member per network
//! namespace, driven by concurrent clients while faults are injected — kill -9 and restart,
//! SIGSTOP, partitions (a member isolated, one-way drops, a bridge), a disk filling up, leader
//! moves, membership changes — with every history checked: KV linearizability
//! (`ferrocd-lincheck`), every answer against the revision history all members agree on,
//! watches (ordered, no gaps, no duplicates, resumable), lock safety, and every member's
//! HashKV equal at the end; with auth on (half the runs, or `--auth on`), every client works
//! as a user and permissions are revoked and granted during the faults, never bypassed; with
//! TLS on (half the runs, or `--tls on`), clients and peers speak TLS and the members'
//! certificate is rotated on disk at the start of every history; and a snapshot in etcd's
//! format taken while each fault is on must verify and restore to exactly the agreed history
//! up to its revision.
//! Runs are seeded; a failing seed replays the same faults.

pub mod auth;
pub mod check;
pub mod cluster;
pub mod faults;
pub mod net;
pub mod run;
pub mod snapshot;
pub mod tls;
pub mod workload;
