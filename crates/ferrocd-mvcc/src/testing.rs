//! etcd's KV semantics as a suite any implementation can run: the bare [`KvStore`], a ferrocd
//! server through a client, or etcd itself (which keeps the suite honest).
//!
//! Implement [`KvApi`] for the system under test and call [`run_suite`] on a fresh, empty
//! keyspace. Each case uses keys of its own and reads revisions from responses, so only
//! [`fresh_store`] assumes nothing was written before.

use ferrocd_engine::Engine;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, compare, range_request, request_op, response_op,
};
use ferrocd_proto::mvccpb::KeyValue;
use ferrocd_types::ErrorCode;

use crate::KvStore;

/// A failed request as a client sees it: gRPC code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

/// The five KV requests of etcd.
pub trait KvApi {
    fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, Failure>;
    fn put(&mut self, req: PutRequest) -> Result<PutResponse, Failure>;
    fn delete_range(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, Failure>;
    fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, Failure>;
    fn compact(&mut self, req: CompactionRequest) -> Result<CompactionResponse, Failure>;
}

/// [`KvApi`] on a bare store.
#[derive(Debug)]
pub struct StoreApi<'a, E: Engine>(pub &'a KvStore<E>);

fn failure(e: crate::Error) -> Failure {
    Failure { code: e.code(), message: e.to_string() }
}

impl<E: Engine> KvApi for StoreApi<'_, E> {
    fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, Failure> {
        self.0.range(&req).map_err(failure)
    }
    fn put(&mut self, req: PutRequest) -> Result<PutResponse, Failure> {
        self.0.put(req).map(|(r, _)| r).map_err(failure)
    }
    fn delete_range(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, Failure> {
        self.0.delete_range(req).map(|(r, _)| r).map_err(failure)
    }
    fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, Failure> {
        self.0.txn(req).map(|(r, _)| r).map_err(failure)
    }
    fn compact(&mut self, req: CompactionRequest) -> Result<CompactionResponse, Failure> {
        self.0.compact(req).map_err(failure)
    }
}

/// Whose behaviour a run checks. ferrocd follows etcd 3.5/3.6; the suite also runs against
/// etcd 3.4 (the reference server available as a package), which differs in a few places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    Etcd36,
    Etcd34,
}

/// Runs every case with etcd 3.6's expectations.
///
/// # Panics
/// On the first case that fails.
pub fn run_suite(api: &mut dyn KvApi) {
    run_suite_as(api, Reference::Etcd36);
}

/// Runs every case, [`fresh_store`] first and the compaction cases last.
///
/// # Panics
/// On the first case that fails.
pub fn run_suite_as(api: &mut dyn KvApi, reference: Reference) {
    fresh_store(api);
    put_and_get(api);
    empty_keys_are_rejected(api);
    range_options(api, reference);
    range_sorting(api);
    range_at_revisions(api);
    delete_range(api);
    ignore_value_and_lease(api);
    missing_lease(api);
    txn_compares(api);
    txn_branches_and_revisions(api);
    txn_errors_change_nothing(api);
    nested_txn(api);
    compaction(api);
}

// ---- request builders -------------------------------------------------------------------------

pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

pub fn get_req(key: &str) -> RangeRequest {
    RangeRequest { key: key.into(), ..Default::default() }
}

pub fn range_req(key: &str, end: &str) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: end.into(), ..Default::default() }
}

pub fn del_req(key: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest { key: key.into(), range_end: end.into(), ..Default::default() }
}

pub fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(put_req(key, value))) }
}

pub fn op_get(key: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(get_req(key))) }
}

pub fn op_del(key: &str, end: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestDeleteRange(del_req(key, end))) }
}

