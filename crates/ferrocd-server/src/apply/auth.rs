//! The auth applier: user, role and permission changes, enable/disable and token issue, each
//! refused as etcd refuses it; and the check at apply of every client's request against the
//! caller and auth revision of its entry's header.

use std::io;
use std::time::Instant;

use ferrocd_engine::Engine;
use ferrocd_lease::Lessor;
use ferrocd_mvcc::KvStore;
use parking_lot::Mutex;

use super::{Outcome, Reply, Step, io_error};
use crate::auth::{Auth, Check};
use crate::entry::{Header, entry::Command};
use crate::error::ServerError;

/// What an applied auth command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthApplied {
    /// The token an Authenticate issued; empty for the other commands.
    pub token: String,
}

/// Whether `command` is auth management (the root role's).
fn is_management(command: &Command) -> bool {
    matches!(
        command,
        Command::AuthEnable(_)
            | Command::AuthDisable(_)
            | Command::UserAdd(_)
            | Command::UserDelete(_)
            | Command::UserChangePassword(_)
            | Command::UserGrantRole(_)
            | Command::UserRevokeRole(_)
            | Command::RoleAdd(_)
            | Command::RoleDelete(_)
            | Command::RoleGrantPermission(_)
            | Command::RoleRevokePermission(_)
    )
}

/// The check at apply: a client's request is allowed by the store as it is now, for the
/// caller its header names, at the auth revision the request was checked at (etcd's
/// `authApplierV3`). The server's own requests pass.
///
/// # Errors
/// etcd's auth errors: user empty, revision of auth store is old, permission denied.
pub(super) fn authorize(
    auth: &Auth,
    lessor: &Mutex<Lessor>,
    header: &Header,
    command: &Command,
) -> Result<(), ServerError> {
    if header.internal {
        return Ok(());
    }
    fail::fail_point!("auth-check", |_| Ok(()));
    let store = auth.store();
    if !store.is_enabled() {
        return Ok(());
    }
    let caller = header.caller();
    let check = Check { store: &store, caller: caller.as_ref() };
    // The lease table is locked after the store, as the services do.
    let lease_keys = |id| lessor.lock().time_to_live(id, true).map(|t| t.keys).unwrap_or_default();
    let result = match command {
        Command::Put(r) => check.put(r, &lease_keys),
        Command::DeleteRange(r) => check.delete(r),
        Command::Txn(r) => check.txn(r, &lease_keys),
        Command::Compact(_) | Command::Alarm(_) => check.admin(),
        Command::LeaseRevoke(r) if !r.expired => r.ids.iter().try_for_each(|id| check.lease_keys(&lease_keys(*id))),
        c if is_management(c) => check.admin(),
        // A grant needs only a user (checked by the service); the rest are the server's own.
        _ => Ok(()),
    };
    result.map_err(ServerError::from)
}

/// Applies an auth command (management or Authenticate).
pub(super) fn apply<E: Engine>(
    kv: &KvStore<E>,
    auth: &Auth,
    command: Command,
    mut step: Step<'_, '_>,
) -> io::Result<Outcome> {
    let batch = &mut step.record;
    let mut token = String::new();
    let result = {
        let mut store = auth.store_mut();
        match command {
            Command::AuthEnable(_) => store.enable(batch),
            Command::AuthDisable(_) => {
                store.disable(batch);
                auth.tokens().clear();
                Ok(())
            }
            Command::Authenticate(r) => {
                if store.revision() != r.checked_revision {
                    // Users or passwords changed since the password was checked: the proposer
                    // checks again.
                    Err(ferrocd_auth::Error::AuthOldRevision)
                } else {
                    store.can_authenticate(&r.name).and_then(|()| {
                        let mut tokens = auth.tokens();
                        let now = Instant::now();
                        tokens.sweep(now);
                        token = tokens.assign(&r.name, store.revision(), &r.simple_token, step.entry.index, now)?;
                        Ok(())
                    })
                }
            }
            Command::UserAdd(r) => {
                let no_password = r.options.is_some_and(|o| o.no_password);
                store.user_add(&r.name, &r.hashed_password, no_password, batch)
            }
            Command::UserDelete(r) => {
                store.user_delete(&r.name, batch).inspect(|()| auth.tokens().invalidate_user(&r.name))
            }
            Command::UserChangePassword(r) => store
                .user_change_password(&r.name, &r.hashed_password, batch)
                .inspect(|()| auth.tokens().invalidate_user(&r.name)),
            Command::UserGrantRole(r) => store.user_grant_role(&r.user, &r.role, batch),
            Command::UserRevokeRole(r) => store.user_revoke_role(&r.name, &r.role, batch),
            Command::RoleAdd(r) => store.role_add(&r.name, batch),
            Command::RoleDelete(r) => store.role_delete(&r.role, batch),
            Command::RoleGrantPermission(r) => match r.perm {
                Some(perm) => store.role_grant_permission(&r.name, perm, batch),
                None => Err(ferrocd_auth::Error::PermissionNotGiven),
            },
            Command::RoleRevokePermission(r) => store.role_revoke_permission(&r.role, &r.key, &r.range_end, batch),
            other => return Err(io_error(format!("not an auth command: {other:?}"))),
        }
    };
    let batch = if result.is_ok() { step.record } else { Step::record(step.entry) };
    kv.engine().write(batch, false).map_err(io_error)?;
    Ok(Outcome::done(result.map(|()| Reply::Auth(AuthApplied { token })).map_err(ServerError::from)))
}

