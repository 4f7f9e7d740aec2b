//! `ferrocd-client`, the Rust SDK, end to end: the KV semantics suite through its option
//! builders (against ferrocd and a real etcd), its typed errors, leases kept alive, and a
//! writer and a watch that keep going through a leader's kill -9, the watch missing and
//! repeating nothing.

use std::time::Duration;

use ferrocd_client::kv::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use ferrocd_client::watch::WatchOptions;
use ferrocd_client::{Client, ConnectOptions, EtcdError};
use ferrocd_mvcc::testing::{Failure, KvApi, Reference, run_suite, run_suite_as};
use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_test_utils::{Cluster, Kind, Member, wait_for};
use ferrocd_types::ErrorCode;

use crate::cluster::{TIMING, WAIT, agreed_leader, ids, one_at_a_time};

/// The SDK as a [`KvApi`]: every request rebuilt through the SDK's builders, so the suite checks
/// that they can say everything etcd's requests say.
struct Sdk {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Sdk {
    fn connect(endpoints: &[String]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
        let client = rt.block_on(Client::connect(endpoints, ConnectOptions::new())).expect("a client");
        Sdk { rt, client }
    }
}

fn failure(e: ferrocd_client::Error) -> Failure {
    let code = e.code().map_or(ErrorCode::Unknown, |c| ErrorCode::from_i32(c as i32).unwrap_or(ErrorCode::Unknown));
    Failure { code, message: e.to_string() }
}

fn get_options(r: &RangeRequest) -> GetOptions {
    let mut o = GetOptions::new()
        .with_limit(r.limit)
        .with_revision(r.revision)
        .with_sort_raw(r.sort_target, r.sort_order)
        .with_min_mod_revision(r.min_mod_revision)
        .with_max_mod_revision(r.max_mod_revision)
        .with_min_create_revision(r.min_create_revision)
        .with_max_create_revision(r.max_create_revision);
    if !r.range_end.is_empty() {
        o = o.with_range(r.range_end.clone());
    }
    if r.serializable {
        o = o.with_serializable();
    }
    if r.keys_only {
        o = o.with_keys_only();
    }
    if r.count_only {
        o = o.with_count_only();
    }
    o
}

fn put_options(r: &PutRequest) -> PutOptions {
    let mut o = PutOptions::new().with_lease(r.lease);
    if r.prev_kv {
        o = o.with_prev_key();
    }
    if r.ignore_value {
        o = o.with_ignore_value();
    }
    if r.ignore_lease {
        o = o.with_ignore_lease();
    }
    o
}

fn delete_options(r: &DeleteRangeRequest) -> DeleteOptions {
    let mut o = DeleteOptions::new();
    if !r.range_end.is_empty() {
        o = o.with_range(r.range_end.clone());
    }
    if r.prev_kv {
        o = o.with_prev_key();
    }
    o
}

fn txn(r: &TxnRequest) -> Txn {
    let op = |op: &RequestOp| match &op.request {
        Some(Op::RequestRange(r)) => TxnOp::get(r.key.clone(), Some(get_options(r))),
        Some(Op::RequestPut(p)) => TxnOp::put(p.key.clone(), p.value.clone(), Some(put_options(p))),
        Some(Op::RequestDeleteRange(d)) => TxnOp::delete(d.key.clone(), Some(delete_options(d))),
        Some(Op::RequestTxn(t)) => TxnOp::txn(txn(t)),
        None => TxnOp::empty(),
    };
    let compare = |c: &ferrocd_proto::etcdserverpb::Compare| {
        let result = match CompareResult::try_from(c.result) {
            Ok(CompareResult::Equal) => CompareOp::Equal,
            Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
            Ok(CompareResult::Greater) => CompareOp::Greater,
            Ok(CompareResult::Less) => CompareOp::Less,
            Err(_) => return Compare::from_raw(c.clone()),
        };
        let built = match (CompareTarget::try_from(c.target), &c.target_union) {
            (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => Compare::value(c.key.clone(), result, v.clone()),
            (Ok(CompareTarget::Version), Some(TargetUnion::Version(v))) => Compare::version(c.key.clone(), result, *v),
            (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(v))) => {
                Compare::create_revision(c.key.clone(), result, *v)
            }
            (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(v))) => {
                Compare::mod_revision(c.key.clone(), result, *v)
            }
            (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(v))) => Compare::lease(c.key.clone(), result, *v),
            // Mismatched targets and unions are the server's to judge.
            _ => return Compare::from_raw(c.clone()),
        };
        if c.range_end.is_empty() { built } else { built.with_range(c.range_end.clone()) }
    };
    Txn::new().when(r.compare.iter().map(compare)).and_then(r.success.iter().map(op)).or_else(r.failure.iter().map(op))
}