pub fn cmp(
    key: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    union: compare::TargetUnion,
) -> Compare {
    Compare {
        key: key.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

fn rev(h: &Option<ferrocd_proto::etcdserverpb::ResponseHeader>) -> i64 {
    h.as_ref().expect("a response carries a header").revision
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

fn expect_failure<T: std::fmt::Debug>(result: Result<T, Failure>, code: ErrorCode, message: &str) {
    match result {
        Err(f) => assert_eq!(f, Failure { code, message: message.into() }),
        Ok(v) => panic!("expected `{message}`, got {v:?}"),
    }
}

fn current(api: &mut dyn KvApi) -> i64 {
    rev(&api.range(get_req("\u{1}probe")).unwrap().header)
}

// ---- cases --------------------------------------------------------------------------------------

/// A fresh store is at revision 1 with nothing in it.
pub fn fresh_store(api: &mut dyn KvApi) {
    let all = api.range(range_req("\0", "\0")).unwrap();
    assert_eq!(rev(&all.header), 1, "a fresh store is at revision 1");
    assert_eq!(all.count, 0);
    assert!(all.kvs.is_empty());
}

pub fn put_and_get(api: &mut dyn KvApi) {
    let r1 = rev(&api.put(put_req("pg/k", "v1")).unwrap().header);
    let got = api.range(get_req("pg/k")).unwrap();
    assert_eq!(rev(&got.header), r1);
    assert_eq!(got.count, 1);
    assert_eq!(
        got.kvs,
        vec![KeyValue {
            key: b"pg/k".to_vec(),
            create_revision: r1,
            mod_revision: r1,
            version: 1,
            value: b"v1".to_vec(),
            lease: 0
        }]
    );
    let mut again = put_req("pg/k", "v2");
    again.prev_kv = true;
    let resp = api.put(again).unwrap();
    let r2 = rev(&resp.header);
    assert_eq!(r2, r1 + 1, "every put bumps the revision by one");
    assert_eq!(resp.prev_kv.expect("prev_kv asked").value, b"v1");
    let kv = &api.range(get_req("pg/k")).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r1, r2, 2));
    let same = api.put(put_req("pg/k", "v2")).unwrap();
    assert_eq!(rev(&same.header), r2 + 1, "a put of the same value still bumps");
    let mut new = put_req("pg/new", "x");
    new.prev_kv = true;
    assert_eq!(api.put(new).unwrap().prev_kv, None, "no prev_kv for a new key");
    let empty = api.put(put_req("pg/empty", "")).unwrap();
    let got = api.range(get_req("pg/empty")).unwrap();
    assert_eq!(got.kvs.len(), 1, "an empty value is a value");
    assert_eq!(got.kvs[0].mod_revision, rev(&empty.header));
}

pub fn empty_keys_are_rejected(api: &mut dyn KvApi) {
    let msg = "etcdserver: key is not provided";
    expect_failure(api.put(put_req("", "v")), ErrorCode::InvalidArgument, msg);
    expect_failure(api.range(get_req("")), ErrorCode::InvalidArgument, msg);
    expect_failure(api.delete_range(del_req("", "")), ErrorCode::InvalidArgument, msg);
    let txn = TxnRequest { success: vec![op_put("", "v")], ..Default::default() };
    expect_failure(api.txn(txn), ErrorCode::InvalidArgument, msg);
    let txn = TxnRequest {
        compare: vec![cmp(
            "",
            compare::CompareTarget::Version,
            compare::CompareResult::Equal,
            compare::TargetUnion::Version(0),
        )],
        ..Default::default()
    };
    expect_failure(api.txn(txn), ErrorCode::InvalidArgument, msg);
}

pub fn range_options(api: &mut dyn KvApi, reference: Reference) {
    for k in ["ro/a", "ro/b", "ro/c", "ro/d", "ro/e", "ro0"] {
        api.put(put_req(k, &format!("value of {k}"))).unwrap();
    }
    let prefix = api.range(range_req("ro/", "ro0")).unwrap();
    assert_eq!(keys(&prefix.kvs), ["ro/a", "ro/b", "ro/c", "ro/d", "ro/e"]);
    assert_eq!((prefix.count, prefix.more), (5, false));

    let mut limited = range_req("ro/", "ro0");
    limited.limit = 2;
    let resp = api.range(limited.clone()).unwrap();
    assert_eq!(keys(&resp.kvs), ["ro/a", "ro/b"]);
    assert_eq!((resp.count, resp.more), (5, true), "count ignores limit; more says there is more");
    limited.limit = 5;
    assert!(!api.range(limited).unwrap().more, "limit equal to the matches: no more");

    let from_key = api.range(range_req("ro/d", "\0")).unwrap();
    assert!(
        keys(&from_key.kvs).starts_with(&["ro/d".into(), "ro/e".into(), "ro0".into()]),
        "\\0 means every key from key on"
    );
    let all = api.range(range_req("\0", "\0")).unwrap();
    assert!(all.count >= 6);

    let backwards = api.range(range_req("ro/d", "ro/a")).unwrap();
    assert_eq!((backwards.count, backwards.kvs.len()), (0, 0), "key >= range_end selects nothing");

    let mut count_only = range_req("ro/", "ro0");
    count_only.count_only = true;
    let resp = api.range(count_only).unwrap();
    assert_eq!((resp.count, resp.kvs.len(), resp.more), (5, 0, false));

    let mut keys_only = range_req("ro/", "ro0");
    keys_only.keys_only = true;
    let resp = api.range(keys_only).unwrap();
    assert_eq!(resp.kvs.len(), 5);
    assert!(resp.kvs.iter().all(|kv| kv.value.is_empty() && kv.version == 1 && kv.create_revision > 0));

    // etcd 3.5 added the check of the sort enums; 3.4 ignores unknown values.
    if reference == Reference::Etcd36 {
        let mut bad = range_req("ro/", "ro0");
        bad.sort_order = 7;
        expect_failure(api.range(bad), ErrorCode::InvalidArgument, "etcdserver: invalid sort option");
        let mut bad = range_req("ro/", "ro0");
        bad.sort_target = 9;
        expect_failure(api.range(bad), ErrorCode::InvalidArgument, "etcdserver: invalid sort option");
    }

    let missing = api.range(get_req("ro/missing")).unwrap();
    assert_eq!((missing.count, missing.kvs.len()), (0, 0));
}

pub fn range_sorting(api: &mut dyn KvApi) {
    use range_request::{SortOrder, SortTarget};
    // Versions: c=3, a=2, b=1; creation order a, b, c; last modification a, c (c last).
    for (k, v) in [("rs/a", "3"), ("rs/b", "1"), ("rs/c", "2"), ("rs/a", "5"), ("rs/c", "4"), ("rs/c", "0")] {
        api.put(put_req(k, v)).unwrap();
    }
    let sorted = |api: &mut dyn KvApi, target: SortTarget, order: SortOrder, limit: i64| {
        let mut req = range_req("rs/", "rs0");
        req.sort_target = target as i32;
        req.sort_order = order as i32;
        req.limit = limit;
        let resp = api.range(req).unwrap();
        (keys(&resp.kvs), resp.more, resp.count)
    };
    assert_eq!(sorted(api, SortTarget::Key, SortOrder::Descend, 0).0, ["rs/c", "rs/b", "rs/a"]);
    assert_eq!(sorted(api, SortTarget::Key, SortOrder::Ascend, 0).0, ["rs/a", "rs/b", "rs/c"]);
    assert_eq!(sorted(api, SortTarget::Version, SortOrder::Ascend, 0).0, ["rs/b", "rs/a", "rs/c"]);
    assert_eq!(sorted(api, SortTarget::Version, SortOrder::Descend, 0).0, ["rs/c", "rs/a", "rs/b"]);
    assert_eq!(sorted(api, SortTarget::Create, SortOrder::Descend, 0).0, ["rs/c", "rs/b", "rs/a"]);
    assert_eq!(sorted(api, SortTarget::Mod, SortOrder::Ascend, 0).0, ["rs/b", "rs/a", "rs/c"]);
    assert_eq!(sorted(api, SortTarget::Value, SortOrder::Ascend, 0).0, ["rs/c", "rs/b", "rs/a"]);
    assert_eq!(sorted(api, SortTarget::Value, SortOrder::Descend, 0).0, ["rs/a", "rs/b", "rs/c"]);
    // A non-key target with no order sorts ascending.
    assert_eq!(sorted(api, SortTarget::Version, SortOrder::None, 0).0, ["rs/b", "rs/a", "rs/c"]);
    // With an order, the limit applies after sorting the whole range.
    assert_eq!(sorted(api, SortTarget::Key, SortOrder::Descend, 1), (vec!["rs/c".into()], true, 3));
    assert_eq!(sorted(api, SortTarget::Value, SortOrder::Descend, 2), (vec!["rs/a".into(), "rs/b".into()], true, 3));
}

pub fn range_at_revisions(api: &mut dyn KvApi) {
    let r1 = rev(&api.put(put_req("rr/k", "one")).unwrap().header);
    let r2 = rev(&api.put(put_req("rr/k", "two")).unwrap().header);
    let r3 = rev(&api.delete_range(del_req("rr/k", "")).unwrap().header);
    let at = |api: &mut dyn KvApi, revision: i64| {
        let mut req = get_req("rr/k");
        req.revision = revision;
        api.range(req)
    };
    let old = at(api, r1).unwrap();
    assert_eq!(old.kvs[0].value, b"one");
    assert!(rev(&old.header) >= r3, "the header of a past read carries the current revision");
    assert_eq!(at(api, r2).unwrap().kvs[0].value, b"two");
    assert!(at(api, r3).unwrap().kvs.is_empty());
    assert!(at(api, r1 - 1).unwrap().kvs.is_empty(), "before creation there was nothing");
    let now = current(api);
    expect_failure(at(api, now + 1), ErrorCode::OutOfRange, "etcdserver: mvcc: required revision is a future revision");
    assert_eq!(rev(&at(api, -3).unwrap().header), now, "a negative revision reads the latest");

    // Revision filters prune kvs but not count.
    for k in ["rf/a", "rf/b", "rf/c"] {
        api.put(put_req(k, "v")).unwrap();
    }
    let base = api.range(range_req("rf/", "rf0")).unwrap();
    let b_rev = base.kvs[1].mod_revision;
    let mut req = range_req("rf/", "rf0");
    req.min_mod_revision = b_rev;
    let resp = api.range(req).unwrap();
    assert_eq!((keys(&resp.kvs), resp.count), (vec!["rf/b".into(), "rf/c".into()], 3));
    let mut req = range_req("rf/", "rf0");
    req.max_create_revision = b_rev;
    req.limit = 1;
    let resp = api.range(req).unwrap();
    assert_eq!((keys(&resp.kvs), resp.more, resp.count), (vec!["rf/a".into()], true, 3));
    let mut req = range_req("rf/", "rf0");
    req.min_create_revision = b_rev + 1;
    req.max_mod_revision = b_rev + 1;
    assert_eq!(keys(&api.range(req).unwrap().kvs), ["rf/c"]);
}

pub fn delete_range(api: &mut dyn KvApi) {
    for k in ["dr/a", "dr/b", "dr/c"] {
        api.put(put_req(k, k)).unwrap();
    }
    let before = current(api);
    let none = api.delete_range(del_req("dr/zzz", "")).unwrap();
    assert_eq!((none.deleted, rev(&none.header)), (0, before), "deleting nothing does not bump");
    let mut req = del_req("dr/a", "dr/c");
    req.prev_kv = true;
    let resp = api.delete_range(req).unwrap();
    assert_eq!(resp.deleted, 2);
    assert_eq!(rev(&resp.header), before + 1, "one revision for the whole delete");
    assert_eq!(keys(&resp.prev_kvs), ["dr/a", "dr/b"]);
    assert_eq!(resp.prev_kvs[0].value, b"dr/a");
    let left = api.range(range_req("dr/", "dr0")).unwrap();
    assert_eq!(keys(&left.kvs), ["dr/c"]);
    let again = rev(&api.put(put_req("dr/a", "back")).unwrap().header);
    let kv = &api.range(get_req("dr/a")).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.version), (again, 1), "re-creation starts a new life");
    let from = api.delete_range(del_req("dr/", "\0")).unwrap();
    assert!(from.deleted >= 2, "from-key delete");
    assert_eq!(api.range(range_req("dr/", "dr0")).unwrap().count, 0);
}

