//! The auth matrix: every RPC of every service, called by each kind of caller — auth off, no
//! token, a bad token, a user without the permission, a user with it, root — and what auth
//! decided: the call got past auth (whatever it answered then) or auth refused it with one of
//! its errors. ferrocd's table must be the fact sheet's (etcd 3.6); a real etcd's table, taken
//! the same way, must agree except on the rows where etcd 3.4 checks less than 3.6.

use std::collections::BTreeMap;

use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::*;
use ferrocd_proto::v3electionpb::election_client::ElectionClient;
use ferrocd_proto::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};
use ferrocd_proto::v3lockpb::lock_client::LockClient;
use ferrocd_proto::v3lockpb::{LockRequest, UnlockRequest};
use ferrocd_test_utils::{Kind, Member, etcdctl_ok};
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    /// A server with auth off.
    Off,
    NoToken,
    BadToken,
    /// User `nobody`: READ on `x` only.
    Unprivileged,
    /// User `granted`: READWRITE on `m/`, role `granted`.
    Privileged,
    Root,
}

const CALLERS: [Who; 6] = [Who::Off, Who::NoToken, Who::BadToken, Who::Unprivileged, Who::Privileged, Who::Root];

/// What auth decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Passed,
    Refused(Code, String),
}

const USER_EMPTY: &str = "etcdserver: user name is empty";
const BAD_TOKEN: &str = "etcdserver: invalid auth token";
const DENIED: &str = "etcdserver: permission denied";
const OLD_REVISION: &str = "etcdserver: revision of auth store is old";

fn decide(result: Result<(), Status>) -> Decision {
    match result {
        Err(s) if [USER_EMPTY, BAD_TOKEN, DENIED, OLD_REVISION].contains(&s.message()) => {
            Decision::Refused(s.code(), s.message().to_string())
        }
        _ => Decision::Passed,
    }
}

/// Who an RPC admits, by the fact sheet (etcd 3.6).
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Everyone, even with a bad token.
    Open,
    /// Any user.
    User,
    /// A user with the permission on `m/` (or root).
    Key,
    /// Root (or the user asking about themselves / their own role).
    SelfOrAdmin,
    /// Root only.
    Admin,
}

fn expected(rule: Rule, who: Who) -> Decision {
    let refused = |code, msg: &str| Decision::Refused(code, msg.to_string());
    match (rule, who) {
        (_, Who::Off | Who::Root) | (Rule::Open, _) => Decision::Passed,
        (_, Who::NoToken) => refused(Code::InvalidArgument, USER_EMPTY),
        (_, Who::BadToken) => refused(Code::Unauthenticated, BAD_TOKEN),
        (Rule::User, _) => Decision::Passed,
        (Rule::Key | Rule::SelfOrAdmin, Who::Privileged) => Decision::Passed,
        _ => refused(Code::PermissionDenied, DENIED),
    }
}

/// What a call needs from the server it runs against.
#[derive(Debug, Clone)]
struct Env {
    channel: Channel,
    token: Option<String>,
    member_id: u64,
    peer_url: String,
    /// A lease with key `m/leased` (root made it).
    lease: i64,
    /// A fresh lease with key `m/revoked-<n>` for each revoke (root made them).
    spare_leases: Vec<i64>,
    seq: u32,
}

impl Env {
    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.parse().unwrap());
        }
        request
    }
}

fn key(k: &str) -> Vec<u8> {
    k.as_bytes().to_vec()
}

fn txn_on(k: &str) -> TxnRequest {
    let compare = Compare {
        result: CompareResult::Greater as i32,
        target: CompareTarget::Version as i32,
        key: key(k),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::Version(0)),
    };
    let put = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key(k),
            value: b"t".to_vec(),
            ..Default::default()
        })),
    };
    TxnRequest { compare: vec![compare], success: vec![put], failure: Vec::new() }
}

