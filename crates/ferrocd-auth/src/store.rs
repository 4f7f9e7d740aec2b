//! The auth store: users, roles and their permissions, whether auth is on, and the auth
//! revision; every change is added to the caller's write batch, in etcd's layout.

use std::collections::{BTreeMap, HashMap};

use ferrocd_engine::{ReadView, Scan, WriteBatch};
use ferrocd_proto::authpb::{Permission, Role, User, UserAddOptions, permission::Type};
use ferrocd_types::KeyRange;
use prost::Message;

use crate::{AUTH_BUCKET, Error, ROLES_BUCKET, ROOT, RangeSet, Result, USERS_BUCKET};

const ENABLED_KEY: &[u8] = b"authEnabled";
const REVISION_KEY: &[u8] = b"authRevision";

/// What a request needs of a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Read,
    Write,
}

/// Who is calling, as a token says: the user and the auth revision the token stands for
/// (a simple token stands for the store's current revision; a JWT for the one it was signed
/// at).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthInfo {
    pub user: String,
    pub revision: u64,
}

/// A user's merged key ranges, per permission type.
#[derive(Debug, Clone, Default)]
struct Perms {
    read: RangeSet,
    write: RangeSet,
}

/// Users, roles and permissions, as every member holds them (changed only by applied log
/// entries).
#[derive(Debug, Clone, Default)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's permissions merged across their roles (root's role grants all keys and is
    /// not cached).
    cache: HashMap<String, Perms>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

/// A permission's range, as etcd reads it: an empty `range_end` is the single key, `"\0"`
/// every key from `key` on.
fn range_of(p: &Permission) -> KeyRange {
    KeyRange::from_request(&p.key, &p.range_end)
}

/// Whether a user holds the root role.
fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT)
}

impl AuthStore {
    /// The store as the engine holds it (an empty engine: auth off, no users, revision 1, as
    /// etcd's new store).
    ///
    /// # Errors
    /// Engine failures; records that do not decode.
    pub fn load(view: &impl ReadView) -> Result<Self> {
        let enabled = view.get(AUTH_BUCKET, ENABLED_KEY)?.is_some_and(|v| v.first() == Some(&1));
        let revision = match view.get(AUTH_BUCKET, REVISION_KEY)? {
            Some(v) => u64::from_be_bytes(v.try_into().map_err(|_| corrupt("auth revision", "not 8 bytes"))?),
            None => 1,
        };
        let mut users = BTreeMap::new();
        view.scan(USERS_BUCKET, b"", None, false, &mut |_, v| {
            let user = User::decode(v).map_err(|e| ferrocd_engine::Error::Corrupt(e.to_string()))?;
            users.insert(String::from_utf8_lossy(&user.name).into_owned(), user);
            Ok(Scan::Continue)
        })
        .map_err(|e| corrupt("user", e))?;
        let mut roles = BTreeMap::new();
        view.scan(ROLES_BUCKET, b"", None, false, &mut |_, v| {
            let role = Role::decode(v).map_err(|e| ferrocd_engine::Error::Corrupt(e.to_string()))?;
            roles.insert(String::from_utf8_lossy(&role.name).into_owned(), role);
            Ok(Scan::Continue)
        })
        .map_err(|e| corrupt("role", e))?;
        let mut store = Self { enabled, revision, users, roles, cache: HashMap::new() };
        let names: Vec<String> = store.users.keys().cloned().collect();
        for name in names {
            store.refresh(&name);
        }
        Ok(store)
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: bumped by every change of users, roles, permissions or the
    /// enabled flag.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The user `name`.
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
    pub fn user(&self, name: &str) -> Result<&User> {
        self.users.get(name).ok_or(Error::UserNotFound)
    }

    /// The role `name`.
    ///
    /// # Errors
    /// [`Error::RoleNotFound`].
    pub fn role(&self, name: &str) -> Result<&Role> {
        self.roles.get(name).ok_or(Error::RoleNotFound)
    }

    /// Every user's name, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Every role's name, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    // --- changes: each one the effect of one applied log entry ---

    /// Turns auth on; a no-op when it is on.
    ///
    /// # Errors
    /// No user `root`; `root` without the root role.
    pub fn enable(&mut self, batch: &mut WriteBatch) -> Result<()> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(Error::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(Error::RootRoleNotExist);
        }
        // As etcd: turning auth on does not move the revision (only the root role may act
        // once it is on, and root's tokens stay good).
        self.enabled = true;
        batch.put(AUTH_BUCKET, ENABLED_KEY, [1u8]);
        Ok(())
    }