pub fn ignore_value_and_lease(api: &mut dyn KvApi) {
    let not_found = "etcdserver: key not found";
    let mut req = put_req("iv/missing", "");
    req.ignore_value = true;
    expect_failure(api.put(req), ErrorCode::InvalidArgument, not_found);
    let mut req = put_req("iv/missing", "v");
    req.ignore_lease = true;
    expect_failure(api.put(req), ErrorCode::InvalidArgument, not_found);
    let mut req = put_req("iv/k", "v");
    req.ignore_value = true;
    expect_failure(api.put(req), ErrorCode::InvalidArgument, "etcdserver: value is provided");
    let mut req = put_req("iv/k", "v");
    req.ignore_lease = true;
    req.lease = 5;
    expect_failure(api.put(req), ErrorCode::InvalidArgument, "etcdserver: lease is provided");

    api.put(put_req("iv/k", "kept")).unwrap();
    let mut req = put_req("iv/k", "");
    req.ignore_value = true;
    let r = rev(&api.put(req).unwrap().header);
    let kv = &api.range(get_req("iv/k")).unwrap().kvs[0];
    assert_eq!((kv.value.as_slice(), kv.version, kv.mod_revision), (&b"kept"[..], 2, r));
    let mut req = put_req("iv/k", "new");
    req.ignore_lease = true;
    api.put(req).unwrap();
    let kv = &api.range(get_req("iv/k")).unwrap().kvs[0];
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"new"[..], 0));
}

