//! The auth store's rules (etcd's), its persistence, tokens, and a property test of the
//! permission check against a model that reads every role's permissions per key.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferrocd_engine::{Engine, MemEngine, WriteBatch};
use ferrocd_proto::authpb::{Permission, permission::Type};
use ferrocd_types::KeyRange;
use proptest::prelude::*;

use crate::range_set::tests::universe;
use crate::{AuthInfo, AuthStore, BUCKETS, Error, Perm, ROOT, TokenOptions, Tokens};

fn perm(t: Type, key: &str, end: &str) -> Permission {
    Permission { perm_type: t as i32, key: key.as_bytes().to_vec(), range_end: end.as_bytes().to_vec() }
}

/// A store on an engine, every change written at once.
struct Fixture {
    engine: MemEngine,
    store: AuthStore,
}

impl Fixture {
    fn new() -> Self {
        let engine = MemEngine::new(&BUCKETS);
        let store = AuthStore::load(&engine).unwrap();
        Self { engine, store }
    }

    fn change<T>(&mut self, f: impl FnOnce(&mut AuthStore, &mut WriteBatch) -> T) -> T {
        let mut batch = WriteBatch::new();
        let out = f(&mut self.store, &mut batch);
        self.engine.write(batch, false).unwrap();
        out
    }

    fn caller(&self, user: &str) -> AuthInfo {
        AuthInfo { user: user.into(), revision: self.store.revision() }
    }

    /// Root with the root role, auth on.
    fn enabled() -> Self {
        let mut f = Self::new();
        f.change(|s, b| s.user_add(ROOT, "hash", false, b)).unwrap();
        f.change(|s, b| s.user_grant_role(ROOT, ROOT, b)).unwrap();
        f.change(|s, b| s.enable(b)).unwrap();
        f
    }
}

fn key(k: &str) -> KeyRange {
    KeyRange::from_request(k.as_bytes(), b"")
}

#[test]
fn enable_needs_root_with_the_root_role() {
    let mut f = Fixture::new();
    assert_eq!(f.store.revision(), 1, "a new store is at revision 1, as etcd's");
    assert_eq!(f.change(|s, b| s.enable(b)), Err(Error::RootUserNotExist));
    f.change(|s, b| s.user_add(ROOT, "hash", false, b)).unwrap();
    assert_eq!(f.change(|s, b| s.enable(b)), Err(Error::RootRoleNotExist));
    // Role root need not exist to be granted.
    f.change(|s, b| s.user_grant_role(ROOT, ROOT, b)).unwrap();
    f.change(|s, b| s.enable(b)).unwrap();
    assert!(f.store.is_enabled());
    let revision = f.store.revision();
    assert_eq!(revision, 3, "user add and grant; turning auth on does not move it");
    // Enabling twice changes nothing, not even the revision.
    f.change(|s, b| s.enable(b)).unwrap();
    assert_eq!(f.store.revision(), revision);
}

#[test]
fn root_cannot_be_taken_away_while_auth_is_on() {
    let mut f = Fixture::enabled();
    f.change(|s, b| s.role_add(ROOT, b)).unwrap();
    assert_eq!(f.change(|s, b| s.user_delete(ROOT, b)), Err(Error::InvalidAuthMgmt));
    assert_eq!(f.change(|s, b| s.user_revoke_role(ROOT, ROOT, b)), Err(Error::InvalidAuthMgmt));
    assert_eq!(f.change(|s, b| s.role_delete(ROOT, b)), Err(Error::InvalidAuthMgmt));
    f.change(|s, b| s.disable(b));
    f.change(|s, b| s.user_revoke_role(ROOT, ROOT, b)).unwrap();
    f.change(|s, b| s.role_delete(ROOT, b)).unwrap();
    f.change(|s, b| s.user_delete(ROOT, b)).unwrap();
}

