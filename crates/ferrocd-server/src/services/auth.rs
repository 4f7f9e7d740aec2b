//! etcd's Auth service: enable/disable, status, Authenticate, and user and role management,
//! every change through the log. Passwords are hashed here, before the proposal and off the
//! async threads; the log never holds one in the clear.

use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_proto::authpb::{Permission, permission::Type};
use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
use ferrocd_proto::etcdserverpb::auth_server::Auth;
use ferrocd_proto::etcdserverpb::*;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{Headed, Shared};

use crate::context::RequestContext;
use crate::entry::{Authenticate, entry::Command};
use crate::error::ServerError;

/// The Auth service.
#[derive(Debug)]
pub struct AuthService<E: Engine>(pub Arc<Shared<E>>);

/// bcrypt of `password` at the member's cost, off the async threads.
async fn hash(password: String, cost: u32) -> Result<String, ServerError> {
    tokio::task::spawn_blocking(move || ferrocd_auth::password::hash(&password, cost))
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))?
        .map_err(|e| ServerError::Storage(format!("cannot hash the password: {e}")))
}

impl<E: Engine> AuthService<E> {
    /// A management call: the root role's (while auth is on), served at the leader, the
    /// command `make` builds proposed and applied.
    async fn manage<T, R, F>(
        &self,
        request: Request<T>,
        forward: impl AsyncFn(Channel, Request<T>) -> Result<Response<R>, Status>,
        make: impl Fn(T) -> F,
    ) -> Result<Response<R>, Status>
    where
        T: Clone + Send + Sync,
        R: Headed + Default,
        F: Future<Output = Result<Command, ServerError>>,
    {
        let (shared, make) = (&*self.0, &make);
        let local = |ctx: RequestContext, req: T| async move {
            shared.auth.check(&ctx.caller, |c| c.admin())?;
            shared.replica.propose_auth(&ctx, make(req).await?).await?;
            Ok(R::default())
        };
        self.0.at_leader(request, forward, local).await
    }