/// Runs RPC `name` in `env`; its result as far as auth is concerned.
async fn call(name: &str, env: &mut Env) -> Result<(), Status> {
    let c = env.channel.clone();
    let (kv, lease, maint, cluster, auth) = (
        KvClient::new(c.clone()),
        LeaseClient::new(c.clone()),
        MaintenanceClient::new(c.clone()),
        ClusterClient::new(c.clone()),
        AuthClient::new(c.clone()),
    );
    env.seq += 1;
    let seq = env.seq;
    match name {
        "Range m/k" => {
            kv.clone().range(env.req(RangeRequest { key: key("m/k"), ..Default::default() })).await.map(drop)
        }
        "Range all" => kv
            .clone()
            .range(env.req(RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }))
            .await
            .map(drop),
        "Put m/k" => kv
            .clone()
            .put(env.req(PutRequest { key: key("m/k"), value: b"v".to_vec(), ..Default::default() }))
            .await
            .map(drop),
        "Put m/k with prev_kv" => {
            kv.clone().put(env.req(PutRequest { key: key("m/k"), prev_kv: true, ..Default::default() })).await.map(drop)
        }
        "Put m/j on a lease" => kv
            .clone()
            .put(env.req(PutRequest { key: key("m/j"), lease: env.lease, ..Default::default() }))
            .await
            .map(drop),
        "DeleteRange m/none" => kv
            .clone()
            .delete_range(env.req(DeleteRangeRequest { key: key("m/none"), ..Default::default() }))
            .await
            .map(drop),
        "Txn on m/k" => kv.clone().txn(env.req(txn_on("m/k"))).await.map(drop),
        "Txn on other" => kv.clone().txn(env.req(txn_on("other"))).await.map(drop),
        "Compact" => kv.clone().compact(env.req(CompactionRequest { revision: 1, physical: false })).await.map(drop),
        "Watch m/k" | "Watch from m/" => {
            let range_end = if name == "Watch m/k" { Vec::new() } else { vec![0] };
            let create = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                    key: key("m/"),
                    range_end,
                    ..Default::default()
                })),
            };
            let mut stream = WatchClient::new(c)
                .watch(env.req(futures::stream::iter([create]).chain(futures::stream::pending())))
                .await?
                .into_inner();
            let first = stream.message().await?.ok_or_else(|| Status::unknown("no watch response"))?;
            if first.canceled {
                // "rpc error: code = X desc = Y": auth's error, as a status.
                let desc = first.cancel_reason.split(" desc = ").nth(1).unwrap_or_default().to_string();
                let code = if desc == BAD_TOKEN {
                    Code::Unauthenticated
                } else if desc == DENIED {
                    Code::PermissionDenied
                } else {
                    Code::InvalidArgument
                };
                return Err(Status::new(code, desc));
            }
            Ok(())
        }
        "LeaseGrant" => lease.clone().lease_grant(env.req(LeaseGrantRequest { ttl: 60, id: 0 })).await.map(drop),
        "LeaseRevoke" => {
            let id = env.spare_leases.pop().expect("a spare lease");
            lease.clone().lease_revoke(env.req(LeaseRevokeRequest { id })).await.map(drop)
        }
        "LeaseKeepAlive" => {
            let once = futures::stream::iter([LeaseKeepAliveRequest { id: env.lease }]);
            let mut stream = lease.clone().lease_keep_alive(env.req(once)).await?.into_inner();
            stream.message().await.map(drop)
        }
        "LeaseTimeToLive with keys" => lease
            .clone()
            .lease_time_to_live(env.req(LeaseTimeToLiveRequest { id: env.lease, keys: true }))
            .await
            .map(drop),
        "LeaseTimeToLive" => lease
            .clone()
            .lease_time_to_live(env.req(LeaseTimeToLiveRequest { id: env.lease, keys: false }))
            .await
            .map(drop),
        "MemberList" => cluster.clone().member_list(env.req(MemberListRequest { linearizable: false })).await.map(drop),
        "MemberUpdate self" => cluster
            .clone()
            .member_update(env.req(MemberUpdateRequest { id: env.member_id, peer_ur_ls: vec![env.peer_url.clone()] }))
            .await
            .map(drop),
        "MemberRemove unknown" => cluster.clone().member_remove(env.req(MemberRemoveRequest { id: 1 })).await.map(drop),
        "MemberPromote unknown" => {
            cluster.clone().member_promote(env.req(MemberPromoteRequest { id: 1 })).await.map(drop)
        }
        "Status" => maint.clone().status(env.req(StatusRequest {})).await.map(drop),
        "Alarm get" => maint
            .clone()
            .alarm(env.req(AlarmRequest { action: AlarmAction::Get as i32, member_id: 0, alarm: 0 }))
            .await
            .map(drop),
        "Alarm deactivate" => maint
            .clone()
            .alarm(env.req(AlarmRequest { action: AlarmAction::Deactivate as i32, member_id: 0, alarm: 1 }))
            .await
            .map(drop),
        "Defragment" => maint.clone().defragment(env.req(DefragmentRequest {})).await.map(drop),
        "Hash" => maint.clone().hash(env.req(HashRequest {})).await.map(drop),
        "HashKV" => maint.clone().hash_kv(env.req(HashKvRequest { revision: 0 })).await.map(drop),
        "Snapshot" => {
            let mut stream = maint.clone().snapshot(env.req(SnapshotRequest {})).await?.into_inner();
            stream.message().await.map(drop)
        }
        "MoveLeader to self" => {
            maint.clone().move_leader(env.req(MoveLeaderRequest { target_id: env.member_id })).await.map(drop)
        }
        "Authenticate" => auth
            .clone()
            .authenticate(env.req(AuthenticateRequest { name: "granted".into(), password: "g".into() }))
            .await
            .map(drop),
        "UserGet granted" => {
            auth.clone().user_get(env.req(AuthUserGetRequest { name: "granted".into() })).await.map(drop)
        }
        "UserList" => auth.clone().user_list(env.req(AuthUserListRequest {})).await.map(drop),
        "UserAdd" => auth
            .clone()
            .user_add(env.req(AuthUserAddRequest {
                name: format!("new{seq}"),
                password: "p".into(),
                ..Default::default()
            }))
            .await
            .map(drop),
        "RoleGet granted" => {
            auth.clone().role_get(env.req(AuthRoleGetRequest { role: "granted".into() })).await.map(drop)
        }
        "RoleList" => auth.clone().role_list(env.req(AuthRoleListRequest {})).await.map(drop),
        "RoleAdd" => auth.clone().role_add(env.req(AuthRoleAddRequest { name: format!("new{seq}") })).await.map(drop),
        "Lock m/lock" => {
            let mut lock = LockClient::new(c);
            let held = lock.lock(env.req(LockRequest { name: key("m/lock"), lease: 0 })).await?.into_inner();
            lock.unlock(env.req(UnlockRequest { key: held.key })).await.map(drop)
        }
        "Campaign m/elect" => {
            let mut election = ElectionClient::new(c);
            let campaign = CampaignRequest { name: key("m/elect"), lease: env.lease, value: b"v".to_vec() };
            let leader = election.campaign(env.req(campaign)).await?.into_inner().leader;
            election.resign(env.req(ResignRequest { leader })).await.map(drop)
        }
        "Leader m/elect" => {
            ElectionClient::new(c).leader(env.req(LeaderRequest { name: key("m/elect") })).await.map(drop)
        }
        other => panic!("no RPC {other}"),
    }
}