#[test]
fn user_and_role_management_errors() {
    let mut f = Fixture::new();
    assert_eq!(f.change(|s, b| s.user_add("", "h", false, b)), Err(Error::UserEmpty));
    assert_eq!(f.change(|s, b| s.role_add("", b)), Err(Error::RoleEmpty));
    f.change(|s, b| s.user_add("u", "h", false, b)).unwrap();
    assert_eq!(f.change(|s, b| s.user_add("u", "h", false, b)), Err(Error::UserAlreadyExist));
    f.change(|s, b| s.role_add("r", b)).unwrap();
    assert_eq!(f.change(|s, b| s.role_add("r", b)), Err(Error::RoleAlreadyExist));
    assert_eq!(f.change(|s, b| s.user_grant_role("nobody", "r", b)), Err(Error::UserNotFound));
    assert_eq!(f.change(|s, b| s.user_grant_role("u", "nothing", b)), Err(Error::RoleNotFound));
    assert_eq!(f.change(|s, b| s.user_revoke_role("u", "r", b)), Err(Error::RoleNotGranted));
    f.change(|s, b| s.user_grant_role("u", "r", b)).unwrap();
    let revision = f.store.revision();
    f.change(|s, b| s.user_grant_role("u", "r", b)).unwrap();
    assert_eq!(f.store.revision(), revision, "granting a held role changes nothing");
    assert_eq!(
        f.change(|s, b| s.role_grant_permission("nothing", perm(Type::Read, "a", ""), b)),
        Err(Error::RoleNotFound)
    );
    for (k, e) in [("", ""), ("b", "a"), ("b", "b")] {
        let bad = perm(Type::Read, k, e);
        assert_eq!(f.change(|s, b| s.role_grant_permission("r", bad, b)), Err(Error::InvalidAuthMgmt), "{k:?} {e:?}");
    }
    assert_eq!(f.change(|s, b| s.role_revoke_permission("r", b"a", b"", b)), Err(Error::PermissionNotGranted));
    assert_eq!(f.change(|s, b| s.user_delete("nobody", b)), Err(Error::UserNotFound));
    assert_eq!(f.change(|s, b| s.role_delete("nothing", b)), Err(Error::RoleNotFound));
    assert_eq!(f.change(|s, b| s.user_change_password("nobody", "h", b)), Err(Error::UserNotFound));
}

#[test]
fn permissions_are_sorted_and_a_regrant_changes_the_type() {
    let mut f = Fixture::new();
    f.change(|s, b| s.role_add("r", b)).unwrap();
    for p in [perm(Type::Read, "c", ""), perm(Type::Write, "a", "b"), perm(Type::Read, "b", "\0")] {
        f.change(|s, b| s.role_grant_permission("r", p, b)).unwrap();
    }
    f.change(|s, b| s.role_grant_permission("r", perm(Type::Readwrite, "a", "b"), b)).unwrap();
    let keys: Vec<_> = f.store.role("r").unwrap().key_permission.iter().map(|p| (p.key.clone(), p.perm_type)).collect();
    assert_eq!(keys, [(b"a".to_vec(), 2), (b"b".to_vec(), 0), (b"c".to_vec(), 0)]);
    // Revoking needs the exact range.
    assert_eq!(f.change(|s, b| s.role_revoke_permission("r", b"b", b"", b)), Err(Error::PermissionNotGranted));
    f.change(|s, b| s.role_revoke_permission("r", b"b", b"\0", b)).unwrap();
    assert_eq!(f.store.role("r").unwrap().key_permission.len(), 2);
}

#[test]
fn checks_follow_etcds_order() {
    let mut f = Fixture::enabled();
    f.change(|s, b| s.user_add("u", "h", false, b)).unwrap();
    f.change(|s, b| s.role_add("r", b)).unwrap();
    f.change(|s, b| s.role_grant_permission("r", perm(Type::Read, "k/", "k0"), b)).unwrap();
    f.change(|s, b| s.user_grant_role("u", "r", b)).unwrap();
    let u = f.caller("u");
    assert_eq!(f.store.check_range(None, &key("k/a"), Perm::Read), Err(Error::UserEmpty));
    assert_eq!(f.store.check_range(Some(&AuthInfo::default()), &key("k/a"), Perm::Read), Err(Error::UserEmpty));
    f.store.check_range(Some(&u), &key("k/a"), Perm::Read).unwrap();
    f.store.check_range(Some(&u), &KeyRange::prefix(b"k/"), Perm::Read).unwrap();
    assert_eq!(f.store.check_range(Some(&u), &key("k/a"), Perm::Write), Err(Error::PermissionDenied));
    assert_eq!(f.store.check_range(Some(&u), &key("other"), Perm::Read), Err(Error::PermissionDenied));
    assert_eq!(f.store.check_range(Some(&u), &KeyRange::prefix(b"k"), Perm::Read), Err(Error::PermissionDenied));
    let root = f.caller(ROOT);
    f.store.check_range(Some(&root), &KeyRange::prefix(b""), Perm::Write).unwrap();
    f.store.check_admin(Some(&root)).unwrap();
    assert_eq!(f.store.check_admin(Some(&u)), Err(Error::PermissionDenied));
    assert_eq!(f.store.check_admin(Some(&AuthInfo { user: "ghost".into(), revision: 9 })), Err(Error::UserNotFound));
    assert_eq!(f.store.check_admin(None), Err(Error::UserEmpty));
    // A caller checked at an earlier revision is refused once anything changed.
    f.change(|s, b| s.role_add("other", b)).unwrap();
    assert_eq!(f.store.check_range(Some(&u), &key("k/a"), Perm::Read), Err(Error::AuthOldRevision));
    // Calls open to every user need a user, at any revision.
    f.store.check_user(Some(&u)).unwrap();
    assert_eq!(f.store.check_user(None), Err(Error::UserEmpty));
    // Revoking the role takes the permission away.
    f.change(|s, b| s.user_revoke_role("u", "r", b)).unwrap();
    let u = f.caller("u");
    assert_eq!(f.store.check_range(Some(&u), &key("k/a"), Perm::Read), Err(Error::PermissionDenied));
    // Auth off: everything passes.
    f.change(|s, b| s.disable(b));
    f.store.check_range(None, &key("x"), Perm::Write).unwrap();
    f.store.check_admin(None).unwrap();
}

