//! Acknowledged writes survive `kill -9`; restarts keep every revision and the compaction.

use ferrocd_mvcc::testing::{KvApi, get_req, put_req, range_req};
use ferrocd_proto::etcdserverpb::CompactionRequest;
use ferrocd_test_utils::{Kind, Member};

use crate::grpc::Grpc;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let mut member = Member::start(Kind::Ferrocd, &[]);
    let mut last = 0;
    {
        let mut grpc = Grpc::connect(&member.endpoint());
        for i in 0..300 {
            last =
                grpc.put(put_req(&format!("durable/{i:04}"), &format!("value {i}"))).unwrap().header.unwrap().revision;
        }
    }
    member.kill();
    member.restart();
    let mut grpc = Grpc::connect(&member.endpoint());
    let all = grpc.range(range_req("durable/", "durable0")).unwrap();
    assert_eq!(all.count, 300, "every acknowledged put is there after SIGKILL");
    assert_eq!(all.header.unwrap().revision, last);
    assert_eq!(all.kvs[299].value, b"value 299");
}

#[test]
fn concurrent_acknowledged_writes_survive_sigkill() {
    let mut member = Member::start(Kind::Ferrocd, &[]);
    let endpoint = member.endpoint();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let mut grpc = Grpc::connect(&endpoint);
                for i in 0..100 {
                    grpc.put(put_req(&format!("c/{w}/{i:03}"), "v")).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    member.kill();
    member.restart();
    let mut grpc = Grpc::connect(&member.endpoint());
    let all = grpc.range(range_req("c/", "c0")).unwrap();
    assert_eq!(all.count, 800);
    assert_eq!(all.header.unwrap().revision, 801, "one revision per put, none lost or repeated");
}

#[test]
fn restart_keeps_history_and_compaction() {
    let mut member = Member::start(Kind::Ferrocd, &[]);
    let (before, hash) = {
        let mut grpc = Grpc::connect(&member.endpoint());
        for i in 0..20 {
            grpc.put(put_req("h/k", &i.to_string())).unwrap();
        }
        grpc.compact(CompactionRequest { revision: 10, physical: true }).unwrap();
        let hash = grpc
            .rt
            .block_on(grpc.maintenance.hash_kv(ferrocd_proto::etcdserverpb::HashKvRequest { revision: 0 }))
            .unwrap()
            .into_inner();
        (grpc.range(range_req("\0", "\0")).unwrap(), hash)
    };
    assert_eq!(member.stop().code(), Some(0), "SIGTERM stops the server cleanly");
    member.restart();
    let mut grpc = Grpc::connect(&member.endpoint());
    assert_eq!(grpc.range(range_req("\0", "\0")).unwrap().kvs, before.kvs);
    let mut old = get_req("h/k");
    old.revision = 15;
    assert_eq!(grpc.range(old.clone()).unwrap().kvs[0].value, b"13");
    old.revision = 9;
    assert_eq!(grpc.range(old).unwrap_err().message, "etcdserver: mvcc: required revision has been compacted");
    let again = grpc
        .rt
        .block_on(grpc.maintenance.hash_kv(ferrocd_proto::etcdserverpb::HashKvRequest { revision: 0 }))
        .unwrap()
        .into_inner();
    assert_eq!((again.hash, again.compact_revision, again.hash_revision), (hash.hash, 10, 21));
}
