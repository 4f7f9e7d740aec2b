//! The whole server in one process (see `support/mod.rs`): three members on `MemEngine` over
//! the in-memory Raft transport stay linearizable when the leader is cut off.

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_in_one_process_stay_linearizable_when_the_leader_is_cut_off() {
    if let Err(violation) = support::leader_cut_off().await {
        panic!("not linearizable: {violation:?}");
    }
}