impl KvApi for Sdk {
    fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, Failure> {
        self.rt.block_on(self.client.get(req.key.clone(), Some(get_options(&req)))).map_err(failure)
    }
    fn put(&mut self, req: PutRequest) -> Result<PutResponse, Failure> {
        self.rt.block_on(self.client.put(req.key.clone(), req.value.clone(), Some(put_options(&req)))).map_err(failure)
    }
    fn delete_range(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, Failure> {
        self.rt.block_on(self.client.delete(req.key.clone(), Some(delete_options(&req)))).map_err(failure)
    }
    fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, Failure> {
        self.rt.block_on(self.client.txn(txn(&req))).map_err(failure)
    }
    fn compact(&mut self, req: CompactionRequest) -> Result<CompactionResponse, Failure> {
        self.rt.block_on(self.client.compact(req.revision, req.physical)).map_err(failure)
    }
}

#[test]
fn kv_suite_through_the_sdk_against_ferrocd() {
    let member = Member::start(Kind::Ferrocd, &[]);
    run_suite(&mut Sdk::connect(&[member.url()]));
}

#[test]
fn kv_suite_through_the_sdk_against_etcd() {
    let member = Member::start(Kind::Etcd, &[]);
    run_suite_as(&mut Sdk::connect(&[member.url()]), Reference::Etcd34);
}

#[test]
fn typed_errors_leases_and_a_watch_from_the_past() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let sdk = Sdk::connect(&[member.url()]);
    sdk.rt.block_on(async {
        let c = &sdk.client;
        let put = c.put("a", "1", None).await.unwrap();
        let start = put.header.unwrap().revision;
        c.put("a", "2", None).await.unwrap();
        // etcd's errors arrive by name.
        let err = c.get("a", Some(GetOptions::new().with_revision(start + 100))).await.unwrap_err();
        assert_eq!(err.etcd(), Some(EtcdError::FutureRev), "{err}");
        let err = c.put("", "x", None).await.unwrap_err();
        assert_eq!(err.etcd(), Some(EtcdError::EmptyKey), "{err}");
        let err = c.lease_revoke(12345).await.unwrap_err();
        assert_eq!(err.etcd(), Some(EtcdError::LeaseNotFound), "{err}");

        // A lease kept alive outlives its TTL; dropped, it expires and takes its key.
        let lease = c.lease_grant(2, None).await.unwrap().id;
        c.put("leased", "v", Some(PutOptions::new().with_lease(lease))).await.unwrap();
        let mut keeper = c.lease_keep_alive(lease).await.unwrap();
        for _ in 0..3 {
            assert_eq!(keeper.renewed().await.unwrap(), 2);
        }
        let ttl = c.lease_time_to_live(lease, true).await.unwrap();
        assert_eq!(ttl.keys, [b"leased".to_vec()]);
        drop(keeper);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while c.get("leased", None).await.unwrap().count > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(matches!(c.lease_keep_alive_once(lease).await, Err(ferrocd_client::Error::LeaseExpired { .. })));

        // A watch from the past replays history, then follows.
        let mut watch =
            c.watch("a", Some(WatchOptions::new().with_start_revision(start).with_prev_key())).await.unwrap();
        let created = watch.message().await.unwrap().unwrap();
        assert!(created.created);
        let mut values = Vec::new();
        c.delete("a", None).await.unwrap();
        while values.len() < 3 {
            let response = watch.message().await.unwrap().unwrap();
            for e in response.events {
                values.push((e.r#type(), e.kv.unwrap().value, e.prev_kv.map(|p| p.value)));
            }
        }
        assert_eq!(
            values,
            [
                (EventType::Put, b"1".to_vec(), None),
                (EventType::Put, b"2".to_vec(), Some(b"1".to_vec())),
                (EventType::Delete, vec![], Some(b"2".to_vec())),
            ]
        );
        // A compacted start: created, then canceled by name (as etcd does).
        let now = c.get("a", None).await.unwrap().header.unwrap().revision;
        c.compact(now, true).await.unwrap();
        let mut watch = c.watch("a", Some(WatchOptions::new().with_start_revision(start))).await.unwrap();
        assert!(watch.message().await.unwrap().unwrap().created);
        let err = watch.message().await.unwrap_err();
        assert!(
            matches!(err, ferrocd_client::Error::WatchCanceled { compact_revision, .. } if compact_revision == now),
            "{err}"
        );
        // A transaction through the builders.
        let txn = Txn::new()
            .when([Compare::version("t", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("t", "created", None)])
            .or_else([TxnOp::get("t", None)]);
        assert!(c.txn(txn.clone()).await.unwrap().succeeded);
        assert!(!c.txn(txn).await.unwrap().succeeded);
    });
}

/// Writes from one client and a watch keep going through a leader's kill -9: every write the
/// client saw succeed is in the watch exactly once, in revision order, and the watch holds
/// exactly the history a fresh read of it gives.
#[test]
fn a_writer_and_a_watch_survive_a_leader_kill() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, TIMING);
    let urls: Vec<String> = cluster.members.iter().map(|m| m.url()).collect();
    let ids = ids(&cluster);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let options =
        ConnectOptions::new().with_timeout(Duration::from_secs(15)).with_connect_timeout(Duration::from_secs(1));
    let client = rt.block_on(Client::connect(&urls, options)).unwrap();
    let start = rt.block_on(client.put("f/start", "", None)).unwrap().header.unwrap().revision;
    let mut watch = rt
        .block_on(client.watch("f/", Some(WatchOptions::new().with_prefix().with_start_revision(start + 1))))
        .unwrap();
    const WRITES: usize = 200;
    let writer = {
        let client = client.clone();
        rt.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..WRITES {
                if let Ok(r) = client.put(format!("f/{}", i % 10), i.to_string(), None).await {
                    acked.push((r.header.unwrap().revision, i.to_string()));
                }
            }
            acked
        })
    };
    // Kill the leader once some writes are in.
    wait_for("some writes", WAIT, || {
        rt.block_on(client.get("f/", Some(GetOptions::new().with_prefix()))).is_ok_and(|r| r.count >= 5)
    });
    let leader = agreed_leader(&cluster.endpoints()).expect("a leader");
    cluster.members[ids[&leader]].kill();
    let acked = rt.block_on(writer).unwrap();
    assert!(acked.len() >= WRITES * 9 / 10, "{} of {WRITES} writes succeeded", acked.len());
    let last = acked.last().unwrap().0;
    // The watch, read up to the last acknowledged revision.
    let mut seen = Vec::new();
    rt.block_on(async {
        while seen.last().is_none_or(|(r, _)| *r < last) {
            let response =
                tokio::time::timeout(WAIT, watch.message()).await.expect("the watch goes on").unwrap().unwrap();
            for e in response.events {
                let kv = e.kv.unwrap();
                seen.push((kv.mod_revision, String::from_utf8(kv.value).unwrap()));
            }
        }
    });
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "revisions repeat or go back");
    for write in &acked {
        assert!(seen.contains(write), "acknowledged {write:?} missing from the watch");
    }
    // Exactly the history, as a fresh watch from the same start reads it on the healed cluster.
    let fresh: Vec<(i64, String)> = rt.block_on(async {
        let mut w =
            client.watch("f/", Some(WatchOptions::new().with_prefix().with_start_revision(start + 1))).await.unwrap();
        let mut out = Vec::new();
        while out.last().is_none_or(|(r, _): &(i64, String)| *r < last) {
            for e in w.message().await.unwrap().unwrap().events {
                let kv = e.kv.unwrap();
                out.push((kv.mod_revision, String::from_utf8(kv.value).unwrap()));
            }
        }
        out
    });
    assert_eq!(seen, fresh);
}