#[test]
fn passwords_are_checked_only_while_auth_is_on() {
    let mut f = Fixture::new();
    f.change(|s, b| s.user_add("u", "$2a$hash", false, b)).unwrap();
    f.change(|s, b| s.user_add("cn", "", true, b)).unwrap();
    assert_eq!(f.store.password_hash("u"), Err(Error::AuthNotEnabled));
    f.change(|s, b| s.user_add(ROOT, "h", false, b)).unwrap();
    f.change(|s, b| s.user_grant_role(ROOT, ROOT, b)).unwrap();
    f.change(|s, b| s.enable(b)).unwrap();
    assert_eq!(f.store.password_hash("u").unwrap().0, "$2a$hash");
    assert_eq!(f.store.password_hash("nobody"), Err(Error::AuthFailed));
    assert_eq!(f.store.password_hash("cn"), Err(Error::NoPasswordUser));
    assert_eq!(f.store.can_authenticate("cn"), Err(Error::AuthFailed));
    f.store.can_authenticate("u").unwrap();
    // A user without password keeps none.
    f.change(|s, b| s.user_change_password("cn", "$2a$new", b)).unwrap();
    assert_eq!(f.store.password_hash("cn"), Err(Error::NoPasswordUser));
}

#[test]
fn the_store_reloads_as_it_was() {
    let mut f = Fixture::enabled();
    f.change(|s, b| s.user_add("u", "h", false, b)).unwrap();
    f.change(|s, b| s.role_add("r", b)).unwrap();
    f.change(|s, b| s.role_add("gone", b)).unwrap();
    f.change(|s, b| s.user_grant_role("u", "gone", b)).unwrap();
    f.change(|s, b| s.role_grant_permission("r", perm(Type::Write, "a", "c"), b)).unwrap();
    f.change(|s, b| s.user_grant_role("u", "r", b)).unwrap();
    f.change(|s, b| s.role_delete("gone", b)).unwrap();
    let reloaded = AuthStore::load(&f.engine).unwrap();
    assert!(reloaded.is_enabled());
    assert_eq!(reloaded.revision(), f.store.revision());
    assert_eq!(reloaded.user_names(), ["root", "u"]);
    assert_eq!(reloaded.role_names(), ["r"]);
    assert_eq!(reloaded.user("u").unwrap().roles, ["r"], "a deleted role is taken from its users");
    let u = AuthInfo { user: "u".into(), revision: reloaded.revision() };
    reloaded.check_range(Some(&u), &KeyRange::from_request(b"a", b"c"), Perm::Write).unwrap();
}

fn testdata(name: &str) -> PathBuf {
    // Cargo sets it when it runs the tests: the checkout they run in, which need not be the one
    // they were compiled in (a shared target directory).
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    dir.join("testdata").join(name)
}