    /// A read of the auth store, linearizable, by a caller `allowed` admits.
    async fn read(
        &self,
        ctx: &RequestContext,
        allowed: impl FnOnce(&crate::auth::Check<'_>) -> Result<(), ferrocd_auth::Error>,
    ) -> Result<(), Status> {
        self.0.read_barrier().await?;
        Ok(self.0.auth.check(&ctx.caller, allowed)?)
    }
}

fn auth_client(c: Channel) -> AuthClient<Channel> {
    AuthClient::new(c)
}

#[tonic::async_trait]
impl<E: Engine> Auth for AuthService<E> {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        let forward = async |c, r| auth_client(c).auth_enable(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::AuthEnable(r)) }).await
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let forward = async |c, r| auth_client(c).auth_disable(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::AuthDisable(r)) }).await
    }

    async fn auth_status(&self, request: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        let ctx = self.0.context(&request);
        self.read(&ctx, |c| c.admin()).await?;
        let store = self.0.auth.store();
        let mut resp =
            AuthStatusResponse { header: None, enabled: store.is_enabled(), auth_revision: store.revision() };
        drop(store);
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let shared = &*self.0;
        let local = |ctx: RequestContext, req: AuthenticateRequest| async move {
            loop {
                let (hash, checked_revision) = shared.auth.store().password_hash(&req.name)?;
                let password = req.password.clone();
                let matches = tokio::task::spawn_blocking(move || ferrocd_auth::password::verify(&password, &hash))
                    .await
                    .map_err(|e| ServerError::Storage(e.to_string()))?;
                if !matches {
                    return Err(ferrocd_auth::Error::AuthFailed.into());
                }
                let command = Command::Authenticate(Authenticate {
                    name: req.name.clone(),
                    simple_token: ferrocd_auth::Tokens::prefix(),
                    checked_revision,
                });
                match shared.replica.propose_auth(&ctx, command).await {
                    Ok(applied) => return Ok(AuthenticateResponse { header: None, token: applied.token }),
                    // Users or passwords changed after the check: check again.
                    Err(ServerError::Auth(ferrocd_auth::Error::AuthOldRevision)) if !ctx.expired() => {}
                    Err(e) => return Err(e),
                }
            }
        };
        let forward = async |c, r| auth_client(c).authenticate(r).await;
        let resp = self.0.at_leader(request, forward, local).await?;
        // A member answering with a token the leader issued knows it once it has applied the
        // entry that issued it (a simple token ends with that entry's index).
        if let Some(index) = resp.get_ref().token.rsplit_once('.').and_then(|(_, i)| i.parse::<u64>().ok()) {
            let replica = &self.0.replica;
            let _ = replica.wait_until(self.0.request_timeout, |_| replica.applied_index() >= index).await;
        }
        Ok(resp)
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        let cost = self.0.auth.bcrypt_cost;
        let forward = async |c, r| auth_client(c).user_add(r).await;
        let make = |mut r: AuthUserAddRequest| async move {
            // As etcd: the password is always hashed here (an empty one too), whatever hash a
            // client sent, unless the user has none.
            let no_password = r.options.is_some_and(|o| o.no_password);
            r.hashed_password =
                if no_password { String::new() } else { hash(std::mem::take(&mut r.password), cost).await? };
            r.password.clear();
            Ok(Command::UserAdd(r))
        };
        self.manage(request, forward, make).await
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        let ctx = self.0.context(&request);
        let name = request.into_inner().name;
        // A user may read their own record.
        let own = matches!(&ctx.caller, crate::auth::Caller::User(info) if info.user == name);
        self.read(&ctx, |c| if own { Ok(()) } else { c.admin() }).await?;
        let roles = self.0.auth.store().user(&name).map_err(ServerError::from)?.roles.clone();
        let mut resp = AuthUserGetResponse { header: None, roles };
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        let ctx = self.0.context(&request);
        self.read(&ctx, |c| c.admin()).await?;
        let mut resp = AuthUserListResponse { header: None, users: self.0.auth.store().user_names() };
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let forward = async |c, r| auth_client(c).user_delete(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::UserDelete(r)) }).await
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let cost = self.0.auth.bcrypt_cost;
        let forward = async |c, r| auth_client(c).user_change_password(r).await;
        let make = |mut r: AuthUserChangePasswordRequest| async move {
            // A client's own hash is taken when it sends no password (etcd 3.5+).
            if !r.password.is_empty() {
                r.hashed_password = hash(std::mem::take(&mut r.password), cost).await?;
            }
            Ok(Command::UserChangePassword(r))
        };
        self.manage(request, forward, make).await
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let forward = async |c, r| auth_client(c).user_grant_role(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::UserGrantRole(r)) }).await
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let forward = async |c, r| auth_client(c).user_revoke_role(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::UserRevokeRole(r)) }).await
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        let forward = async |c, r| auth_client(c).role_add(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::RoleAdd(r)) }).await
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        let ctx = self.0.context(&request);
        let role = request.into_inner().role;
        // A user may read the roles they hold.
        self.read(&ctx, |c| {
            let holds = c.caller.is_some_and(|info| c.store.has_role(&info.user, &role));
            if holds { Ok(()) } else { c.admin() }
        })
        .await?;
        let store = self.0.auth.store();
        let stored = store.role(&role).map_err(ServerError::from)?;
        // Role root grants every key, whatever is stored (etcd 3.6 shows it so).
        let perm = if role == ferrocd_auth::ROOT {
            vec![Permission { perm_type: Type::Readwrite as i32, key: Vec::new(), range_end: vec![0] }]
        } else {
            stored.key_permission.clone()
        };
        drop(store);
        let mut resp = AuthRoleGetResponse { header: None, perm };
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        let ctx = self.0.context(&request);
        self.read(&ctx, |c| c.admin()).await?;
        let mut resp = AuthRoleListResponse { header: None, roles: self.0.auth.store().role_names() };
        self.0.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let forward = async |c, r| auth_client(c).role_delete(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::RoleDelete(r)) }).await
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let forward = async |c, r| auth_client(c).role_grant_permission(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::RoleGrantPermission(r)) }).await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let forward = async |c, r| auth_client(c).role_revoke_permission(r).await;
        self.manage(request, forward, |r| async move { Ok(Command::RoleRevokePermission(r)) }).await
    }
}