    /// Turns auth off; a no-op when it is off.
    pub fn disable(&mut self, batch: &mut WriteBatch) {
        if !self.enabled {
            return;
        }
        self.enabled = false;
        batch.put(AUTH_BUCKET, ENABLED_KEY, [0u8]);
        self.commit(batch);
    }

    /// Adds user `name` with a bcrypt `password_hash` (empty for a user without password).
    ///
    /// # Errors
    /// An empty name; a name taken.
    pub fn user_add(
        &mut self,
        name: &str,
        password_hash: &str,
        no_password: bool,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(Error::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(Error::UserAlreadyExist);
        }
        let user = User {
            name: name.as_bytes().to_vec(),
            password: if no_password { Vec::new() } else { password_hash.as_bytes().to_vec() },
            roles: Vec::new(),
            options: Some(UserAddOptions { no_password }),
        };
        self.put_user(user, batch);
        self.commit(batch);
        Ok(())
    }

    /// Deletes user `name`.
    ///
    /// # Errors
    /// `root` while auth is on; no such user.
    pub fn user_delete(&mut self, name: &str, batch: &mut WriteBatch) -> Result<()> {
        if self.enabled && name == ROOT {
            return Err(Error::InvalidAuthMgmt);
        }
        if self.users.remove(name).is_none() {
            return Err(Error::UserNotFound);
        }
        self.cache.remove(name);
        batch.delete(USERS_BUCKET, name.as_bytes());
        self.commit(batch);
        Ok(())
    }

    /// Sets user `name`'s password to the bcrypt `password_hash` (a user created without
    /// password keeps none, as in etcd).
    ///
    /// # Errors
    /// No such user.
    pub fn user_change_password(&mut self, name: &str, password_hash: &str, batch: &mut WriteBatch) -> Result<()> {
        let mut user = self.user(name)?.clone();
        if !user.options.is_some_and(|o| o.no_password) {
            user.password = password_hash.as_bytes().to_vec();
        }
        self.put_user(user, batch);
        self.commit(batch);
        Ok(())
    }