pub fn missing_lease(api: &mut dyn KvApi) {
    let before = current(api);
    let mut req = put_req("ml/k", "v");
    req.lease = 0x7eadbeef;
    expect_failure(api.put(req), ErrorCode::NotFound, "etcdserver: requested lease not found");
    assert_eq!(current(api), before, "a failed put changes nothing");
}

pub fn txn_compares(api: &mut dyn KvApi) {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let r = rev(&api.put(put_req("tc/k", "m")).unwrap().header);
    let check = |api: &mut dyn KvApi, c: Compare| {
        api.txn(TxnRequest { compare: vec![c], ..Default::default() }).unwrap().succeeded
    };
    assert!(check(api, cmp("tc/k", T::Value, R::Equal, U::Value(b"m".to_vec()))));
    assert!(check(api, cmp("tc/k", T::Value, R::Greater, U::Value(b"a".to_vec()))));
    assert!(check(api, cmp("tc/k", T::Value, R::Less, U::Value(b"z".to_vec()))));
    assert!(check(api, cmp("tc/k", T::Value, R::NotEqual, U::Value(b"x".to_vec()))));
    assert!(check(api, cmp("tc/k", T::Version, R::Equal, U::Version(1))));
    assert!(check(api, cmp("tc/k", T::Create, R::Equal, U::CreateRevision(r))));
    assert!(check(api, cmp("tc/k", T::Mod, R::Greater, U::ModRevision(r - 1))));
    assert!(!check(api, cmp("tc/k", T::Mod, R::Less, U::ModRevision(r))));
    assert!(check(api, cmp("tc/k", T::Lease, R::Equal, U::Lease(0))));
    // A missing key compares as all zeros, except on its value, which never matches.
    assert!(check(api, cmp("tc/missing", T::Version, R::Equal, U::Version(0))));
    assert!(check(api, cmp("tc/missing", T::Create, R::Equal, U::CreateRevision(0))));
    assert!(check(api, cmp("tc/missing", T::Mod, R::Less, U::ModRevision(1))));
    assert!(!check(api, cmp("tc/missing", T::Value, R::NotEqual, U::Value(b"x".to_vec()))));
    assert!(!check(api, cmp("tc/missing", T::Value, R::Equal, U::Value(Vec::new()))));
    // A range compare holds only when every key in it holds.
    api.put(put_req("tc/l", "m")).unwrap();
    let mut c = cmp("tc/k", T::Value, R::Equal, U::Value(b"m".to_vec()));
    c.range_end = b"tc/m".to_vec();
    assert!(check(api, c.clone()));
    api.put(put_req("tc/l", "other")).unwrap();
    assert!(!check(api, c));
    // No compare at all: success.
    assert!(api.txn(TxnRequest::default()).unwrap().succeeded);
}

