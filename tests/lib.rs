//! ferrocd's cross-crate tests live in `tests/`: the end-to-end compatibility suite drives the
//! real `ferrocd` binary with the real etcdctl, the `etcd-client` crate and raw gRPC, and
//! diffs its answers against a real etcd. This library is empty on purpose.
