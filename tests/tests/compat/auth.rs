//! Auth and RBAC: etcdctl's auth workflows diffed against a real etcd, the `etcd-client`
//! crate's auth with expiring and JWT tokens on a cluster, and the checks of the RPCs etcdctl
//! does not reach (watch, lease, lock) through raw gRPC.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use ferrocd_test_utils::{Cluster, Kind, Member, etcdctl, etcdctl_ok, etcdctl_stderr};

use crate::differential::{Step, assert_same_as_etcd, run};

/// Steps whose etcd 3.4 answer differs from etcd 3.6's (the fact sheet), which ferrocd
/// follows: 3.4 lets any user compact, and takes a permission over no key.
const KNOWN_3_4_DIFFERENCES: &[&str] = &[
    "[\"--user=alice:a2\", \"compaction\", \"1\"] None",
    "[\"--user=root:rootpw\", \"role\", \"grant-permission\", \"junk\", \"read\", \"b\", \"a\"] None",
];

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:a";
const BOB: &str = "--user=bob:b";

const SCRIPT: &[Step] = &[
    run(&["auth", "enable"]),
    run(&["user", "add", "root", "--new-user-password=rootpw"]),
    // Root has no root role yet: etcdctl creates the role and grants it, then enables.
    run(&["auth", "enable"]),
    run(&["put", "k", "v"]),
    run(&["--user=root:wrong", "get", "k"]),
    run(&["--user=nobody:x", "get", "k"]),
    run(&[ROOT, "put", "app/x", "1"]),
    run(&[ROOT, "role", "add", "rw"]),
    run(&[ROOT, "role", "add", "ro"]),
    run(&[ROOT, "role", "add", "ro"]),
    run(&[ROOT, "role", "grant-permission", "rw", "readwrite", "app/", "--prefix"]),
    run(&[ROOT, "role", "grant-permission", "rw", "write", "k1", "k5"]),
    run(&[ROOT, "role", "grant-permission", "ro", "read", "app/", "--prefix"]),
    run(&[ROOT, "role", "grant-permission", "ro", "read", "z", "--from-key"]),
    run(&[ROOT, "role", "grant-permission", "ro", "readwrite", "z", "--from-key"]),
    run(&[ROOT, "role", "grant-permission", "missing", "read", "a"]),
    run(&[ROOT, "role", "get", "rw"]),
    run(&[ROOT, "role", "get", "ro"]),
    run(&[ROOT, "role", "get", "missing"]),
    run(&[ROOT, "role", "list"]),
    run(&[ROOT, "user", "add", "alice", "--new-user-password=a"]),
    run(&[ROOT, "user", "add", "bob", "--new-user-password=b"]),
    run(&[ROOT, "user", "add", "bob", "--new-user-password=b"]),
    run(&[ROOT, "user", "grant-role", "alice", "rw"]),
    run(&[ROOT, "user", "grant-role", "bob", "ro"]),
    run(&[ROOT, "user", "grant-role", "bob", "missing"]),
    run(&[ROOT, "user", "get", "alice"]),
    run(&[ROOT, "user", "get", "alice", "--detail"]),
    run(&[ROOT, "user", "get", "missing"]),
    run(&[ROOT, "user", "list"]),
    // A read-write user and a read-only one.
    run(&[ALICE, "put", "app/y", "2"]),
    run(&[ALICE, "get", "app/", "--prefix"]),
    run(&[ALICE, "put", "k3", "w"]),
    run(&[ALICE, "get", "k3"]),
    run(&[ALICE, "put", "other", "w"]),
    run(&[ALICE, "del", "app/y", "--prev-kv"]),
    run(&[BOB, "get", "app/x"]),
    run(&[BOB, "get", "app/", "--prefix"]),
    run(&[BOB, "get", "zz"]),
    run(&[BOB, "get", "z", "--from-key"]),
    run(&[BOB, "get", "y", "--from-key"]),
    run(&[BOB, "put", "app/x", "2"]),
    run(&[BOB, "get", "other"]),
    run(&[BOB, "user", "get", "bob"]),
    run(&[BOB, "user", "get", "alice"]),
    run(&[BOB, "role", "get", "ro"]),
    run(&[BOB, "role", "get", "rw"]),
    run(&[BOB, "user", "list"]),
    run(&[BOB, "role", "add", "mine"]),
    run(&[BOB, "member", "list", "-w", "json"]),
    // Txn: every compare and both branches need their permissions.
    Step { args: &[ALICE, "txn"], stdin: Some("value(\"app/x\") = \"1\"\n\nput app/t 1\n\nget app/x\n\n") },
    Step { args: &[ALICE, "txn"], stdin: Some("value(\"app/x\") = \"1\"\n\nput app/t 2\n\nget other\n\n") },
    Step { args: &[ALICE, "txn"], stdin: Some("value(\"other\") = \"1\"\n\nput app/t 3\n\n\n") },
    Step { args: &[BOB, "txn"], stdin: Some("value(\"app/x\") = \"1\"\n\nget app/x\n\n\n") },
    // Passwords.
    Step { args: &[ROOT, "user", "passwd", "alice", "--interactive=false"], stdin: Some("a2\n") },
    run(&[ALICE, "get", "app/x"]),
    run(&["--user=alice:a2", "get", "app/x"]),
    run(&["--user=alice:a2", "compaction", "1"]),
    // Revoking: permissions, roles, whole roles.
    run(&[ROOT, "role", "revoke-permission", "ro", "app/", "--prefix"]),
    run(&[ROOT, "role", "revoke-permission", "ro", "app/", "--prefix"]),
    run(&[ROOT, "role", "revoke-permission", "ro", "z", "--from-key"]),
    run(&[BOB, "get", "app/x"]),
    run(&[ROOT, "user", "revoke-role", "bob", "ro"]),
    run(&[ROOT, "user", "revoke-role", "bob", "ro"]),
    run(&[ROOT, "role", "delete", "rw"]),
    run(&[ROOT, "user", "get", "alice"]),
    run(&["--user=alice:a2", "get", "app/x"]),
    // Root stays root while auth is on.
    run(&[ROOT, "user", "delete", "root"]),
    run(&[ROOT, "user", "revoke-role", "root", "root"]),
    run(&[ROOT, "role", "delete", "root"]),
    run(&[ROOT, "user", "delete", "bob"]),
    run(&[ROOT, "user", "delete", "bob"]),
    run(&[ROOT, "compaction", "2"]),
    // A permission over no key (etcd 3.4 accepts it; 3.5+ refuse it).
    run(&[ROOT, "role", "add", "junk"]),
    run(&[ROOT, "role", "grant-permission", "junk", "read", "b", "a"]),
    run(&[ROOT, "role", "delete", "junk"]),
    run(&[ROOT, "auth", "disable"]),
    run(&["get", "app/x"]),
    run(&["user", "list"]),
    run(&["auth", "disable"]),
];