pub fn txn_branches_and_revisions(api: &mut dyn KvApi) {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let before = current(api);
    let txn = TxnRequest {
        compare: vec![cmp("tb/k", T::Version, R::Equal, U::Version(0))],
        success: vec![op_put("tb/k", "1"), op_put("tb/l", "2"), op_get("tb/k")],
        failure: vec![op_get("tb/k")],
    };
    let resp = api.txn(txn.clone()).unwrap();
    assert!(resp.succeeded);
    assert_eq!(rev(&resp.header), before + 1, "one revision for the whole txn");
    assert_eq!(resp.responses.len(), 3);
    let Some(response_op::Response::ResponseRange(read)) = &resp.responses[2].response else {
        panic!("a range answer")
    };
    assert_eq!(read.kvs[0].value, b"1", "a read in a txn sees the txn's earlier writes");
    let ks = api.range(range_req("tb/", "tb0")).unwrap().kvs;
    assert_eq!(ks.iter().map(|kv| kv.mod_revision).collect::<Vec<_>>(), [before + 1, before + 1]);

    let resp = api.txn(txn).unwrap();
    assert!(!resp.succeeded);
    assert_eq!(rev(&resp.header), before + 1, "a read-only branch does not bump");
    let Some(response_op::Response::ResponseRange(read)) = &resp.responses[0].response else {
        panic!("a range answer")
    };
    assert_eq!(read.kvs[0].value, b"1");

    let mixed = TxnRequest {
        success: vec![op_del("tb/k", ""), op_put("tb/m", "3"), op_del("tb/nothing", "")],
        ..Default::default()
    };
    let resp = api.txn(mixed).unwrap();
    assert_eq!(rev(&resp.header), before + 2);
    let Some(response_op::Response::ResponseDeleteRange(d)) = &resp.responses[0].response else {
        panic!("a delete answer")
    };
    assert_eq!(d.deleted, 1);
}