const RPCS: &[(&str, Rule)] = &[
    ("Range m/k", Rule::Key),
    ("Range all", Rule::Admin),
    ("Put m/k", Rule::Key),
    ("Put m/k with prev_kv", Rule::Key),
    ("Put m/j on a lease", Rule::Key),
    ("DeleteRange m/none", Rule::Key),
    ("Txn on m/k", Rule::Key),
    ("Txn on other", Rule::Admin),
    ("Compact", Rule::Admin),
    ("Watch m/k", Rule::Key),
    ("Watch from m/", Rule::Admin),
    ("LeaseGrant", Rule::User),
    ("LeaseRevoke", Rule::Key),
    ("LeaseKeepAlive", Rule::Key),
    ("LeaseTimeToLive with keys", Rule::Key),
    ("LeaseTimeToLive", Rule::User),
    ("MemberList", Rule::Open),
    ("MemberUpdate self", Rule::Admin),
    ("MemberRemove unknown", Rule::Admin),
    ("MemberPromote unknown", Rule::Admin),
    ("Status", Rule::User),
    ("Alarm get", Rule::User),
    ("Alarm deactivate", Rule::Admin),
    ("Defragment", Rule::Admin),
    ("Hash", Rule::Admin),
    ("HashKV", Rule::Admin),
    ("Snapshot", Rule::Admin),
    ("MoveLeader to self", Rule::Admin),
    ("Authenticate", Rule::Open),
    ("UserGet granted", Rule::SelfOrAdmin),
    ("UserList", Rule::Admin),
    ("UserAdd", Rule::Admin),
    ("RoleGet granted", Rule::SelfOrAdmin),
    ("RoleList", Rule::Admin),
    ("RoleAdd", Rule::Admin),
    ("Lock m/lock", Rule::Key),
    ("Campaign m/elect", Rule::Key),
    ("Leader m/elect", Rule::Key),
];

/// Rows where etcd 3.4 checks less than (or differently from) 3.6, which ferrocd follows: no
/// check on compaction, leases, maintenance reads or membership reads; a from-key watch
/// checked as one key; an Authenticate carrying a bad token refused (3.6 ignores the token).
const KNOWN_3_4_DIFFERENCES: &[&str] = &[
    "Authenticate",
    "Compact",
    "Watch from m/",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseKeepAlive",
    "LeaseTimeToLive with keys",
    "LeaseTimeToLive",
    "Status",
    "Alarm get",
    "Alarm deactivate",
    "Defragment",
    "Hash",
    "HashKV",
    "Snapshot",
    "MoveLeader to self",
    "Put m/j on a lease",
    "Lock m/lock",
    "Campaign m/elect",
];