#[test]
fn etcdctl_auth_workflows_match_etcd() {
    assert_same_as_etcd(SCRIPT, KNOWN_3_4_DIFFERENCES, |step, out| {
        let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if step.args.contains(&"member") {
            // IDs and URLs are the member's own: compare the shape only.
            stdout = serde_json::from_str::<serde_json::Value>(&stdout)
                .map_or(stdout, |v| v["members"].as_array().map_or(0, Vec::len).to_string());
        }
        (out.status.code(), stdout, etcdctl_stderr(&out))
    });
}

/// Root and a user `app` with READWRITE on `app/`, auth on, through `member`.
fn set_up_users(member: &str) {
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "app"],
        &["role", "grant-permission", "app", "readwrite", "app/", "--prefix"],
        &["user", "add", "app", "--new-user-password=apppw"],
        &["user", "grant-role", "app", "app"],
        &["auth", "enable"],
    ] {
        etcdctl_ok(member, args);
    }
}

fn grpc_code(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[test]
fn tokens_expire_and_the_client_refreshes_them_through_a_follower() {
    let cluster = Cluster::start(Kind::Ferrocd, 3, &["--auth-token-ttl", "2"]);
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(|e| format!("http://{e}")).collect();
    set_up_users(&endpoints[0]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // Find a follower: the client talks to it alone.
        let mut probe =
            Client::connect(&endpoints[..1], Some(ConnectOptions::new().with_user("root", "rootpw"))).await.unwrap();
        let leader = probe.status().await.unwrap().leader();
        let members = probe.member_list().await.unwrap();
        let follower = members.members().iter().find(|m| m.id() != leader).unwrap().client_urls()[0].clone();
        let options = ConnectOptions::new().with_user("app", "apppw").with_auto_token_refresh(true);
        let mut client = Client::connect([follower.clone()], Some(options)).await.unwrap();
        client.put("app/a", "1", None).await.unwrap();
        let denied = grpc_code(client.put("other", "1", None).await.unwrap_err());
        assert_eq!(denied, (tonic::Code::PermissionDenied, "etcdserver: permission denied".into()));
        // A token not used for its TTL expires (the TTL is time itself: nothing to wait on but
        // the clock); the client then authenticates again and retries.
        let raw = Client::connect([follower.clone()], None).await.unwrap();
        let token = raw.auth_client().authenticate("app".into(), "apppw".into()).await.unwrap().token().to_string();
        assert!(get_with_token(&follower, &token, b"app/a").await.is_ok());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let expired = get_with_token(&follower, &token, b"app/a").await.unwrap_err();
        assert_eq!(
            (expired.code(), expired.message()),
            (tonic::Code::Unauthenticated, "etcdserver: invalid auth token")
        );
        let got = client.get("app/a", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"1");
        client.put("app/b", "2", Some(etcd_client::PutOptions::new())).await.unwrap();
        let got = client.get("app/", Some(GetOptions::new().with_prefix())).await.unwrap();
        assert_eq!(got.count(), 2);
    });
}

