//! The KV semantics suite of `ferrocd-mvcc`, run over gRPC against the ferrocd binary, and
//! against a real etcd to keep the suite itself honest.

use ferrocd_mvcc::testing::{KvApi, Reference, put_req, run_suite, run_suite_as};
use ferrocd_proto::etcdserverpb::PutRequest;
use ferrocd_test_utils::{Kind, Member};
use ferrocd_types::ErrorCode;

use crate::grpc::{Grpc, failure};

#[test]
fn kv_suite_against_ferrocd() {
    let member = Member::start(Kind::Ferrocd, &[]);
    run_suite(&mut Grpc::connect(&member.endpoint()));
}

#[test]
fn kv_suite_against_etcd() {
    let member = Member::start(Kind::Etcd, &[]);
    run_suite_as(&mut Grpc::connect(&member.endpoint()), Reference::Etcd34);
}

#[test]
fn request_size_limits() {
    for kind in [Kind::Ferrocd, Kind::Etcd] {
        let member = Member::start(kind, &["--max-request-bytes", "1048576"]);
        let mut grpc = Grpc::connect(&member.endpoint());
        let big = PutRequest { key: b"big".to_vec(), value: vec![b'x'; 1024 * 1024 + 10], ..Default::default() };
        let err = grpc.put(big).expect_err("a request over --max-request-bytes fails");
        assert_eq!(
            (err.code, err.message.as_str()),
            (ErrorCode::InvalidArgument, "etcdserver: request is too large"),
            "{kind:?}"
        );
        let fits = PutRequest { key: b"fits".to_vec(), value: vec![b'x'; 1000 * 1000], ..Default::default() };
        grpc.put(fits).unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        let huge = PutRequest { key: b"huge".to_vec(), value: vec![b'x'; 2 * 1024 * 1024], ..Default::default() };
        let err = grpc.put(huge).expect_err("a message over the gRPC limit fails");
        // etcd's Go gRPC says ResourceExhausted; tonic's decoder says OutOfRange, a known
        // difference still open.
        let want = if kind == Kind::Etcd { ErrorCode::ResourceExhausted } else { ErrorCode::OutOfRange };
        assert_eq!(err.code, want, "{kind:?}: {err:?}");
        grpc.put(put_req("after", "still serving")).unwrap();
    }
}

#[test]
fn downgrade_answers_as_etcd_and_refuses_what_it_cannot_do() {
    use ferrocd_proto::etcdserverpb::AuthStatusRequest;
    use ferrocd_proto::etcdserverpb::DowngradeRequest;
    use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
    use ferrocd_proto::etcdserverpb::downgrade_request::DowngradeAction;
    let member = Member::start(Kind::Ferrocd, &[]);
    let mut grpc = Grpc::connect(&member.endpoint());
    let mut auth = AuthClient::new(grpc.channel.clone());
    // Auth is built: a new store is off, at etcd's first auth revision.
    let status = grpc.rt.block_on(auth.auth_status(AuthStatusRequest {})).unwrap().into_inner();
    assert_eq!((status.enabled, status.auth_revision), (false, 1));
    let mut downgrade = |action: DowngradeAction, version: &str| {
        let req = DowngradeRequest { action: action as i32, version: version.to_string() };
        grpc.rt.block_on(grpc.maintenance.downgrade(req)).map(|r| r.into_inner().version).map_err(failure)
    };
    // Cancelling with no downgrade in progress.
    let err = downgrade(DowngradeAction::Cancel, "").unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (ErrorCode::FailedPrecondition, "etcdserver: no inflight downgrade job")
    );
    // etcd's checks of the target, in its words.
    let err = downgrade(DowngradeAction::Validate, "three").unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (ErrorCode::InvalidArgument, "etcdserver: wrong downgrade target version format")
    );
    for target in ["3.4", "3.6", "3.7", "2.5"] {
        let err = downgrade(DowngradeAction::Validate, target).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (ErrorCode::InvalidArgument, "etcdserver: invalid downgrade target version"),
            "{target}"
        );
    }
    // The previous minor version is a valid target that ferrocd cannot run: Unimplemented, with
    // the way back named, never a fake success.
    for action in [DowngradeAction::Validate, DowngradeAction::Enable] {
        let err = downgrade(action, "3.5").unwrap_err();
        assert_eq!(err.code, ErrorCode::Unimplemented, "{action:?}");
        assert!(err.message.contains("etcdutl snapshot restore"), "{}", err.message);
    }
}
