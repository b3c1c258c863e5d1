//! etcd 3.4's authentication model as replicated state: users, roles, key
//! permissions, the enabled flag and the auth revision.
//!
//! Why here: etcd keeps the auth store in the replicated backend and applies
//! every change through the log, so every member agrees on who may do what at
//! every applied index. Passwords arrive already hashed (the server hashes them
//! with bcrypt before proposing), so apply stays cheap and deterministic: the
//! hash is just bytes here. Tokens, clocks and password checks are the
//! server's; this module decides only "is this user allowed this range".
//!
//! The auth revision starts at 1 and rises by one with every change of users,
//! roles or permissions, and with auth disable (auth enable does not bump it, as
//! in etcd). A client command carries the auth revision its permission check saw
//! ([`AuthStamp`]); apply refuses it with [`AuthError::OldRevision`] if auth has
//! changed since, and checks its permissions again, so a permission revoked
//! between the check and the apply is never used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::types::{Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// The user who may do anything once auth is on, as in etcd.
pub const ROOT_USER: &str = "root";
/// The role that bypasses every permission check, as in etcd.
pub const ROOT_ROLE: &str = "root";
/// Auth revision of a fresh store.
pub const INITIAL_AUTH_REVISION: u64 = 1;

/// What a permission allows (etcd's `authpb.Permission.Type`, same numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PermissionType {
    /// Range reads, watches, compares.
    Read,
    /// Puts and deletes.
    Write,
    /// Both.
    ReadWrite,
}

impl PermissionType {
    fn allows(self, wanted: PermissionType) -> bool {
        self == PermissionType::ReadWrite || self == wanted
    }
}

/// A permission on a key or a range of keys, `range_end` as in etcd's
/// [`RangeRequest`] (empty: the single key; `[0]`: every key from `key` on).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// What it allows.
    pub perm_type: PermissionType,
    /// First key.
    pub key: Vec<u8>,
    /// End of the range.
    pub range_end: Vec<u8>,
}

/// A user: its bcrypt password hash and the roles granted to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The bcrypt hash; `None` for a user that cannot log in with a password
    /// (etcd's `no_password` option).
    pub password_hash: Option<Vec<u8>>,
    /// Granted roles, sorted.
    pub roles: BTreeSet<String>,
}

/// The auth state every member holds alike. Cloning is O(1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthState {
    /// Whether permissions are enforced.
    pub enabled: bool,
    /// The auth revision (see the module docs).
    pub revision: u64,
    /// Users by name.
    pub users: Arc<BTreeMap<String, User>>,
    /// Roles by name, each with its permissions sorted.
    pub roles: Arc<BTreeMap<String, Vec<Permission>>>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: INITIAL_AUTH_REVISION,
            users: Arc::default(),
            roles: Arc::default(),
        }
    }
}

/// The permission check a client command passed at the member that proposed
/// it: who sent it (empty when auth was off or no token came) and the auth
/// revision the check saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthStamp {
    /// The user name; empty for none.
    pub user: String,
    /// Auth revision of the check.
    pub revision: u64,
}