/// A linearizable get of `key` at `endpoint` with `token`, by raw gRPC.
async fn get_with_token(endpoint: &str, token: &str, key: &[u8]) -> Result<(), tonic::Status> {
    use ferrocd_proto::etcdserverpb::{RangeRequest, kv_client::KvClient};
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string()).unwrap().connect().await.unwrap();
    let mut request = tonic::Request::new(RangeRequest { key: key.to_vec(), ..Default::default() });
    request.metadata_mut().insert("token", token.parse().unwrap());
    KvClient::new(channel).range(request).await.map(drop)
}

#[test]
fn jwt_tokens_issued_by_one_member_are_accepted_by_every_member() {
    let keys = ferrocd_test_utils::jwt_keys();
    let option = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=5m",
        keys.join("es256.pub").display(),
        keys.join("es256.key").display()
    );
    let cluster = Cluster::start(Kind::Ferrocd, 3, &["--auth-token", &option]);
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(|e| format!("http://{e}")).collect();
    set_up_users(&endpoints[0]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for issuer in &endpoints {
            let client = Client::connect([issuer.clone()], None).await.unwrap();
            let token =
                client.auth_client().authenticate("app".into(), "apppw".into()).await.unwrap().token().to_string();
            assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
            for member in &endpoints {
                get_with_token(member, &token, b"app/a")
                    .await
                    .unwrap_or_else(|e| panic!("{issuer} -> {member}: {e:?}"));
                let denied = get_with_token(member, &token, b"other").await.unwrap_err();
                assert_eq!(denied.code(), tonic::Code::PermissionDenied);
            }
        }
        // A JWT stands for the auth revision it was signed at: any change makes it old.
        let client = Client::connect([endpoints[1].clone()], None).await.unwrap();
        let token = client.auth_client().authenticate("app".into(), "apppw".into()).await.unwrap().token().to_string();
        let out = etcdctl(&endpoints[0], &["--user=root:rootpw", "role", "add", "another"], None);
        assert!(out.status.success(), "{}", etcdctl_stderr(&out));
        let mut old = None;
        for _ in 0..50 {
            match get_with_token(&endpoints[1], &token, b"app/a").await {
                Err(e) => {
                    old = Some(e);
                    break;
                }
                // The member has not applied the change yet.
                Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let old = old.expect("the change never reached the member");
        assert_eq!(
            (old.code(), old.message()),
            (tonic::Code::InvalidArgument, "etcdserver: revision of auth store is old")
        );
    });
}

