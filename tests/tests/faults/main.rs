//! Fault regression tests: real `ferrocd` clusters on loopback under the faults that once
//! broke them — a follower paused while large entries pile up, a lost quorum, a leader slow
//! to apply a revoke, a full disk, a restart that must catch up before it serves, a SIGTERM
//! while streams are open. Each reproduces its defect and fails without its fix.

mod support;

mod catch_up;
mod deadlines;
mod leases;
mod shutdown;
mod storage;
