//! A member whose storage fails stops, as etcd's does: it must not go on serving stale reads
//! and silent watches while reporting itself healthy.

use ferrocd_test_utils::{Kind, Member, Tmpfs, wait_for};

use crate::support::{Client, WAIT, one_at_a_time};

#[test]
fn a_member_whose_disk_fills_up_stops_with_a_fatal_error() {
    let _serial = one_at_a_time();
    let mut member = Member::new(Kind::Ferrocd, "m1", &[]);
    let disk = Tmpfs::mount(&member.data_dir(), 64);
    member.spawn();
    member.wait_until_serving();
    let mut client = Client::connect(&member.endpoint());
    client.put("before", b"v".to_vec()).unwrap();
    disk.fill();
    // Writes fail once the log or the keyspace cannot be written; the member then exits.
    let mut failed = None;
    for i in 0..1000 {
        if let Err(e) = client.put(&format!("k{i}"), vec![7; 64 << 10]) {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("a write failed on a full disk");
    eprintln!("the write on a full disk answered {failed:?}");
    wait_for("the member to exit", WAIT, || member.exited());
    let status = member.exit_status().expect("an exit status");
    assert!(!status.success(), "a member whose storage failed exited with {status}");
    let log = member.log();
    assert!(log.contains("raft stopped on a fatal error"), "no fatal log line:\n{log}");
    // Nothing answers any more (no stale serializable reads).
    assert!(client.count_serializable("before").is_err());
    // With space again, it starts and has every acknowledged write.
    disk.free();
    member.kill();
    member.respawn();
    member.wait_until_serving();
    let mut client = Client::connect(&member.endpoint());
    assert_eq!(client.count_serializable("before").unwrap(), 1);
}
