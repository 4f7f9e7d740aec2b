//! End-to-end compatibility tests: the real `ferrocd` binary, driven by the real etcdctl,
//! the `etcd-client` crate and raw gRPC, and diffed against a real etcd.

mod auth;
mod auth_matrix;
mod backup;
mod client;
mod cluster;
mod ctl;
mod differential;
mod durability;
mod etcdctl;
mod gateway;
mod grpc;
mod http;
mod lease;
mod recipes;
mod sdk;
mod suite;
mod tls;
mod watch;
mod watch_cluster;
