//! Auth in the server: the member's [`AuthStore`] and [`Tokens`] (changed by the applier, read
//! by the edge and the services), and etcd's table of which permission each request needs
//! (fact sheet §2.10), checked by the services before a request is served or proposed and again
//! by the applier for every client's write, at the auth revision its entry's header carries.

use std::time::{Duration, Instant};

use ferrocd_auth::{AuthInfo, AuthStore, Perm, TokenOptions, Tokens};
use ferrocd_mvcc::WriteRequest;
use ferrocd_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op::Request as Op,
};
use ferrocd_types::KeyRange;
use parking_lot::{Mutex, RwLock};

use crate::error::ServerError;

/// Who a request comes from, as the edge found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Caller {
    /// No token (or auth is off).
    #[default]
    Anonymous,
    /// A token (or the forwarding member) names this user.
    User(AuthInfo),
    /// The token is unknown, expired or does not verify.
    InvalidToken,
}

impl Caller {
    /// The caller for a permission check.
    ///
    /// # Errors
    /// `etcdserver: invalid auth token` for a token that names nobody.
    pub fn info(&self) -> Result<Option<&AuthInfo>, ServerError> {
        match self {
            Self::Anonymous => Ok(None),
            Self::User(info) => Ok(Some(info)),
            Self::InvalidToken => Err(ferrocd_auth::Error::InvalidAuthToken.into()),
        }
    }
}

/// What a client proves who it is with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A token (gRPC metadata `token` or `authorization`).
    Token(String),
    /// The common name of its verified TLS client certificate, with no token sent
    /// (`--client-cert-auth`; never for the HTTP gateway, as etcd).
    CommonName(String),
}

/// A member's auth state.
#[derive(Debug)]
pub struct Auth {
    store: RwLock<AuthStore>,
    tokens: Mutex<Tokens>,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
}

impl Auth {
    /// Auth as `store` holds it, issuing tokens of the kind `options` says.
    ///
    /// # Errors
    /// JWT keys that cannot be loaded.
    pub fn new(
        store: AuthStore,
        options: &TokenOptions,
        simple_ttl: Duration,
        bcrypt_cost: u32,
    ) -> Result<Self, String> {
        Ok(Self { store: RwLock::new(store), tokens: Mutex::new(Tokens::new(options, simple_ttl)?), bcrypt_cost })
    }

    /// The store, to read (checks, gets, lists).
    pub fn store(&self) -> parking_lot::RwLockReadGuard<'_, AuthStore> {
        self.store.read()
    }

    /// The store, to change (the applier's alone).
    pub(crate) fn store_mut(&self) -> parking_lot::RwLockWriteGuard<'_, AuthStore> {
        self.store.write()
    }

    /// The tokens (the applier issues and forgets them).
    pub(crate) fn tokens(&self) -> parking_lot::MutexGuard<'_, Tokens> {
        self.tokens.lock()
    }

    /// Who `token` stands for; nobody while auth is off (etcd then ignores tokens).
    pub fn resolve(&self, credential: Option<&Credential>) -> Caller {
        let Some(credential) = credential else { return Caller::Anonymous };
        let revision = {
            let store = self.store.read();
            if !store.is_enabled() {
                return Caller::Anonymous;
            }
            store.revision()
        };
        let token = match credential {
            Credential::Token(token) => token,
            // etcd's `AuthInfoFromTLS`: the name, at the store's revision now (whether such a
            // user exists is the permission check's business).
            Credential::CommonName(user) => return Caller::User(AuthInfo { user: user.clone(), revision }),
        };
        match self.tokens.lock().info(token, revision, Instant::now()) {
            Some(info) => Caller::User(info),
            None => Caller::InvalidToken,
        }
    }

    /// Checks `f` against the store for `caller`.
    ///
    /// # Errors
    /// The check's error.
    pub fn check(
        &self,
        caller: &Caller,
        f: impl FnOnce(&Check<'_>) -> Result<(), ferrocd_auth::Error>,
    ) -> Result<(), ServerError> {
        // Test builds only: `auth-check=return` lets every request through, to check that the
        // fault suite catches a bypassed permission.
        fail::fail_point!("auth-check", |_| Ok(()));
        let store = self.store.read();
        if !store.is_enabled() {
            return Ok(());
        }
        let caller = caller.info()?;
        f(&Check { store: &store, caller }).map_err(ServerError::from)
    }
}

/// One caller's checks against one state of the store.
#[derive(Debug)]
pub struct Check<'a> {
    pub store: &'a AuthStore,
    pub caller: Option<&'a AuthInfo>,
}

