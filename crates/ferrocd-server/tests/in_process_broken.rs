//! The in-process scenario catches a known-wrong server: with the read barrier switched off
//! (failpoint `read-barrier=return`), linearizable reads are served from a member's local state,
//! and the cut-off leader answers stale reads the checker must find. A process of its own:
//! failpoints are global to the process.

#![cfg(feature = "failpoints")]

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_without_the_read_barrier_are_caught() {
    fail::cfg("read-barrier", "return").unwrap();
    // Stale reads need a read of a key written on the majority's side while the old leader is
    // cut off: a few runs make missing every one of them vanishingly unlikely.
    for run in 1..=3 {
        if support::leader_cut_off().await.is_err() {
            return;
        }
        eprintln!("run {run}: no violation seen yet");
    }
    panic!("three runs without the read barrier, and the checker found nothing");
}