    /// Grants `role` to `user` (role `root` need not exist); granting a role the user has
    /// changes nothing.
    ///
    /// # Errors
    /// No such user; no such role.
    pub fn user_grant_role(&mut self, user: &str, role: &str, batch: &mut WriteBatch) -> Result<()> {
        let mut record = self.user(user)?.clone();
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(Error::RoleNotFound);
        }
        let Err(at) = record.roles.binary_search_by(|r| r.as_str().cmp(role)) else {
            return Ok(());
        };
        record.roles.insert(at, role.to_owned());
        self.put_user(record, batch);
        self.commit(batch);
        Ok(())
    }

    /// Revokes `role` from `user`.
    ///
    /// # Errors
    /// The root role from `root` while auth is on; no such user; a role the user lacks.
    pub fn user_revoke_role(&mut self, user: &str, role: &str, batch: &mut WriteBatch) -> Result<()> {
        if self.enabled && user == ROOT && role == ROOT {
            return Err(Error::InvalidAuthMgmt);
        }
        let mut record = self.user(user)?.clone();
        let at = record.roles.iter().position(|r| r == role).ok_or(Error::RoleNotGranted)?;
        record.roles.remove(at);
        self.put_user(record, batch);
        self.commit(batch);
        Ok(())
    }

    /// Adds role `name` with no permission.
    ///
    /// # Errors
    /// An empty name; a name taken.
    pub fn role_add(&mut self, name: &str, batch: &mut WriteBatch) -> Result<()> {
        if name.is_empty() {
            return Err(Error::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(Error::RoleAlreadyExist);
        }
        self.put_role(Role { name: name.as_bytes().to_vec(), key_permission: Vec::new() }, batch);
        self.commit(batch);
        Ok(())
    }

    /// Deletes role `name` and takes it from every user that has it.
    ///
    /// # Errors
    /// Role `root` while auth is on; no such role.
    pub fn role_delete(&mut self, name: &str, batch: &mut WriteBatch) -> Result<()> {
        if self.enabled && name == ROOT {
            return Err(Error::InvalidAuthMgmt);
        }
        if self.roles.remove(name).is_none() {
            return Err(Error::RoleNotFound);
        }
        batch.delete(ROLES_BUCKET, name.as_bytes());
        let holders: Vec<User> = self.users.values().filter(|u| u.roles.iter().any(|r| r == name)).cloned().collect();
        for mut user in holders {
            user.roles.retain(|r| r != name);
            self.put_user(user, batch);
        }
        self.commit(batch);
        Ok(())
    }

    /// Grants `perm` to `role`; a permission over the same range replaces the old one's type.
    ///
    /// # Errors
    /// A permission over no key; no such role.
    pub fn role_grant_permission(&mut self, role: &str, perm: Permission, batch: &mut WriteBatch) -> Result<()> {
        if !valid_permission_range(&perm.key, &perm.range_end) {
            return Err(Error::InvalidAuthMgmt);
        }
        let mut record = self.role(role)?.clone();
        let same = record.key_permission.iter_mut().find(|p| p.key == perm.key && p.range_end == perm.range_end);
        match same {
            Some(p) => p.perm_type = perm.perm_type,
            None => {
                let at = record.key_permission.partition_point(|p| p.key <= perm.key);
                record.key_permission.insert(at, perm);
            }
        }
        self.put_role(record, batch);
        self.commit(batch);
        Ok(())
    }

    /// Revokes `role`'s permission over exactly `[key, range_end)`.
    ///
    /// # Errors
    /// No such role; no permission over that range.
    pub fn role_revoke_permission(
        &mut self,
        role: &str,
        key: &[u8],
        range_end: &[u8],
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let mut record = self.role(role)?.clone();
        let at = record
            .key_permission
            .iter()
            .position(|p| p.key == key && p.range_end == range_end)
            .ok_or(Error::PermissionNotGranted)?;
        record.key_permission.remove(at);
        self.put_role(record, batch);
        self.commit(batch);
        Ok(())
    }

    // --- checks ---

    /// Whether the caller may `perm` every key of `range`: always while auth is off; else the
    /// caller must be known, checked at the current revision, and hold the root role or
    /// permissions covering the whole range.
    ///
    /// # Errors
    /// [`Error::UserEmpty`], [`Error::AuthOldRevision`], [`Error::PermissionDenied`].
    pub fn check_range(&self, caller: Option<&AuthInfo>, range: &KeyRange, perm: Perm) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let caller = self.current(caller)?;
        let user = self.users.get(&caller.user).ok_or(Error::PermissionDenied)?;
        if has_root_role(user) {
            return Ok(());
        }
        let perms = self.cache.get(&caller.user).ok_or(Error::PermissionDenied)?;
        let set = match perm {
            Perm::Read => &perms.read,
            Perm::Write => &perms.write,
        };
        if set.covers(range) { Ok(()) } else { Err(Error::PermissionDenied) }
    }

    /// Whether the caller holds the root role (always while auth is off).
    ///
    /// # Errors
    /// [`Error::UserEmpty`], [`Error::UserNotFound`], [`Error::PermissionDenied`].
    pub fn check_admin(&self, caller: Option<&AuthInfo>) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let caller = caller.filter(|c| !c.user.is_empty()).ok_or(Error::UserEmpty)?;
        let user = self.users.get(&caller.user).ok_or(Error::UserNotFound)?;
        if has_root_role(user) { Ok(()) } else { Err(Error::PermissionDenied) }
    }

    /// Whether the request names a caller (always while auth is off): what calls open to
    /// every user need (etcd's `requireAuthInfo`: neither the user nor the revision is
    /// looked at).
    ///
    /// # Errors
    /// [`Error::UserEmpty`].
    pub fn check_user(&self, caller: Option<&AuthInfo>) -> Result<()> {
        if self.enabled && caller.is_none_or(|c| c.user.is_empty()) { Err(Error::UserEmpty) } else { Ok(()) }
    }

    /// Whether the caller holds the root role, without an error (false while auth is off).
    pub fn is_admin(&self, caller: Option<&AuthInfo>) -> bool {
        self.enabled && self.check_admin(caller).is_ok()
    }

    /// Whether `user` holds `role` (etcd lets a user read their own roles).
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// The caller, known and checked at the current revision.
    fn current<'a>(&self, caller: Option<&'a AuthInfo>) -> Result<&'a AuthInfo> {
        let caller = caller.filter(|c| !c.user.is_empty() && c.revision != 0).ok_or(Error::UserEmpty)?;
        if caller.revision < self.revision {
            return Err(Error::AuthOldRevision);
        }
        Ok(caller)
    }

    /// The bcrypt hash to check `name`'s password against, and the revision it was read at.
    ///
    /// # Errors
    /// Auth off; no such user ([`Error::AuthFailed`]); a user without password
    /// ([`Error::NoPasswordUser`]).
    pub fn password_hash(&self, name: &str) -> Result<(String, u64)> {
        if !self.enabled {
            return Err(Error::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(Error::AuthFailed)?;
        if user.options.is_some_and(|o| o.no_password) {
            return Err(Error::NoPasswordUser);
        }
        Ok((String::from_utf8_lossy(&user.password).into_owned(), self.revision))
    }

    /// Whether `name` may be given a token (at apply, after the password was checked): auth
    /// on and the user known with a password.
    ///
    /// # Errors
    /// Auth off; [`Error::AuthFailed`].
    pub fn can_authenticate(&self, name: &str) -> Result<()> {
        match self.password_hash(name) {
            Ok(_) => Ok(()),
            Err(Error::NoPasswordUser) => Err(Error::AuthFailed),
            Err(e) => Err(e),
        }
    }

    // --- internals ---

    fn commit(&mut self, batch: &mut WriteBatch) {
        self.revision += 1;
        batch.put(AUTH_BUCKET, REVISION_KEY, self.revision.to_be_bytes());
    }

    fn put_user(&mut self, user: User, batch: &mut WriteBatch) {
        let name = String::from_utf8_lossy(&user.name).into_owned();
        batch.put(USERS_BUCKET, name.as_bytes(), user.encode_to_vec());
        self.users.insert(name.clone(), user);
        self.refresh(&name);
    }

    fn put_role(&mut self, role: Role, batch: &mut WriteBatch) {
        let name = String::from_utf8_lossy(&role.name).into_owned();
        batch.put(ROLES_BUCKET, name.as_bytes(), role.encode_to_vec());
        self.roles.insert(name.clone(), role);
        let holders: Vec<String> =
            self.users.iter().filter(|(_, u)| u.roles.contains(&name)).map(|(n, _)| n.clone()).collect();
        for user in holders {
            self.refresh(&user);
        }
    }

    /// Rebuilds `name`'s merged permissions from their roles.
    fn refresh(&mut self, name: &str) {
        let Some(user) = self.users.get(name) else {
            self.cache.remove(name);
            return;
        };
        let mut perms = Perms::default();
        for perm in user.roles.iter().filter_map(|r| self.roles.get(r)).flat_map(|r| &r.key_permission) {
            let range = range_of(perm);
            match Type::try_from(perm.perm_type) {
                Ok(Type::Read) => perms.read.insert(&range),
                Ok(Type::Write) => perms.write.insert(&range),
                Ok(Type::Readwrite) => {
                    perms.read.insert(&range);
                    perms.write.insert(&range);
                }
                Err(_) => {}
            }
        }
        self.cache.insert(name.to_owned(), perms);
    }
}

/// etcd's rule for a permission's range: a key is needed, and a bounded range must not be
/// empty.
fn valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    range_end.is_empty() || range_end == [0] || key < range_end
}