/// A change or a query of the auth state (etcd's Auth service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOp {
    /// Turn permission checks on; needs user root with role root.
    Enable,
    /// Turn them off.
    Disable,
    /// Whether auth is on, and its revision.
    Status,
    /// Add a user.
    UserAdd {
        /// Its name.
        name: String,
        /// The bcrypt hash of its password; `None`: no password.
        password_hash: Option<Vec<u8>>,
    },
    /// A user's roles.
    UserGet {
        /// The name.
        name: String,
    },
    /// Every user name.
    UserList,
    /// Delete a user.
    UserDelete {
        /// The name.
        name: String,
    },
    /// Set a user's password hash.
    UserChangePassword {
        /// The name.
        name: String,
        /// The new bcrypt hash.
        password_hash: Option<Vec<u8>>,
    },
    /// Grant a role to a user.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Revoke a role from a user.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Add a role.
    RoleAdd {
        /// Its name.
        name: String,
    },
    /// A role's permissions.
    RoleGet {
        /// The name.
        name: String,
    },
    /// Every role name.
    RoleList,
    /// Delete a role (and revoke it from every user).
    RoleDelete {
        /// The name.
        name: String,
    },
    /// Grant a permission to a role (replacing the type of one on the same range).
    RoleGrantPermission {
        /// The role.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// Revoke a role's permission on exactly this range.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// First key of the permission.
        key: Vec<u8>,
        /// Its range end.
        range_end: Vec<u8>,
    },
    /// Assigns a simple token to a user whose password the proposing member checked
    /// (etcd's `InternalAuthenticateRequest`): every member records the token when it
    /// applies this, so the token is valid on every member. The token is etcd's
    /// `prefix.index`: the proposer draws the random prefix, which travels in the entry,
    /// and the index is the entry's own, so apply takes no clock and no randomness.
    /// Refused with [`AuthError::OldRevision`] if auth changed since the check, and with
    /// [`AuthError::AuthFailed`] if the password hash is no longer the user's.
    Authenticate {
        /// The user.
        name: String,
        /// The password hash the proposer checked the password against.
        password_hash: Vec<u8>,
        /// The random part of the token (before `.index`).
        token_prefix: String,
    },
}

/// What an [`AuthOp`] answered; the fields its etcd response has are set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthResponse {
    /// Current store (kv) revision, for the response header.
    pub revision: u64,
    /// Auth revision after the command.
    pub auth_revision: u64,
    /// Whether auth is on after the command.
    pub enabled: bool,
    /// UserGet's roles, RoleList's roles.
    pub roles: Vec<String>,
    /// UserList's users.
    pub users: Vec<String>,
    /// RoleGet's permissions.
    pub permissions: Vec<Permission>,
}

/// etcd's auth errors (its `auth.Err*`); the message is etcd's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No user name (no token) where one is needed.
    UserEmpty,
    /// UserAdd of an existing name.
    UserAlreadyExists,
    /// No such user.
    UserNotFound,
    /// RoleAdd of an existing name.
    RoleAlreadyExists,
    /// No such role.
    RoleNotFound,
    /// RoleAdd with an empty name.
    RoleEmpty,
    /// Wrong user or password.
    AuthFailed,
    /// The user may not do this.
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have.
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    PermissionNotGranted,
    /// An auth-only call while auth is off.
    NotEnabled,
    /// The token is unknown or expired.
    InvalidToken,
    /// Deleting root, its role, or revoking root's root role while auth is on.
    InvalidAuthManagement,
    /// AuthEnable without a root user.
    RootUserNotExist,
    /// AuthEnable while root lacks the root role.
    RootRoleNotExist,
    /// Auth changed between the permission check and the apply: check again.
    OldRevision,
}

impl AuthError {
    /// etcd's message for the error.
    pub fn message(self) -> &'static str {
        match self {
            AuthError::UserEmpty => "etcdserver: user name is empty",
            AuthError::UserAlreadyExists => "etcdserver: user name already exists",
            AuthError::UserNotFound => "etcdserver: user name not found",
            AuthError::RoleAlreadyExists => "etcdserver: role name already exists",
            AuthError::RoleNotFound => "etcdserver: role name not found",
            AuthError::RoleEmpty => "etcdserver: role name is empty",
            AuthError::AuthFailed => {
                "etcdserver: authentication failed, invalid user ID or password"
            }
            AuthError::PermissionDenied => "etcdserver: permission denied",
            AuthError::RoleNotGranted => "etcdserver: role is not granted to the user",
            AuthError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            AuthError::NotEnabled => "etcdserver: authentication is not enabled",
            AuthError::InvalidToken => "etcdserver: invalid auth token",
            AuthError::InvalidAuthManagement => "etcdserver: invalid auth management",
            AuthError::RootUserNotExist => "etcdserver: root user does not exist",
            AuthError::RootRoleNotExist => "etcdserver: root user does not have root role",
            AuthError::OldRevision => "etcdserver: revision of auth store is old",
        }
    }

    /// All errors, in codec tag order (tag = position + 1).
    pub(crate) const ALL: [AuthError; 16] = [
        AuthError::UserEmpty,
        AuthError::UserAlreadyExists,
        AuthError::UserNotFound,
        AuthError::RoleAlreadyExists,
        AuthError::RoleNotFound,
        AuthError::RoleEmpty,
        AuthError::AuthFailed,
        AuthError::PermissionDenied,
        AuthError::RoleNotGranted,
        AuthError::PermissionNotGranted,
        AuthError::NotEnabled,
        AuthError::InvalidToken,
        AuthError::InvalidAuthManagement,
        AuthError::RootUserNotExist,
        AuthError::RootRoleNotExist,
        AuthError::OldRevision,
    ];
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

