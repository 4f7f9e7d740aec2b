//! Auth management: enabling auth, users, roles and their key-range permissions.
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! use ferrocd_client::auth::PermissionType;
//!
//! client.user_add("root", "secret").await?;
//! client.user_grant_role("root", "root").await?;
//! client.role_add("reader").await?;
//! client.role_grant_permission("reader", PermissionType::Read, "config/", Some("config0")).await?;
//! client.auth_enable().await?;
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use ferrocd_proto::authpb::Permission;
use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
use ferrocd_proto::etcdserverpb::*;

pub use ferrocd_proto::authpb::permission::Type as PermissionType;

use crate::{Client, Repeat, Result};

/// One method per Auth RPC: its name, arguments, request, how it may repeat, the stub's method.
macro_rules! auth_calls {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $resp:ty = $req:expr, $repeat:ident, $rpc:ident;)*) => {
        impl Client {
            $(
                $(#[$doc])*
                ///
                /// # Errors
                /// etcd's (e.g. [`crate::EtcdError::PermissionDenied`] for anyone but root once
                /// auth is on); an unreachable cluster.
                pub async fn $name(&self, $($arg: $ty),*) -> Result<$resp> {
                    let request = $req;
                    self.call(request, Repeat::$repeat, |ch, r| async move { AuthClient::new(ch).$rpc(r).await }).await
                }
            )*
        }
    };
}

auth_calls! {
    /// Turns auth on (user `root` with role `root` must exist).
    auth_enable() -> AuthEnableResponse = AuthEnableRequest {}, Idempotent, auth_enable;
    /// Turns auth off.
    auth_disable() -> AuthDisableResponse = AuthDisableRequest {}, Idempotent, auth_disable;
    /// Whether auth is on, and the auth store's revision.
    auth_status() -> AuthStatusResponse = AuthStatusRequest {}, Idempotent, auth_status;
    /// Adds a user with a password.
    user_add(name: &str, password: &str) -> AuthUserAddResponse = AuthUserAddRequest {
        name: name.into(), password: password.into(), ..Default::default()
    }, Once, user_add;
    /// Adds a user that has no password (it authenticates by its TLS certificate's name).
    user_add_no_password(name: &str) -> AuthUserAddResponse = AuthUserAddRequest {
        name: name.into(),
        options: Some(ferrocd_proto::authpb::UserAddOptions { no_password: true }),
        ..Default::default()
    }, Once, user_add;
    /// A user's roles.
    user_get(name: &str) -> AuthUserGetResponse = AuthUserGetRequest { name: name.into() }, Idempotent, user_get;
    /// Every user.
    user_list() -> AuthUserListResponse = AuthUserListRequest {}, Idempotent, user_list;
    /// Deletes a user.
    user_delete(name: &str) -> AuthUserDeleteResponse = AuthUserDeleteRequest { name: name.into() }, Once, user_delete;
    /// Changes a user's password.
    user_change_password(name: &str, password: &str) -> AuthUserChangePasswordResponse = AuthUserChangePasswordRequest {
        name: name.into(), password: password.into(), ..Default::default()
    }, Idempotent, user_change_password;
    /// Grants a role to a user.
    user_grant_role(user: &str, role: &str) -> AuthUserGrantRoleResponse = AuthUserGrantRoleRequest {
        user: user.into(), role: role.into()
    }, Idempotent, user_grant_role;
    /// Revokes a role from a user.
    user_revoke_role(name: &str, role: &str) -> AuthUserRevokeRoleResponse = AuthUserRevokeRoleRequest {
        name: name.into(), role: role.into()
    }, Once, user_revoke_role;
    /// Adds a role.
    role_add(name: &str) -> AuthRoleAddResponse = AuthRoleAddRequest { name: name.into() }, Once, role_add;
    /// A role's permissions.
    role_get(role: &str) -> AuthRoleGetResponse = AuthRoleGetRequest { role: role.into() }, Idempotent, role_get;
    /// Every role.
    role_list() -> AuthRoleListResponse = AuthRoleListRequest {}, Idempotent, role_list;
    /// Deletes a role.
    role_delete(role: &str) -> AuthRoleDeleteResponse = AuthRoleDeleteRequest { role: role.into() }, Once, role_delete;
    /// Grants a role `kind` access to `key`, or to `[key, range_end)` (`"\0"`: every key from
    /// `key` on).
    role_grant_permission(name: &str, kind: PermissionType, key: &str, range_end: Option<&str>) -> AuthRoleGrantPermissionResponse =
        AuthRoleGrantPermissionRequest {
            name: name.into(),
            perm: Some(Permission {
                perm_type: kind as i32,
                key: key.as_bytes().to_vec(),
                range_end: range_end.map(|e| e.as_bytes().to_vec()).unwrap_or_default(),
            }),
        }, Idempotent, role_grant_permission;
    /// Revokes a role's permission on `key` (or `[key, range_end)`).
    role_revoke_permission(role: &str, key: &str, range_end: Option<&str>) -> AuthRoleRevokePermissionResponse =
        AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: key.as_bytes().to_vec(),
            range_end: range_end.map(|e| e.as_bytes().to_vec()).unwrap_or_default(),
        }, Once, role_revoke_permission;
}