/// Auth through the SDK: root set up and auth enabled with its calls; a user's client whose
/// simple token expires (a 1 s TTL) authenticates again by itself and carries on; a user without
/// permission gets etcd's error by name.
#[test]
fn auth_management_and_a_token_refreshed_when_it_expires() {
    use ferrocd_client::auth::PermissionType;
    let member = Member::start(Kind::Ferrocd, &["--auth-token-ttl", "1"]);
    let sdk = Sdk::connect(&[member.url()]);
    sdk.rt.block_on(async {
        let c = &sdk.client;
        c.user_add("root", "rootpw").await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.role_add("app").await.unwrap();
        c.role_grant_permission("app", PermissionType::Readwrite, "app/", Some("app0")).await.unwrap();
        c.user_add("alice", "alicepw").await.unwrap();
        c.user_grant_role("alice", "app").await.unwrap();
        c.auth_enable().await.unwrap();
        let err = c.get("app/x", None).await.unwrap_err();
        assert_eq!(err.etcd(), Some(EtcdError::UserEmpty), "{err}");

        let alice = Client::connect([member.url()], ConnectOptions::new().with_user("alice", "alicepw")).await.unwrap();
        alice.put("app/x", "1", None).await.unwrap();
        // The token outlives its TTL; the next call is refused, re-authenticates and goes on.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(alice.get("app/x", None).await.unwrap().kvs[0].value, b"1");
        let err = alice.put("other", "1", None).await.unwrap_err();
        assert_eq!(err.etcd(), Some(EtcdError::PermissionDenied), "{err}");
        // A user may read itself, no one else.
        assert_eq!(alice.user_get("alice").await.unwrap().roles, ["app"]);
        let err = alice.user_get("root").await.unwrap_err();
        assert_eq!(err.etcd(), Some(EtcdError::PermissionDenied), "{err}");

        let root = Client::connect([member.url()], ConnectOptions::new().with_user("root", "rootpw")).await.unwrap();
        assert_eq!(root.user_get("alice").await.unwrap().roles, ["app"]);
        let perms = root.role_get("app").await.unwrap().perm;
        assert_eq!((perms[0].key.as_slice(), perms[0].range_end.as_slice()), (&b"app/"[..], &b"app0"[..]));
        root.auth_disable().await.unwrap();
        assert!(!c.auth_status().await.unwrap().enabled);
        let err = Client::connect([member.url()], ConnectOptions::new().with_user("alice", "wrong")).await.unwrap_err();
        assert_eq!(err.etcd(), Some(EtcdError::AuthNotEnabled), "{err}");
    });
}