#[test]
fn watch_lease_and_lock_are_checked_as_the_caller() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = format!("http://{}", member.endpoint());
    set_up_users(&ep);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut root =
            Client::connect([ep.clone()], Some(ConnectOptions::new().with_user("root", "rootpw"))).await.unwrap();
        let mut app =
            Client::connect([ep.clone()], Some(ConnectOptions::new().with_user("app", "apppw"))).await.unwrap();
        // A watch the user may not make is created and canceled with gRPC's words for why.
        let mut stream = app.watch("other", None).await.unwrap();
        let resp = stream.message().await.unwrap().unwrap();
        assert!(resp.created() && resp.canceled(), "{resp:?}");
        assert_eq!(resp.cancel_reason(), "rpc error: code = PermissionDenied desc = etcdserver: permission denied");
        let mut stream = app.watch("app/", Some(etcd_client::WatchOptions::new().with_prefix())).await.unwrap();
        let resp = stream.message().await.unwrap().unwrap();
        assert!(resp.created() && !resp.canceled(), "{resp:?}");
        // A lease holding a key the user cannot write cannot be revoked by the user.
        let lease = root.lease_grant(60, None).await.unwrap().id();
        root.put("secret", "s", Some(etcd_client::PutOptions::new().with_lease(lease))).await.unwrap();
        let denied = grpc_code(app.lease_revoke(lease).await.unwrap_err());
        assert_eq!(denied.0, tonic::Code::PermissionDenied);
        let denied = grpc_code(
            app.lease_time_to_live(lease, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
                .await
                .unwrap_err(),
        );
        assert_eq!(denied.0, tonic::Code::PermissionDenied);
        // Nor attach another key to it.
        let denied =
            grpc_code(app.put("app/x", "1", Some(etcd_client::PutOptions::new().with_lease(lease))).await.unwrap_err());
        assert_eq!(denied.0, tonic::Code::PermissionDenied);
        let own = app.lease_grant(60, None).await.unwrap().id();
        app.put("app/leased", "1", Some(etcd_client::PutOptions::new().with_lease(own))).await.unwrap();
        app.lease_revoke(own).await.unwrap();
        // Lock runs as the caller: a lock under the user's prefix works, elsewhere it is refused.
        let held = app.lock("app/lock", None).await.unwrap();
        app.unlock(held.key()).await.unwrap();
        // (As from etcd, whose recipes run on an in-process client: the text, with code Unknown.)
        let denied = grpc_code(app.lock("elsewhere", None).await.unwrap_err());
        assert_eq!(denied, (tonic::Code::Unknown, "etcdserver: permission denied".into()));
        // Maintenance and membership changes are root's.
        let denied = grpc_code(app.defragment().await.unwrap_err());
        assert_eq!(denied.0, tonic::Code::PermissionDenied);
        root.defragment().await.unwrap();
        // Revoking the role of a connected user takes effect on their next request; their
        // open watch stays (etcd checks a watch when it is created).
        app.put("app/before", "1", None).await.unwrap();
        root.user_revoke_role("app", "app").await.unwrap();
        let denied = grpc_code(app.put("app/after", "1", None).await.unwrap_err());
        assert_eq!(denied, (tonic::Code::PermissionDenied, "etcdserver: permission denied".into()));
        let denied = grpc_code(app.get("app/before", None).await.unwrap_err());
        assert_eq!(denied.0, tonic::Code::PermissionDenied);
        root.user_grant_role("app", "app").await.unwrap();
        app.put("app/again", "1", None).await.unwrap();
    });
}