type AResult<T> = Result<T, AuthError>;

impl AuthState {
    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT_ROLE))
    }

    /// etcd's admin check: passes while auth is off, else needs a user with the
    /// root role.
    pub fn check_admin(&self, stamp: &AuthStamp) -> AResult<()> {
        if !self.enabled {
            return Ok(());
        }
        if stamp.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if !self.users.contains_key(&stamp.user) {
            return Err(AuthError::UserNotFound);
        }
        if !self.is_root(&stamp.user) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: may `stamp`'s user do `wanted` on `key`..`range_end`?
    /// Passes while auth is off; refuses a stamp older than the store.
    pub fn check_range(
        &self,
        stamp: &AuthStamp,
        key: &[u8],
        range_end: &[u8],
        wanted: PermissionType,
    ) -> AResult<()> {
        if !self.enabled {
            return Ok(());
        }
        if stamp.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if stamp.revision < self.revision {
            return Err(AuthError::OldRevision);
        }
        let Some(user) = self.users.get(&stamp.user) else {
            return Err(AuthError::PermissionDenied);
        };
        if user.roles.contains(ROOT_ROLE) || self.covered(user, key, range_end, wanted) {
            return Ok(());
        }
        Err(AuthError::PermissionDenied)
    }

    /// Whether the union of `user`'s permissions of the wanted type covers the
    /// requested keys.
    fn covered(&self, user: &User, key: &[u8], range_end: &[u8], wanted: PermissionType) -> bool {
        let mut spans: Vec<(Vec<u8>, Bound)> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .filter(|p| p.perm_type.allows(wanted))
            .map(|p| (p.key.clone(), end_bound(&p.key, &p.range_end)))
            .collect();
        spans.sort();
        let want_end = end_bound(key, range_end);
        // Walk the sorted spans, extending the covered prefix from `key`.
        let mut reached = Bound::Key(key.to_vec());
        for (start, end) in spans {
            if Bound::Key(start) > reached {
                break;
            }
            reached = reached.max(end);
            if reached >= want_end {
                return true;
            }
        }
        false
    }

    /// Checks every key a transaction reads (compares, ranges, `prev_kv`) and
    /// writes, in every branch and nested transaction, as etcd's
    /// `checkTxnReqsPermission`.
    pub fn check_txn(&self, stamp: &AuthStamp, txn: &TxnRequest) -> AResult<()> {
        for Compare { key, range_end, .. } in &txn.compare {
            self.check_range(stamp, key, range_end, PermissionType::Read)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(r) => self.check_read(stamp, r)?,
                RequestOp::Put(p) => self.check_put(stamp, p)?,
                RequestOp::DeleteRange(d) => self.check_delete(stamp, d)?,
                RequestOp::Txn(t) => self.check_txn(stamp, t)?,
            }
        }
        Ok(())
    }

    /// A range read needs read permission on its range.
    pub fn check_read(&self, stamp: &AuthStamp, r: &RangeRequest) -> AResult<()> {
        self.check_range(stamp, &r.key, &r.range_end, PermissionType::Read)
    }

    /// A put needs write on its key, and read too with `prev_kv`.
    pub fn check_put(&self, stamp: &AuthStamp, p: &PutRequest) -> AResult<()> {
        self.check_range(stamp, &p.key, &[], PermissionType::Write)?;
        if p.prev_kv {
            self.check_range(stamp, &p.key, &[], PermissionType::Read)?;
        }
        Ok(())
    }

    /// A delete needs write on its range, and read too with `prev_kv`.
    pub fn check_delete(&self, stamp: &AuthStamp, d: &DeleteRangeRequest) -> AResult<()> {
        self.check_range(stamp, &d.key, &d.range_end, PermissionType::Write)?;
        if d.prev_kv {
            self.check_range(stamp, &d.key, &d.range_end, PermissionType::Read)?;
        }
        Ok(())
    }

    /// Applies an auth command run by `stamp`'s user (`None`: by the member
    /// itself, trusted). Changes nothing on error.
    pub(crate) fn apply(&mut self, stamp: Option<&AuthStamp>, op: &AuthOp) -> AResult<AuthAnswer> {
        if let Some(stamp) = stamp {
            self.check_caller(stamp, op)?;
        }
        let mut next = self.clone();
        let answer = next.run(op)?;
        if answer == AuthAnswer::Changed {
            next.revision += 1;
        }
        *self = next;
        Ok(answer)
    }

    /// etcd needs admin for every auth call but UserGet of oneself and RoleGet
    /// of one's own role.
    fn check_caller(&self, stamp: &AuthStamp, op: &AuthOp) -> AResult<()> {
        if let AuthOp::Authenticate { .. } = op {
            // Anyone may log in; the password was checked against this revision.
            if self.enabled && stamp.revision < self.revision {
                return Err(AuthError::OldRevision);
            }
            return Ok(());
        }
        let admin = self.check_admin(stamp);
        let own = match op {
            AuthOp::UserGet { name } => *name == stamp.user,
            AuthOp::RoleGet { name } => {
                self.users.get(&stamp.user).is_some_and(|u| u.roles.contains(name))
            }
            _ => false,
        };
        if own && self.enabled {
            return Ok(());
        }
        admin
    }

    fn run(&mut self, op: &AuthOp) -> AResult<AuthAnswer> {
        use AuthAnswer::{Changed, Unchanged};
        let root_locked = self.enabled;
        match op {
            AuthOp::Enable => {
                if self.enabled {
                    return Ok(Unchanged);
                }
                let root = self.users.get(ROOT_USER).ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT_ROLE) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                Ok(Unchanged)
            }
            AuthOp::Disable => {
                if !self.enabled {
                    return Ok(Unchanged);
                }
                self.enabled = false;
                Ok(Changed)
            }
            AuthOp::Status | AuthOp::UserList | AuthOp::RoleList => Ok(Unchanged),
            AuthOp::UserGet { name } => {
                let user = self.users.get(name).ok_or(AuthError::UserNotFound)?;
                Ok(AuthAnswer::Roles(user.roles.iter().cloned().collect()))
            }
            AuthOp::RoleGet { name } => {
                let perms = self.roles.get(name).ok_or(AuthError::RoleNotFound)?;
                Ok(AuthAnswer::Permissions(perms.clone()))
            }
            AuthOp::UserAdd { name, password_hash } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExists);
                }
                let user = User { password_hash: password_hash.clone(), roles: BTreeSet::new() };
                Arc::make_mut(&mut self.users).insert(name.clone(), user);
                Ok(Changed)
            }
            AuthOp::UserDelete { name } => {
                if root_locked && name == ROOT_USER {
                    return Err(AuthError::InvalidAuthManagement);
                }
                Arc::make_mut(&mut self.users).remove(name).ok_or(AuthError::UserNotFound)?;
                Ok(Changed)
            }
            AuthOp::UserChangePassword { name, password_hash } => {
                let user = self.user_mut(name)?;
                user.password_hash = password_hash.clone();
                Ok(Changed)
            }
            AuthOp::UserGrantRole { user, role } => {
                self.users.get(user).ok_or(AuthError::UserNotFound)?;
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let inserted = self.user_mut(user)?.roles.insert(role.clone());
                Ok(if inserted { Changed } else { Unchanged })
            }
            AuthOp::UserRevokeRole { user, role } => {
                if root_locked && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthManagement);
                }
                if !self.user_mut(user)?.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
                Ok(Changed)
            }
            AuthOp::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExists);
                }
                Arc::make_mut(&mut self.roles).insert(name.clone(), Vec::new());
                Ok(Changed)
            }
            AuthOp::RoleDelete { name } => {
                if root_locked && name == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthManagement);
                }
                Arc::make_mut(&mut self.roles).remove(name).ok_or(AuthError::RoleNotFound)?;
                for user in Arc::make_mut(&mut self.users).values_mut() {
                    user.roles.remove(name);
                }
                Ok(Changed)
            }
            AuthOp::RoleGrantPermission { role, permission } => {
                let perms = self.role_mut(role)?;
                let same =
                    |p: &Permission| p.key == permission.key && p.range_end == permission.range_end;
                match perms.iter_mut().find(|p| same(p)) {
                    Some(p) => p.perm_type = permission.perm_type,
                    None => {
                        perms.push(permission.clone());
                        perms.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    }
                }
                Ok(Changed)
            }
            AuthOp::RoleRevokePermission { role, key, range_end } => {
                let perms = self.role_mut(role)?;
                let at = perms
                    .iter()
                    .position(|p| p.key == *key && p.range_end == *range_end)
                    .ok_or(AuthError::PermissionNotGranted)?;
                perms.remove(at);
                Ok(Changed)
            }
            AuthOp::Authenticate { name, password_hash, token_prefix } => {
                if !self.enabled {
                    return Err(AuthError::NotEnabled);
                }
                let current = self.users.get(name).and_then(|u| u.password_hash.as_ref());
                if token_prefix.is_empty() || current != Some(password_hash) {
                    return Err(AuthError::AuthFailed);
                }
                Ok(Unchanged)
            }
        }
    }

    fn user_mut(&mut self, name: &str) -> AResult<&mut User> {
        Arc::make_mut(&mut self.users).get_mut(name).ok_or(AuthError::UserNotFound)
    }

    fn role_mut(&mut self, name: &str) -> AResult<&mut Vec<Permission>> {
        Arc::make_mut(&mut self.roles).get_mut(name).ok_or(AuthError::RoleNotFound)
    }

    /// The answer to `op` after it ran, with the query results of `answer`.
    pub(crate) fn response(&self, revision: u64, op: &AuthOp, answer: AuthAnswer) -> AuthResponse {
        let mut r = AuthResponse {
            revision,
            auth_revision: self.revision,
            enabled: self.enabled,
            ..AuthResponse::default()
        };
        match (op, answer) {
            (AuthOp::UserList, _) => r.users = self.users.keys().cloned().collect(),
            (AuthOp::RoleList, _) => r.roles = self.roles.keys().cloned().collect(),
            (_, AuthAnswer::Roles(roles)) => r.roles = roles,
            (_, AuthAnswer::Permissions(p)) => r.permissions = p,
            _ => {}
        }
        r
    }
}

/// What running an auth command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthAnswer {
    /// The state changed: the auth revision rises.
    Changed,
    /// Nothing changed (a query, or a change that was already so).
    Unchanged,
    /// UserGet's roles.
    Roles(Vec<String>),
    /// RoleGet's permissions.
    Permissions(Vec<Permission>),
}

/// The end of a key range as an ordered bound: a key, or past every key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bound {
    Key(Vec<u8>),
    Infinite,
}

/// etcd's range end as an exclusive bound: empty means the single `key`
/// (so `key` + `\0`), `[0]` means no end.
fn end_bound(key: &[u8], range_end: &[u8]) -> Bound {
    match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            Bound::Key(next)
        }
        [0] => Bound::Infinite,
        end => Bound::Key(end.to_vec()),
    }
}