/// The SDK's lock and election recipes, run client-side against ferrocd and a real etcd: a
/// second locker waits for the first to unlock; an observer sees the leader, its proclamation
/// and the next leader after a resignation.
#[test]
fn lock_and_election_recipes_run_by_the_sdk() {
    use ferrocd_client::concurrency::RecipeError;
    for kind in [Kind::Ferrocd, Kind::Etcd] {
        let member = Member::start(kind, &[]);
        let sdk = Sdk::connect(&[member.url()]);
        sdk.rt.block_on(async {
            let c = &sdk.client;
            let held = c.lock("jobs", None).await.unwrap();
            let waiting = {
                let c = c.clone();
                tokio::spawn(async move { c.lock("jobs", None).await })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!waiting.is_finished(), "{kind:?}: the second locker got a held lock");
            c.unlock(held.key.clone()).await.unwrap();
            let second = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap().unwrap();
            assert_ne!(second.key, held.key);
            assert!(second.key.starts_with(b"jobs/"));

            let err = c.leader("board").await.unwrap_err();
            assert!(matches!(err, ferrocd_client::Error::Recipe(RecipeError::NoLeader)), "{kind:?}: {err}");
            let mut observer = c.observe("board");
            let first = c.campaign("board", "one", None).await.unwrap().leader.unwrap();
            let seen = |r: Option<ferrocd_client::Result<ferrocd_client::concurrency::LeaderResponse>>| {
                r.unwrap().unwrap().kv.unwrap().value
            };
            assert_eq!(seen(observer.recv().await), b"one");
            c.proclaim(&first, "one again").await.unwrap();
            assert_eq!(seen(observer.recv().await), b"one again");
            let runner_up = {
                let c = c.clone();
                tokio::spawn(async move { c.campaign("board", "two", None).await })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!runner_up.is_finished(), "{kind:?}: two leaders");
            c.resign(&first).await.unwrap();
            let second = tokio::time::timeout(WAIT, runner_up).await.unwrap().unwrap().unwrap().leader.unwrap();
            assert_eq!(seen(observer.recv().await), b"two");
            assert_eq!(c.leader("board").await.unwrap().kv.unwrap().key, second.key);
            let err = c.proclaim(&first, "stale").await.unwrap_err();
            assert!(matches!(err, ferrocd_client::Error::Recipe(RecipeError::NotLeader)), "{kind:?}: {err}");
        });
    }
}