fn range(key: &[u8], range_end: &[u8]) -> KeyRange {
    KeyRange::from_request(key, range_end)
}

/// The keys attached to a lease (none for no lease or an unknown one).
pub type LeaseKeys<'a> = &'a dyn Fn(i64) -> Vec<Vec<u8>>;

impl Check<'_> {
    fn allowed(&self, r: &KeyRange, perm: Perm) -> Result<(), ferrocd_auth::Error> {
        self.store.check_range(self.caller, r, perm)
    }

    /// Any authenticated user.
    pub fn user(&self) -> Result<(), ferrocd_auth::Error> {
        self.store.check_user(self.caller)
    }

    /// The root role.
    pub fn admin(&self) -> Result<(), ferrocd_auth::Error> {
        self.store.check_admin(self.caller)
    }

    /// READ on the range.
    pub fn range(&self, req: &RangeRequest) -> Result<(), ferrocd_auth::Error> {
        self.allowed(&range(&req.key, &req.range_end), Perm::Read)
    }

    /// READ on a watch's range.
    pub fn watch(&self, key: &[u8], range_end: &[u8]) -> Result<(), ferrocd_auth::Error> {
        self.allowed(&range(key, range_end), Perm::Read)
    }

    /// WRITE on the key (READ too with `prev_kv`), and WRITE on every key already attached to
    /// its lease: a user must not attach a key to a lease they could not revoke.
    pub fn put(&self, req: &PutRequest, lease_keys: LeaseKeys<'_>) -> Result<(), ferrocd_auth::Error> {
        let key = range(&req.key, b"");
        self.allowed(&key, Perm::Write)?;
        if req.lease != 0 {
            self.lease_keys(&lease_keys(req.lease))?;
        }
        if req.prev_kv {
            self.allowed(&key, Perm::Read)?;
        }
        Ok(())
    }

    /// WRITE on the range (READ too with `prev_kv`).
    pub fn delete(&self, req: &DeleteRangeRequest) -> Result<(), ferrocd_auth::Error> {
        let r = range(&req.key, &req.range_end);
        self.allowed(&r, Perm::Write)?;
        if req.prev_kv {
            self.allowed(&r, Perm::Read)?;
        }
        Ok(())
    }

    /// READ on every compare's range, and every operation of both branches, nested ones too.
    pub fn txn(&self, req: &TxnRequest, lease_keys: LeaseKeys<'_>) -> Result<(), ferrocd_auth::Error> {
        for compare in &req.compare {
            self.allowed(&range(&compare.key, &compare.range_end), Perm::Read)?;
        }
        self.ops(&req.success, lease_keys)?;
        self.ops(&req.failure, lease_keys)
    }

    fn ops(&self, ops: &[RequestOp], lease_keys: LeaseKeys<'_>) -> Result<(), ferrocd_auth::Error> {
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(r)) => self.range(r)?,
                Some(Op::RequestPut(r)) => self.put(r, lease_keys)?,
                Some(Op::RequestDeleteRange(r)) => self.delete(r)?,
                Some(Op::RequestTxn(t)) => self.txn(t, lease_keys)?,
                None => {}
            }
        }
        Ok(())
    }

    /// WRITE on every key of a lease (to revoke it, or attach another key to it).
    pub fn lease_keys(&self, keys: &[Vec<u8>]) -> Result<(), ferrocd_auth::Error> {
        keys.iter().try_for_each(|k| self.allowed(&range(k, b""), Perm::Write))
    }

    /// READ on every key of a lease (its time-to-live with keys).
    pub fn read_keys(&self, keys: &[Vec<u8>]) -> Result<(), ferrocd_auth::Error> {
        keys.iter().try_for_each(|k| self.allowed(&range(k, b""), Perm::Read))
    }

    /// What a keyspace change needs: compaction is the root role's.
    pub fn write(&self, req: &WriteRequest, lease_keys: LeaseKeys<'_>) -> Result<(), ferrocd_auth::Error> {
        match req {
            WriteRequest::Put(r) => self.put(r, lease_keys),
            WriteRequest::DeleteRange(r) => self.delete(r),
            WriteRequest::Txn(t) => self.txn(t, lease_keys),
            WriteRequest::Compact(_) => self.admin(),
            // A lease's revoke: checked as the revoke.
            WriteRequest::DeleteKeys(_) => Ok(()),
        }
    }
}

impl From<ferrocd_auth::Error> for ServerError {
    fn from(e: ferrocd_auth::Error) -> Self {
        ServerError::Auth(e)
    }
}