/// A lease made by `env`'s caller with `k` attached.
async fn lease_with_key(env: &Env, k: &str) -> i64 {
    let grant = LeaseGrantRequest { ttl: 600, id: 0 };
    let id = LeaseClient::new(env.channel.clone()).lease_grant(env.req(grant)).await.unwrap().into_inner().id;
    let put = PutRequest { key: key(k), lease: id, ..Default::default() };
    KvClient::new(env.channel.clone()).put(env.req(put)).await.unwrap();
    id
}

/// The decisions of a server of `kind`: one with auth off, one with users and auth on.
fn table(kind: Kind) -> BTreeMap<(&'static str, Who), Decision> {
    let off = Member::start(kind, &[]);
    let on = Member::start(kind, &[]);
    let ep = on.endpoint();
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "granted"],
        &["role", "grant-permission", "granted", "readwrite", "m/", "--prefix"],
        &["user", "add", "granted", "--new-user-password=g"],
        &["user", "grant-role", "granted", "granted"],
        &["role", "add", "few"],
        &["role", "grant-permission", "few", "read", "x"],
        &["user", "add", "nobody", "--new-user-password=n"],
        &["user", "grant-role", "nobody", "few"],
        &["put", "m/k", "v"],
        &["auth", "enable"],
    ] {
        etcdctl_ok(&ep, args);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut out = BTreeMap::new();
    rt.block_on(async {
        for (member, callers) in [(&off, &CALLERS[..1]), (&on, &CALLERS[1..])] {
            let channel =
                Channel::from_shared(format!("http://{}", member.endpoint())).unwrap().connect().await.unwrap();
            let token = |user: &str, password: &str| {
                let channel = channel.clone();
                let (user, password) = (user.to_string(), password.to_string());
                async move {
                    let req = AuthenticateRequest { name: user, password };
                    AuthClient::new(channel).authenticate(req).await.unwrap().into_inner().token
                }
            };
            let root_token = if member.endpoint() == ep { Some(token("root", "rootpw").await) } else { None };
            let mut admin = Env {
                channel: channel.clone(),
                token: root_token.clone(),
                member_id: 0,
                peer_url: String::new(),
                lease: 0,
                spare_leases: Vec::new(),
                seq: 0,
            };
            let status =
                MaintenanceClient::new(channel.clone()).status(admin.req(StatusRequest {})).await.unwrap().into_inner();
            admin.member_id = status.header.unwrap().member_id;
            admin.peer_url = member.peer_url();
            // Leases with keys under m/, made by root.
            admin.lease = lease_with_key(&admin, "m/leased").await;
            for n in 0..callers.len() {
                let id = lease_with_key(&admin, &format!("m/revoked-{n}")).await;
                admin.spare_leases.push(id);
            }
            for &who in callers {
                let mut env = admin.clone();
                env.token = match who {
                    Who::Off | Who::NoToken => None,
                    Who::BadToken => Some("bogus".into()),
                    Who::Unprivileged => Some(token("nobody", "n").await),
                    Who::Privileged => Some(token("granted", "g").await),
                    Who::Root => root_token.clone(),
                };
                env.spare_leases = vec![admin.spare_leases.pop().unwrap()];
                for (name, _) in RPCS {
                    let result = tokio::time::timeout(std::time::Duration::from_secs(10), call(name, &mut env))
                        .await
                        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer")));
                    out.insert((*name, who), decide(result));
                }
            }
        }
    });
    out
}

#[test]
fn every_rpc_for_every_caller_is_decided_as_etcd_decides() {
    let ours = table(Kind::Ferrocd);
    let mut wrong = Vec::new();
    for (name, rule) in RPCS {
        for who in CALLERS {
            let want = match expected(*rule, who) {
                // Lock and Election run on etcd's in-process client, which keeps an error's
                // text but not its code.
                Decision::Refused(_, msg) if ["Lock", "Campaign", "Leader"].iter().any(|r| name.starts_with(r)) => {
                    Decision::Refused(Code::Unknown, msg)
                }
                want => want,
            };
            let got = &ours[&(*name, who)];
            if *got != want {
                wrong.push(format!("{name} as {who:?}: want {want:?}, got {got:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} cells differ from the fact sheet:\n{}", wrong.len(), wrong.join("\n"));
    let etcd = table(Kind::Etcd);
    let mut diffs = Vec::new();
    for ((name, who), decision) in &etcd {
        if ours[&(*name, *who)] != *decision && !KNOWN_3_4_DIFFERENCES.contains(name) {
            diffs.push(format!("{name} as {who:?}: etcd {decision:?}, ferrocd {:?}", ours[&(*name, *who)]));
        }
    }
    assert!(diffs.is_empty(), "{} cells differ from etcd:\n{}", diffs.len(), diffs.join("\n"));
}