async fn balance(stm: &mut ferrocd_client::stm::Stm, account: &str) -> ferrocd_client::Result<i64> {
    let v = stm.get(account).await?.expect("an account");
    Ok(String::from_utf8(v).unwrap().parse().unwrap())
}

/// A namespace sees only its keys, by their short names, in every kind of request and in
/// watches; the STM's serializable levels keep concurrent transfers from losing money.
#[test]
fn namespaces_and_the_stm_against_ferrocd_and_etcd() {
    use ferrocd_client::stm::Isolation;
    for kind in [Kind::Ferrocd, Kind::Etcd] {
        let member = Member::start(kind, &[]);
        let sdk = Sdk::connect(&[member.url()]);
        sdk.rt.block_on(async {
            let c = &sdk.client;
            c.put("outside", "x", None).await.unwrap();
            c.put("blue0", "just past the prefix", None).await.unwrap();
            let ns = c.namespace("blue/");
            let mut watch = ns.watch("", Some(WatchOptions::new().with_all_keys().with_prev_key())).await.unwrap();
            assert!(watch.message().await.unwrap().unwrap().created);
            ns.put("a", "1", None).await.unwrap();
            let put = ns.put("a", "2", Some(PutOptions::new().with_prev_key())).await.unwrap();
            assert_eq!(put.prev_kv.unwrap().key, b"a", "{kind:?}");
            ns.put("b", "3", None).await.unwrap();
            assert_eq!(c.get("blue/a", None).await.unwrap().kvs[0].value, b"2");
            let all = ns.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
            let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
            assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()], "{kind:?}");
            let from = ns.get("b", Some(GetOptions::new().with_from_key())).await.unwrap();
            assert_eq!(from.count, 1, "{kind:?}: a from-key range left the namespace");
            let txn = Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "2")])
                .and_then([TxnOp::get("", Some(GetOptions::new().with_prefix())), TxnOp::put("c", "4", None)]);
            let reply = ns.txn(txn).await.unwrap();
            assert!(reply.succeeded, "{kind:?}");
            let Some(ferrocd_proto::etcdserverpb::response_op::Response::ResponseRange(r)) =
                &reply.responses[0].response
            else {
                panic!("{kind:?}: {reply:?}")
            };
            assert_eq!(r.kvs.len(), 2);
            assert!(r.kvs.iter().all(|kv| !kv.key.starts_with(b"blue/")));
            let deleted = ns.delete("", Some(DeleteOptions::new().with_all_keys().with_prev_key())).await.unwrap();
            assert_eq!(deleted.deleted, 3, "{kind:?}");
            assert!(deleted.prev_kvs.iter().all(|kv| !kv.key.starts_with(b"blue/")));
            assert_eq!(c.get("outside", None).await.unwrap().count, 1);
            assert_eq!(c.get("blue0", None).await.unwrap().count, 1);
            let mut seen = Vec::new();
            while seen.len() < 7 {
                for e in watch.message().await.unwrap().unwrap().events {
                    seen.push((e.r#type(), e.kv.unwrap().key));
                }
            }
            let short = |k: &str| k.as_bytes().to_vec();
            assert_eq!(
                seen,
                [
                    (EventType::Put, short("a")),
                    (EventType::Put, short("a")),
                    (EventType::Put, short("b")),
                    (EventType::Put, short("c")),
                    (EventType::Delete, short("a")),
                    (EventType::Delete, short("b")),
                    (EventType::Delete, short("c")),
                ],
                "{kind:?}"
            );

            // Concurrent transfers between three accounts: the total stays what it was.
            for isolation in [Isolation::SerializableSnapshot, Isolation::Serializable, Isolation::RepeatableReads] {
                let accounts = ["acct/0", "acct/1", "acct/2"];
                for a in accounts {
                    c.put(a, "100", None).await.unwrap();
                }
                let workers: Vec<_> = (0..4)
                    .map(|w| {
                        let c = c.clone();
                        tokio::spawn(async move {
                            let mut attempts = 0;
                            for i in 0..10 {
                                let (from, to) = (accounts[(w + i) % 3], accounts[(w + i + 1) % 3]);
                                let done = c
                                    .stm(isolation, |stm| {
                                        Box::pin(async move {
                                            let (f, t) = (balance(stm, from).await?, balance(stm, to).await?);
                                            stm.put(from, (f - 7).to_string(), None);
                                            stm.put(to, (t + 7).to_string(), None);
                                            Ok(())
                                        })
                                    })
                                    .await
                                    .unwrap();
                                attempts += done.attempts;
                            }
                            attempts
                        })
                    })
                    .collect();
                let mut attempts = 0;
                for w in workers {
                    attempts += tokio::time::timeout(WAIT, w).await.unwrap().unwrap();
                }
                let mut total = 0;
                for a in accounts {
                    let v = c.get(a, None).await.unwrap().kvs[0].value.clone();
                    total += String::from_utf8(v).unwrap().parse::<i64>().unwrap();
                }
                assert_eq!(total, 300, "{kind:?} {isolation:?}: money appeared or vanished");
                assert!(attempts >= 40, "{kind:?} {isolation:?}");
            }
            // A function's error ends the STM with nothing written.
            let err = c
                .stm(Isolation::default(), |stm| {
                    Box::pin(async move {
                        stm.put("never", "written", None);
                        Err::<(), _>(ferrocd_client::Error::InvalidArgs("changed my mind".into()))
                    })
                })
                .await
                .unwrap_err();
            assert!(err.to_string().contains("changed my mind"), "{err}");
            assert_eq!(c.get("never", None).await.unwrap().count, 0);
        });
    }
}