#[test]
fn simple_tokens_slide_and_are_forgotten() {
    let ttl = Duration::from_secs(10);
    let mut tokens = Tokens::new(&TokenOptions::Simple, ttl).unwrap();
    let prefix = Tokens::prefix();
    assert_eq!(prefix.len(), 16);
    assert!(prefix.bytes().all(|b| b.is_ascii_alphabetic()), "{prefix}");
    assert_ne!(prefix, Tokens::prefix());
    let t0 = Instant::now();
    let token = tokens.assign("u", 4, &prefix, 42, t0).unwrap();
    assert_eq!(token, format!("{prefix}.42"));
    // Each use gives the token another TTL; it stands for the store's current revision.
    assert_eq!(tokens.info(&token, 7, t0 + ttl / 2).unwrap(), AuthInfo { user: "u".into(), revision: 7 });
    assert!(tokens.info(&token, 7, t0 + ttl).is_some());
    assert!(tokens.info(&token, 7, t0 + ttl * 2 + Duration::from_secs(1)).is_none(), "unused for a TTL");
    assert!(tokens.info("nonsense", 7, t0).is_none());
    let a = tokens.assign("a", 1, &prefix, 1, t0).unwrap();
    let b = tokens.assign("b", 1, &prefix, 2, t0).unwrap();
    tokens.invalidate_user("a");
    assert!(tokens.info(&a, 1, t0).is_none());
    assert!(tokens.info(&b, 1, t0).is_some());
    tokens.clear();
    assert!(tokens.is_empty());
    let c = tokens.assign("c", 1, &prefix, 3, t0).unwrap();
    tokens.sweep(t0 + ttl * 2);
    assert!(tokens.info(&c, 1, t0).is_none());
}

#[test]
fn token_options_parse_as_etcds() {
    assert_eq!(TokenOptions::parse("simple"), Ok(TokenOptions::Simple));
    let jwt = TokenOptions::parse("jwt,pub-key=p.pub,priv-key=p.key,sign-method=RS256,ttl=10m").unwrap();
    let TokenOptions::Jwt { ttl, pub_key, .. } = jwt else { panic!("{jwt:?}") };
    assert_eq!(ttl, Duration::from_secs(600));
    assert_eq!(pub_key, Some(PathBuf::from("p.pub")));
    for bad in [
        "bogus",
        "simple,ttl=1s",
        "jwt,pub-key=p",
        "jwt,sign-method=XX256,pub-key=p",
        "jwt,sign-method=RS256",
        "jwt,sign-method=RS256,pub-key=p,colour=red",
        "jwt,sign-method=RS256,pub-key=p,ttl=soon",
    ] {
        assert!(TokenOptions::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn jwt_tokens_in_every_family_sign_and_verify() {
    let path = |p: &str| testdata(p).display().to_string();
    for (method, key, public) in [
        ("ES256", "es256.key", "es256.pub"),
        ("EdDSA", "ed25519.key", "ed25519.pub"),
        ("RS256", "rsa.key", "rsa.pub"),
        ("PS384", "rsa.key", "rsa.pub"),
        ("HS256", "hmac.key", "hmac.key"),
    ] {
        let options = TokenOptions::parse(&format!(
            "jwt,pub-key={},priv-key={},sign-method={method},ttl=1m",
            path(public),
            path(key)
        ))
        .unwrap();
        let mut signer = Tokens::new(&options, Duration::from_secs(1)).unwrap();
        let now = Instant::now();
        let token = signer.assign("alice", 9, "ignored", 1, now).unwrap();
        // The revision is the token's own, whatever the store's is now.
        assert_eq!(signer.info(&token, 12, now), Some(AuthInfo { user: "alice".into(), revision: 9 }), "{method}");
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'x');
        assert_eq!(signer.info(&tampered, 12, now), None, "{method}");
        // A member with only the public key verifies, but cannot sign.
        if method != "HS256" {
            let verify_only =
                TokenOptions::parse(&format!("jwt,pub-key={},sign-method={method}", path(public))).unwrap();
            let mut verifier = Tokens::new(&verify_only, Duration::from_secs(1)).unwrap();
            assert!(verifier.info(&token, 12, now).is_some(), "{method}");
            assert_eq!(verifier.assign("alice", 9, "", 1, now), Err(Error::VerifyOnly));
        }
    }
    // An expired token is refused, whether or not it was verified (and remembered) before.
    let options = TokenOptions::parse(&format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=1s",
        path("es256.pub"),
        path("es256.key")
    ))
    .unwrap();
    let mut tokens = Tokens::new(&options, Duration::from_secs(1)).unwrap();
    let used = tokens.assign("alice", 9, "", 1, Instant::now()).unwrap();
    assert!(tokens.info(&used, 9, Instant::now()).is_some());
    let unused = tokens.assign("bob", 9, "", 2, Instant::now()).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(tokens.info(&used, 9, Instant::now()), None);
    assert_eq!(tokens.info(&unused, 9, Instant::now()), None);
}

// --- the permission check against a model ---

#[derive(Debug, Clone)]
enum Op {
    Grant { role: usize, perm: Permission },
    Revoke { role: usize, which: usize },
    GiveRole { user: usize, role: usize },
    TakeRole { user: usize, role: usize },
    DeleteRole(usize),
    AddRole(usize),
}

const USERS: [&str; 2] = ["u0", "u1"];
const ROLES: [&str; 3] = ["r0", "r1", "r2"];

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0u8, b'a', b'b', b'c']), 0..3)
}