/// A refused request's outcome: its entry consumed, nothing changed.
pub(super) fn refuse<E: Engine>(kv: &KvStore<E>, step: &Step<'_, '_>, why: ServerError) -> io::Result<Outcome> {
    kv.engine().write(Step::record(step.entry), false).map_err(io_error)?;
    Ok(Outcome::done(Err(why)))
}

#[cfg(test)]
mod tests {
    use ferrocd_auth::AuthInfo;
    use ferrocd_proto::authpb::{Permission, permission::Type};
    use ferrocd_proto::etcdserverpb::{
        AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
        AuthUserGrantRoleRequest, CompactionRequest, PutRequest,
    };

    use super::super::Reply;
    use super::super::testing::Fixture;
    use crate::entry::{Authenticate, entry::Command};
    use crate::error::ServerError;

    fn put(key: &str) -> Command {
        Command::Put(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() })
    }

    /// Root, and user `u` with READWRITE on `a/`, auth on.
    fn enabled() -> Fixture {
        let mut f = Fixture::new();
        let user = |name: &str| {
            Command::UserAdd(AuthUserAddRequest {
                name: name.into(),
                hashed_password: "h".into(),
                ..Default::default()
            })
        };
        f.apply(user("root")).unwrap();
        f.apply(user("u")).unwrap();
        f.apply(Command::UserGrantRole(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() })).unwrap();
        f.apply(Command::RoleAdd(AuthRoleAddRequest { name: "rw".into() })).unwrap();
        let perm = Permission { perm_type: Type::Readwrite as i32, key: b"a/".to_vec(), range_end: b"a0".to_vec() };
        f.apply(Command::RoleGrantPermission(AuthRoleGrantPermissionRequest { name: "rw".into(), perm: Some(perm) }))
            .unwrap();
        f.apply(Command::UserGrantRole(AuthUserGrantRoleRequest { user: "u".into(), role: "rw".into() })).unwrap();
        f.apply(Command::AuthEnable(AuthEnableRequest {})).unwrap();
        f
    }

    fn as_user(f: &Fixture, user: &str) -> Option<AuthInfo> {
        Some(AuthInfo { user: user.into(), revision: f.applier.auth().store().revision() })
    }

    #[test]
    fn a_clients_write_is_checked_again_at_apply() {
        let mut f = enabled();
        let u = as_user(&f, "u");
        assert!(matches!(f.apply_as(put("a/1"), u.clone()), Ok(Reply::Kv(_))));
        let denied = f.apply_as(put("b"), u.clone()).unwrap_err();
        assert!(matches!(denied, ServerError::Auth(ferrocd_auth::Error::PermissionDenied)), "{denied:?}");
        let empty = f.apply_as(put("a/2"), None).unwrap_err();
        assert!(matches!(empty, ServerError::Auth(ferrocd_auth::Error::UserEmpty)), "{empty:?}");
        let compact = f.apply_as(Command::Compact(CompactionRequest { revision: 1, physical: false }), u.clone());
        assert!(matches!(compact, Err(ServerError::Auth(ferrocd_auth::Error::PermissionDenied))), "{compact:?}");
        // The store changed after the request was checked: refused, whatever the permission.
        f.apply(Command::RoleAdd(AuthRoleAddRequest { name: "other".into() })).unwrap();
        let old = f.apply_as(put("a/3"), u).unwrap_err();
        assert!(matches!(old, ServerError::Auth(ferrocd_auth::Error::AuthOldRevision)), "{old:?}");
        // The refused entries were consumed and changed nothing; the server's own requests pass.
        assert_eq!(f.applier.kv().current_revision(), 2);
        assert!(f.apply(put("anything")).is_ok());
        // Management needs the root role.
        let role = Command::RoleAdd(AuthRoleAddRequest { name: "mine".into() });
        let u = as_user(&f, "u");
        assert!(matches!(f.apply_as(role.clone(), u), Err(ServerError::Auth(ferrocd_auth::Error::PermissionDenied))));
        let root = as_user(&f, "root");
        assert!(f.apply_as(role, root).is_ok());
    }

    #[test]
    fn authenticate_issues_the_same_token_on_every_member() {
        let mut a = enabled();
        let mut b = enabled();
        let revision = a.applier.auth().store().revision();
        let auth = Command::Authenticate(Authenticate {
            name: "u".into(),
            simple_token: "abcdefghijklmnop".into(),
            checked_revision: revision,
        });
        let token = |r| match r {
            Ok(Reply::Auth(applied)) => applied.token,
            other => panic!("{other:?}"),
        };
        let issued = token(a.apply_as(auth.clone(), None));
        assert_eq!(issued, format!("abcdefghijklmnop.{}", a.index));
        assert_eq!(token(b.apply_as(auth, None)), issued);
        let caller = b.applier.auth().resolve(Some(&crate::auth::Credential::Token(issued)));
        assert_eq!(caller, crate::auth::Caller::User(AuthInfo { user: "u".into(), revision }));
        // A password checked before the store changed is checked again.
        let stale = Command::Authenticate(Authenticate {
            name: "u".into(),
            simple_token: "x".repeat(16),
            checked_revision: revision - 1,
        });
        assert!(matches!(a.apply_as(stale, None), Err(ServerError::Auth(ferrocd_auth::Error::AuthOldRevision))));
        let nobody = Command::Authenticate(Authenticate {
            name: "nobody".into(),
            simple_token: "y".repeat(16),
            checked_revision: revision,
        });
        assert!(matches!(a.apply_as(nobody, None), Err(ServerError::Auth(ferrocd_auth::Error::AuthFailed))));
    }
}
