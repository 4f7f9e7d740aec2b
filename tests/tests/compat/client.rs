//! The `etcd-client` crate, an independent Rust client of etcd, against ferrocd.

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, Error, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use ferrocd_test_utils::{Kind, Member};

fn status_message(e: Error) -> (tonic::Code, String) {
    match e {
        Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[test]
fn etcd_client_crate_works_unchanged() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = Client::connect([member.url()], None).await.unwrap();
        let put = client.put("app/a", "1", None).await.unwrap();
        assert_eq!(put.header().unwrap().revision(), 2);
        client.put("app/b", "2", None).await.unwrap();
        let prev = client.put("app/a", "3", Some(PutOptions::new().with_prev_key())).await.unwrap();
        assert_eq!(prev.prev_key().unwrap().value(), b"1");

        let got = client.get("app/", Some(GetOptions::new().with_prefix())).await.unwrap();
        assert_eq!(got.count(), 2);
        assert_eq!(got.kvs()[0].value_str().unwrap(), "3");
        assert_eq!(got.kvs()[0].version(), 2);

        let sorted = client
            .get(
                "app/",
                Some(GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend).with_limit(1)),
            )
            .await
            .unwrap();
        assert_eq!((sorted.kvs()[0].key(), sorted.more(), sorted.count()), (&b"app/a"[..], true, 2));

        let txn = Txn::new()
            .when([Compare::mod_revision("app/b", CompareOp::Equal, 3)])
            .and_then([TxnOp::put("app/c", "new", None), TxnOp::get("app/c", None)])
            .or_else([TxnOp::get("app/b", None)]);
        let resp = client.txn(txn).await.unwrap();
        assert!(resp.succeeded());
        assert_eq!(resp.header().unwrap().revision(), 5);

        let deleted = client.delete("app/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.unwrap();
        assert_eq!((deleted.deleted(), deleted.prev_kvs().len()), (3, 3));

        client.compact(5, None).await.unwrap();
        let err = client.get("app/a", Some(GetOptions::new().with_revision(3))).await.unwrap_err();
        assert_eq!(
            status_message(err),
            (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into())
        );
        let err = client.put("", "v", None).await.unwrap_err();
        assert_eq!(status_message(err), (tonic::Code::InvalidArgument, "etcdserver: key is not provided".into()));

        let status = client.status().await.unwrap();
        let version: Vec<u32> = status.version().split('.').map(|p| p.parse().unwrap()).collect();
        assert!(version >= vec![3, 5, 13], "Kubernetes needs 3.5.13 or later, got {}", status.version());
        assert_eq!(status.leader(), status.header().unwrap().member_id());
        assert!(status.db_size() > 0);
    });
}