fn arb_perm() -> impl Strategy<Value = Permission> {
    let end = prop_oneof![Just(Vec::new()), Just(vec![0u8]), small_key()];
    (0..3i32, small_key(), end).prop_map(|(t, key, range_end)| Permission { perm_type: t, key, range_end })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, arb_perm()).prop_map(|(role, perm)| Op::Grant { role, perm }),
        1 => (0..3usize, 0..4usize).prop_map(|(role, which)| Op::Revoke { role, which }),
        3 => (0..2usize, 0..3usize).prop_map(|(user, role)| Op::GiveRole { user, role }),
        1 => (0..2usize, 0..3usize).prop_map(|(user, role)| Op::TakeRole { user, role }),
        1 => (0..3usize).prop_map(Op::DeleteRole),
        1 => (0..3usize).prop_map(Op::AddRole),
    ]
}

fn arb_request() -> impl Strategy<Value = KeyRange> {
    let end = prop_oneof![Just(Vec::new()), Just(vec![0u8]), small_key()];
    (small_key(), end).prop_map(|(k, e)| KeyRange::from_request(&k, &e))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random grants, revokes and role changes, then random requests: the store allows a
    /// request exactly when every key of it is granted by some permission of some role the
    /// user holds now, read from the roles themselves (no merging, no cache).
    #[test]
    fn the_permission_check_agrees_with_reading_every_role(
        ops in prop::collection::vec(arb_op(), 0..24),
        asks in prop::collection::vec((0..2usize, arb_request(), any::<bool>()), 1..12),
    ) {
        let mut f = Fixture::enabled();
        for u in USERS {
            f.change(|s, b| s.user_add(u, "h", false, b)).unwrap();
        }
        for r in ROLES {
            f.change(|s, b| s.role_add(r, b)).unwrap();
        }
        for op in ops {
            // Refusals (a bad range, a role gone) are part of the game: the model reads the
            // store's roles, so it follows whatever was accepted.
            let _ = match op {
                Op::Grant { role, perm } => f.change(|s, b| s.role_grant_permission(ROLES[role], perm, b)),
                Op::Revoke { role, which } => {
                    let held = f.store.role(ROLES[role]).ok().and_then(|r| r.key_permission.get(which).cloned());
                    match held {
                        Some(p) => f.change(|s, b| s.role_revoke_permission(ROLES[role], &p.key, &p.range_end, b)),
                        None => Ok(()),
                    }
                }
                Op::GiveRole { user, role } => f.change(|s, b| s.user_grant_role(USERS[user], ROLES[role], b)),
                Op::TakeRole { user, role } => f.change(|s, b| s.user_revoke_role(USERS[user], ROLES[role], b)),
                Op::DeleteRole(role) => f.change(|s, b| s.role_delete(ROLES[role], b)),
                Op::AddRole(role) => f.change(|s, b| s.role_add(ROLES[role], b)),
            };
        }
        let keys = universe();
        for (user, asked, write) in asks {
            let caller = f.caller(USERS[user]);
            let wanted = if write { [Type::Write, Type::Readwrite] } else { [Type::Read, Type::Readwrite] };
            let grants: Vec<KeyRange> = f.store.user(USERS[user]).unwrap().roles.iter()
                .filter_map(|r| f.store.role(r).ok())
                .flat_map(|r| r.key_permission.iter())
                .filter(|p| wanted.iter().any(|t| *t as i32 == p.perm_type))
                .map(|p| KeyRange::from_request(&p.key, &p.range_end))
                .collect();
            let model = keys.iter().filter(|k| asked.contains(k)).all(|k| grants.iter().any(|g| g.contains(k)));
            let perm = if write { Perm::Write } else { Perm::Read };
            let got = f.store.check_range(Some(&caller), &asked, perm);
            prop_assert_eq!(got.is_ok(), model, "{:?} {:?} {:?}", asked, perm, got);
            if let Err(e) = got {
                prop_assert_eq!(e, Error::PermissionDenied);
            }
        }
        // Reloading from the engine gives the same answers.
        let reloaded = AuthStore::load(&f.engine).unwrap();
        for user in USERS {
            let caller = f.caller(user);
            for asked in [KeyRange::prefix(b"a"), KeyRange::from_request(b"b", b"\0"), key("c")] {
                prop_assert_eq!(
                    reloaded.check_range(Some(&caller), &asked, Perm::Read),
                    f.store.check_range(Some(&caller), &asked, Perm::Read)
                );
            }
        }
    }
}