pub fn txn_errors_change_nothing(api: &mut dyn KvApi) {
    let before = current(api);
    let too_many =
        TxnRequest { success: (0..129).map(|i| op_put(&format!("te/{i}"), "v")).collect(), ..Default::default() };
    expect_failure(api.txn(too_many), ErrorCode::InvalidArgument, "etcdserver: too many operations in txn request");
    let dup = "etcdserver: duplicate key given in txn request";
    let twice = TxnRequest { success: vec![op_put("te/a", "1"), op_put("te/a", "2")], ..Default::default() };
    expect_failure(api.txn(twice), ErrorCode::InvalidArgument, dup);
    let put_in_deleted = TxnRequest { success: vec![op_del("te/", "te0"), op_put("te/a", "1")], ..Default::default() };
    expect_failure(api.txn(put_in_deleted), ErrorCode::InvalidArgument, dup);
    let nested_dup = TxnRequest {
        success: vec![
            op_put("te/a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    success: vec![op_put("te/a", "2")],
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    expect_failure(api.txn(nested_dup), ErrorCode::InvalidArgument, dup);
    let empty_op = TxnRequest { success: vec![RequestOp { request: None }], ..Default::default() };
    expect_failure(api.txn(empty_op), ErrorCode::InvalidArgument, "etcdserver: key not found");
    let mut leased = put_req("te/b", "v");
    leased.lease = 0x7eadbeef;
    let bad_lease = TxnRequest {
        success: vec![op_put("te/ok", "v"), RequestOp { request: Some(request_op::Request::RequestPut(leased)) }],
        ..Default::default()
    };
    expect_failure(api.txn(bad_lease), ErrorCode::NotFound, "etcdserver: requested lease not found");
    let mut future = get_req("te/ok");
    future.revision = before + 100;
    let future_read = TxnRequest {
        success: vec![op_put("te/ok", "v"), RequestOp { request: Some(request_op::Request::RequestRange(future)) }],
        ..Default::default()
    };
    expect_failure(
        api.txn(future_read),
        ErrorCode::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    assert_eq!(current(api), before, "failed txns change nothing");
    assert_eq!(api.range(range_req("te/", "te0")).unwrap().count, 0);
    // Overlapping deletes are fine, and so is the same key in both branches of a nested txn.
    let fine = TxnRequest {
        success: vec![
            op_del("te/", "te0"),
            op_del("te/a", ""),
            RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    success: vec![op_put("tf/x", "then")],
                    failure: vec![op_put("tf/x", "else")],
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert!(api.txn(fine).unwrap().succeeded);
}

pub fn nested_txn(api: &mut dyn KvApi) {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    api.put(put_req("nt/flag", "on")).unwrap();
    let before = current(api);
    let inner = TxnRequest {
        compare: vec![cmp("nt/flag", T::Value, R::Equal, U::Value(b"on".to_vec()))],
        success: vec![op_put("nt/inner", "yes"), op_get("nt/outer")],
        failure: vec![op_put("nt/inner", "no")],
    };
    let outer = TxnRequest {
        success: vec![op_put("nt/outer", "1"), RequestOp { request: Some(request_op::Request::RequestTxn(inner)) }],
        ..Default::default()
    };
    let resp = api.txn(outer).unwrap();
    assert_eq!(rev(&resp.header), before + 1, "nested txns share one revision");
    let Some(response_op::Response::ResponseTxn(inner)) = &resp.responses[1].response else { panic!("a txn answer") };
    assert!(inner.succeeded);
    let Some(response_op::Response::ResponseRange(read)) = &inner.responses[1].response else {
        panic!("a range answer")
    };
    assert_eq!(read.kvs[0].value, b"1", "the nested txn sees the outer txn's earlier write");
    assert_eq!(api.range(get_req("nt/inner")).unwrap().kvs[0].value, b"yes");
}

pub fn compaction(api: &mut dyn KvApi) {
    let compacted = "etcdserver: mvcc: required revision has been compacted";
    let r1 = rev(&api.put(put_req("cp/k", "1")).unwrap().header);
    let r2 = rev(&api.put(put_req("cp/k", "2")).unwrap().header);
    api.put(put_req("cp/gone", "x")).unwrap();
    let r4 = rev(&api.delete_range(del_req("cp/gone", "")).unwrap().header);
    let r5 = rev(&api.put(put_req("cp/k", "3")).unwrap().header);
    expect_failure(
        api.compact(CompactionRequest { revision: r5 + 10, physical: false }),
        ErrorCode::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    let resp = api.compact(CompactionRequest { revision: r4, physical: true }).unwrap();
    assert_eq!(rev(&resp.header), r5);
    let at = |api: &mut dyn KvApi, revision: i64| {
        let mut req = get_req("cp/k");
        req.revision = revision;
        api.range(req)
    };
    expect_failure(at(api, r1), ErrorCode::OutOfRange, compacted);
    expect_failure(at(api, r4 - 1), ErrorCode::OutOfRange, compacted);
    assert_eq!(at(api, r4).unwrap().kvs[0].value, b"2", "reading at the compaction revision works");
    assert_eq!(at(api, r2).err().map(|f| f.code), Some(ErrorCode::OutOfRange));
    assert_eq!(at(api, 0).unwrap().kvs[0].value, b"3");
    expect_failure(api.compact(CompactionRequest { revision: r4, physical: false }), ErrorCode::OutOfRange, compacted);
    expect_failure(api.compact(CompactionRequest { revision: r2, physical: false }), ErrorCode::OutOfRange, compacted);
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest { revision: r1, ..get_req("cp/k") })),
        }],
        ..Default::default()
    };
    expect_failure(api.txn(txn), ErrorCode::OutOfRange, compacted);
    api.compact(CompactionRequest { revision: r5, physical: false }).unwrap();
    assert_eq!(at(api, r5).unwrap().kvs[0].value, b"3");
}