#[test]
fn writes_routed_to_the_leader_follow_it_through_a_kill() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, TIMING);
    let urls: Vec<String> = cluster.members.iter().map(|m| m.url()).collect();
    let ids = ids(&cluster);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let options = ConnectOptions::new()
        .with_timeout(Duration::from_secs(15))
        .with_connect_timeout(Duration::from_secs(1))
        .with_leader_routing(true);
    let client = rt.block_on(Client::connect(&urls, options)).unwrap();
    assert_eq!(client.leader_endpoint(), None, "nothing written yet");
    rt.block_on(client.put("k", "1", None)).unwrap();
    let leader = agreed_leader(&cluster.endpoints()).expect("a leader");
    let leader_url = cluster.members[ids[&leader]].url();
    assert_eq!(client.leader_endpoint().as_deref(), Some(leader_url.as_str()));
    // Reads go anywhere: they neither need nor change the leader's endpoint.
    rt.block_on(client.get("k", None)).unwrap();
    assert_eq!(client.leader_endpoint().as_deref(), Some(leader_url.as_str()));
    cluster.members[ids[&leader]].kill();
    let survivors: Vec<String> =
        cluster.members.iter().filter(|m| m.url() != leader_url).map(|m| m.endpoint()).collect();
    let survivors = survivors.join(",");
    wait_for("writes routed to the new leader", WAIT, || {
        let written = rt.block_on(client.put("k", "2", None)).is_ok();
        let new_leader = agreed_leader(&survivors);
        written
            && new_leader
                .is_some_and(|l| client.leader_endpoint().as_deref() == Some(cluster.members[ids[&l]].url().as_str()))
    });
}
