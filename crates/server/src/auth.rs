//! etcd's `Auth` service and the permission checks at the edge.
//!
//! Users, roles and permissions are replicated kv state ([`kv::auth`]); this module is
//! the member-local half, as etcd splits it:
//!
//! * **Passwords** are hashed with bcrypt (`--bcrypt-cost`) here, before a UserAdd or
//!   ChangePassword is proposed, so apply never pays for it; Authenticate checks a
//!   password against the replicated hash here too. Both run off the async runtime
//!   (`spawn_blocking`), at most [`HASHING_MAX`] at a time; more are refused with
//!   etcd's "too many requests".
//! * **Tokens** are etcd's *simple* tokens, `prefix.index`, assigned through the log as
//!   etcd 3.4 does: Authenticate checks the password here, then proposes the
//!   assignment ([`AuthOp::Authenticate`]: the user, the random prefix, the password
//!   hash checked, stamped with the auth revision of the check); every member records
//!   the token when it applies the entry ([`crate::tokens`]), so a token is valid on
//!   every member, for `--auth-token-ttl` after its last use there. Apply refuses the
//!   assignment if auth changed since the check ("revision of auth store is old"), and
//!   it is checked and proposed again. A token dies with its user's password: it is
//!   refused once the user is deleted or its password hash changed.
//! * **Who is calling** ([`Api::caller`]): the `token` metadata (etcd's key) while
//!   auth is on; without a token, the user a TLS layer found in the client
//!   certificate ([`ConnectionUser`], etcd's CN rule), else nobody. The caller and
//!   the auth revision of the check travel in the command ([`AuthStamp`]); apply
//!   checks again and answers "revision of auth store is old" if auth changed in
//!   between, and the write is then checked and proposed again (a bounded number of
//!   times), as etcd's server does.

use std::sync::Arc;
use std::time::Duration;

use crate::etcd::{command, into_result, request_error, Api, TOO_MANY_REQUESTS};
use crate::tokens::{split_token, TokenKeeper};
use kv::{AuthError, AuthOp, AuthStamp, AuthState, KvError, Op, PermissionType};
use proto::{authpb, etcdserverpb as pb};
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

/// The gRPC metadata key of the auth token (etcd's `rpctypes.TokenFieldNameGRPC`).
pub const TOKEN_METADATA: &str = "token";
/// etcd's default `--auth-token-ttl`, in seconds.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 300;
/// etcd's default `--bcrypt-cost`.
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// bcrypt hashings and checks running or queued at once; more are refused.
pub const HASHING_MAX: usize = 8;
/// How often a write refused for an old auth revision is checked and proposed again.
const STALE_AUTH_RETRIES_MAX: usize = 5;
/// Random letters in a token's prefix, as etcd's simple tokens.
const TOKEN_LETTERS: usize = 16;

/// The member-local auth settings (etcd's flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// `--auth-token-ttl`: a token unused for this long is refused.
    pub token_ttl: Duration,
    /// `--bcrypt-cost`: the bcrypt cost of new password hashes (4..=31).
    pub bcrypt_cost: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl: Duration::from_secs(DEFAULT_TOKEN_TTL_SECS),
            bcrypt_cost: DEFAULT_BCRYPT_COST,
        }
    }
}

/// The user a connection authenticated as without a token: a TLS layer that checked
/// a client certificate under `--client-cert-auth` inserts its common name into the
/// request's extensions, and a request without a token then runs as that user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionUser(pub String);

/// This member's tokens and its bound on bcrypt work.
pub struct AuthGate {
    config: AuthConfig,
    tokens: Arc<TokenKeeper>,
    hashing: Arc<Semaphore>,
}

impl AuthGate {
    /// A gate over `tokens`, the table the member's applier fills.
    pub fn new(config: AuthConfig, tokens: Arc<TokenKeeper>) -> Self {
        AuthGate { config, tokens, hashing: Arc::new(Semaphore::new(HASHING_MAX)) }
    }

    /// A new random token prefix (etcd's simple token: letters; the entry's index
    /// completes it).
    fn new_prefix() -> Result<String, Status> {
        let mut letters = [0u8; TOKEN_LETTERS];
        getrandom::fill(&mut letters)
            .map_err(|e| Status::internal(format!("no randomness for a token: {e}")))?;
        Ok(letters.iter().map(|b| char::from(b'a' + b % 26)).collect())
    }

    /// Runs bcrypt work off the async runtime, within [`HASHING_MAX`].
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        let permit = self
            .hashing
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted(TOO_MANY_REQUESTS))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Status::internal(format!("password hashing failed: {e}")))
    }

    /// The bcrypt hash of `password` at the configured cost.
    async fn hash(&self, password: String) -> Result<Vec<u8>, Status> {
        let cost = self.config.bcrypt_cost;
        let hashed = self.hashing(move || bcrypt::hash(password, cost)).await?;
        hashed
            .map(String::into_bytes)
            .map_err(|e| Status::internal(format!("password hashing failed: {e}")))
    }
}

/// etcd's gRPC status for an auth error.
pub fn auth_status(e: AuthError) -> Status {
    use AuthError as E;
    let msg = e.message();
    match e {
        E::PermissionDenied => Status::permission_denied(msg),
        E::InvalidToken => Status::unauthenticated(msg),
        E::UserEmpty | E::RoleEmpty | E::AuthFailed | E::InvalidAuthManagement | E::OldRevision => {
            Status::invalid_argument(msg)
        }
        E::UserAlreadyExists
        | E::UserNotFound
        | E::RoleAlreadyExists
        | E::RoleNotFound
        | E::RoleNotGranted
        | E::PermissionNotGranted
        | E::NotEnabled
        | E::RootUserNotExist
        | E::RootRoleNotExist => Status::failed_precondition(msg),
    }
}

/// A permission check on the auth state for the caller's stamp.
pub(crate) type Check<'a> = &'a (dyn Fn(&AuthState, &AuthStamp) -> Result<(), AuthError> + Sync);

impl Api {
    /// This member's applied auth state.
    pub(crate) async fn auth_state(&self) -> Result<AuthState, Status> {
        let state =
            self.node.state().await.ok_or_else(|| Status::unavailable("member stopping"))?;
        Ok(state.auth().clone())
    }

    /// Who sent a request (etcd's `AuthInfoFromCtx`), stamped with the auth revision of
    /// the state it was resolved in. While auth is off nobody is resolved (tokens are
    /// ignored, as etcd ignores them).
    pub(crate) async fn caller(
        &self,
        metadata: &MetadataMap,
        connection: Option<&ConnectionUser>,
    ) -> Result<(AuthStamp, AuthState), Status> {
        let mut state = self.auth_state().await?;
        if !state.enabled {
            let stamp = AuthStamp { user: String::new(), revision: state.revision };
            return Ok((stamp, state));
        }
        let user = match metadata.get(TOKEN_METADATA) {
            Some(token) => {
                let token = token.to_str().map_err(|_| auth_status(AuthError::InvalidToken))?;
                // A token assigned at an index this member has not applied yet (it was
                // issued by a member ahead of this one) is waited for, as etcd's
                // `isValidSimpleToken` does, within a request timeout.
                let index = split_token(token).map_or(0, |(_, index)| index);
                if index > self.node.applied_index() {
                    let deadline = tokio::time::Instant::now() + self.request_timeout;
                    self.node.wait_applied(index, deadline).await;
                    state = self.auth_state().await?;
                }
                self.auth.tokens.user_of(token, &state).map_err(auth_status)?
            }
            None => connection.map(|c| c.0.clone()).unwrap_or_default(),
        };
        Ok((AuthStamp { user, revision: state.revision }, state))
    }

    /// [`Api::caller`] of a request.
    pub(crate) async fn caller_of<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(AuthStamp, AuthState), Status> {
        self.caller(req.metadata(), req.extensions().get::<ConnectionUser>()).await
    }

    /// etcd's admin check for maintenance calls (defragment, snapshot, hash, move
    /// leader): passes while auth is off, else needs a user with the root role. etcd
    /// 3.4 returns these refusals unconverted (gRPC `Unknown`, "auth: ..."), and so do
    /// we.
    pub(crate) async fn require_admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let raw = |e: AuthError| Status::unknown(e.message().replacen("etcdserver: ", "auth: ", 1));
        let (stamp, state) = match self.caller_of(req).await {
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                return Err(raw(AuthError::InvalidToken))
            }
            other => other?,
        };
        state.check_admin(&stamp).map_err(raw)
    }

    /// Checks a read at the edge: the read runs once the check passed on an auth state
    /// that has not changed by the time the read is answered (etcd's `doSerialize`).
    pub(crate) async fn checked_read<T, R, F>(
        &self,
        req: &Request<T>,
        check: Check<'_>,
        read: impl Fn() -> F,
    ) -> Result<R, Status>
    where
        F: std::future::Future<Output = Result<R, Status>>,
    {
        for _ in 0..STALE_AUTH_RETRIES_MAX {
            let (stamp, state) = self.caller_of(req).await?;
            check(&state, &stamp).map_err(auth_status)?;
            let answer = read().await?;
            if !state.enabled || self.auth_state().await?.revision == state.revision {
                return Ok(answer);
            }
        }
        Err(auth_status(AuthError::OldRevision))
    }

    /// Runs a client write under its caller's permissions: checked here, stamped, and
    /// checked again at apply; refused at apply for an old auth revision, it is
    /// checked and proposed again.
    pub(crate) async fn checked_write<T>(
        &self,
        req: &Request<T>,
        op: Op,
        check: Check<'_>,
    ) -> Result<kv::Response, Status> {
        for _ in 0..STALE_AUTH_RETRIES_MAX {
            let (stamp, state) = self.caller_of(req).await?;
            check(&state, &stamp).map_err(auth_status)?;
            let cmd = command(req, op.clone())?.stamped(stamp);
            match self.write_reply(cmd).await {
                Ok(kv::Response::Error(KvError::Auth(AuthError::OldRevision))) => continue,
                reply => return into_result(reply),
            }
        }
        Err(auth_status(AuthError::OldRevision))
    }

    /// Runs an auth command as the caller (apply checks it may).
    async fn auth_op<T>(&self, req: &Request<T>, op: AuthOp) -> Result<kv::AuthResponse, Status> {
        let no_check: Check<'_> = &|_, _| Ok(());
        match self.checked_write(req, Op::Auth(op), no_check).await? {
            kv::Response::Auth(a) => Ok(a),
            other => Err(Status::internal(format!("unexpected state machine response {other:?}"))),
        }
    }

    /// The password hash a UserAdd or ChangePassword proposes: the client's own
    /// `hashedPassword` if it sent one, else bcrypt of the password.
    async fn password_hash(&self, password: &str, hashed: &str) -> Result<Vec<u8>, Status> {
        if !hashed.is_empty() {
            return Ok(hashed.as_bytes().to_vec());
        }
        self.auth.hash(password.to_string()).await
    }
}

fn pb_permission(p: &kv::Permission) -> authpb::Permission {
    let perm_type = match p.perm_type {
        PermissionType::Read => authpb::permission::Type::Read,
        PermissionType::Write => authpb::permission::Type::Write,
        PermissionType::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: perm_type as i32,
        key: p.key.clone().into(),
        range_end: p.range_end.clone().into(),
    }
}

fn kv_permission(p: Option<&authpb::Permission>) -> Result<kv::Permission, Status> {
    let p = p.ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
    let perm_type = match authpb::permission::Type::try_from(p.perm_type) {
        Ok(authpb::permission::Type::Read) => PermissionType::Read,
        Ok(authpb::permission::Type::Write) => PermissionType::Write,
        Ok(authpb::permission::Type::Readwrite) => PermissionType::ReadWrite,
        Err(_) => {
            let what = format!(
                "etcdserver: unknown permission type {}; use READ, WRITE or READWRITE",
                p.perm_type
            );
            return Err(Status::invalid_argument(what));
        }
    };
    Ok(kv::Permission { perm_type, key: p.key.to_vec(), range_end: p.range_end.to_vec() })
}

#[tonic::async_trait]
impl pb::auth_server::Auth for Api {
    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let a = self.auth_op(&request, AuthOp::Status).await?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(a.revision),
            enabled: a.enabled,
            auth_revision: a.auth_revision,
        }))
    }

    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let _r = request.get_ref();
        let a = self.auth_op(&request, AuthOp::Enable).await?;
        Ok(Response::new(pb::AuthEnableResponse { header: self.header(a.revision) }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let _r = request.get_ref();
        let a = self.auth_op(&request, AuthOp::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse { header: self.header(a.revision) }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let r = request.get_ref();
        let a = self.auth_op(&request, AuthOp::UserDelete { name: r.name.clone() }).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header: self.header(a.revision) }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = request.get_ref();
        let a = self
            .auth_op(&request, AuthOp::UserGrantRole { user: r.user.clone(), role: r.role.clone() })
            .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header: self.header(a.revision) }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = request.get_ref();
        let a = self
            .auth_op(
                &request,
                AuthOp::UserRevokeRole { user: r.name.clone(), role: r.role.clone() },
            )
            .await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header: self.header(a.revision) }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let r = request.get_ref();
        let a = self.auth_op(&request, AuthOp::RoleAdd { name: r.name.clone() }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header: self.header(a.revision) }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let r = request.get_ref();
        let a = self.auth_op(&request, AuthOp::RoleDelete { name: r.role.clone() }).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header: self.header(a.revision) }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = request.get_ref();
        let a = self
            .auth_op(
                &request,
                AuthOp::RoleGrantPermission {
                    role: r.name.clone(),
                    permission: kv_permission(r.perm.as_ref())?,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse { header: self.header(a.revision) }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = request.get_ref();
        let a = self
            .auth_op(
                &request,
                AuthOp::RoleRevokePermission {
                    role: r.role.clone(),
                    key: r.key.to_vec(),
                    range_end: r.range_end.to_vec(),
                },
            )
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse { header: self.header(a.revision) }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let r = request.get_ref();
        if r.name.is_empty() {
            return Err(auth_status(AuthError::UserEmpty));
        }
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let password_hash = if no_password {
            None
        } else {
            Some(self.password_hash(&r.password, &r.hashed_password).await?)
        };
        let op = AuthOp::UserAdd { name: r.name.clone(), password_hash };
        let a = self.auth_op(&request, op).await?;
        Ok(Response::new(pb::AuthUserAddResponse { header: self.header(a.revision) }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let r = request.get_ref();
        let password_hash = Some(self.password_hash(&r.password, &r.hashed_password).await?);
        let op = AuthOp::UserChangePassword { name: r.name.clone(), password_hash };
        let a = self.auth_op(&request, op).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header: self.header(a.revision) }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let op = AuthOp::UserGet { name: request.get_ref().name.clone() };
        let a = self.auth_op(&request, op).await?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header(a.revision),
            roles: a.roles,
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let a = self.auth_op(&request, AuthOp::UserList).await?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header(a.revision),
            users: a.users,
        }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let op = AuthOp::RoleGet { name: request.get_ref().role.clone() };
        let a = self.auth_op(&request, op).await?;
        let perm = a.permissions.iter().map(pb_permission).collect();
        Ok(Response::new(pb::AuthRoleGetResponse { header: self.header(a.revision), perm }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let a = self.auth_op(&request, AuthOp::RoleList).await?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header(a.revision),
            roles: a.roles,
        }))
    }

    /// etcd's CheckPassword, then a new simple token assigned through the log (see
    /// the module docs). Wrong user, wrong password and a user without a password all
    /// answer the same "authentication failed".
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let r = request.into_inner();
        // As etcd's Authenticate (`linearizableReadNotify` first): the auth state checked
        // below is at least as new as every write acknowledged before this call, so a
        // client that enabled auth through one member can log in through another at once.
        self.read(node::ReadQuery::Get(Vec::new()), false).await?;
        for _ in 0..STALE_AUTH_RETRIES_MAX {
            let state = self.auth_state().await?;
            if !state.enabled {
                return Err(auth_status(AuthError::NotEnabled));
            }
            let hash = state.users.get(&r.name).and_then(|u| u.password_hash.clone());
            let Some(hash) = hash else { return Err(auth_status(AuthError::AuthFailed)) };
            let (password, stored) = (r.password.clone(), hash.clone());
            let matches = self
                .auth
                .hashing(move || {
                    std::str::from_utf8(&stored)
                        .is_ok_and(|h| bcrypt::verify(password, h).unwrap_or(false))
                })
                .await?;
            if !matches {
                return Err(auth_status(AuthError::AuthFailed));
            }
            if !self.auth.tokens.has_room() {
                return Err(Status::resource_exhausted(TOO_MANY_REQUESTS));
            }
            let token_prefix = AuthGate::new_prefix()?;
            let op = AuthOp::Authenticate {
                name: r.name.clone(),
                password_hash: hash,
                token_prefix: token_prefix.clone(),
            };
            // Nobody is the caller yet; the stamp carries the revision of the check.
            let stamp = AuthStamp { user: String::new(), revision: state.revision };
            let a = match self.write_reply(kv::Command::new(Op::Auth(op)).stamped(stamp)).await {
                Ok(kv::Response::Error(KvError::Auth(AuthError::OldRevision))) => continue,
                Ok(kv::Response::Auth(a)) => a,
                other => {
                    into_result(other)?;
                    return Err(Status::internal("unexpected state machine response"));
                }
            };
            // Answered once this member applied it (or past the request deadline, when
            // the table may not have it yet: the outcome is then unknown here).
            let token = self
                .auth
                .tokens
                .token_of_prefix(&token_prefix)
                .ok_or_else(|| request_error(&node::RequestError::Timeout))?;
            return Ok(Response::new(pb::AuthenticateResponse {
                header: self.header(a.revision),
                token,
            }));
        }
        Err(auth_status(AuthError::OldRevision))
    }
}

/// Makes a watch's cancel reason as etcd writes it: the whole gRPC status text.
pub(crate) fn cancel_reason(e: AuthError) -> String {
    let s = auth_status(e);
    let code = match s.code() {
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::Unauthenticated => "Unauthenticated",
        tonic::Code::InvalidArgument => "InvalidArgument",
        _ => "FailedPrecondition",
    };
    format!("rpc error: code = {code} desc = {}", s.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(ttl: Duration) -> AuthGate {
        let tokens = Arc::new(TokenKeeper::new(ttl, 0));
        AuthGate::new(AuthConfig { token_ttl: ttl, bcrypt_cost: 4 }, tokens)
    }

    #[test]
    fn token_prefixes_are_letters_and_distinct() {
        let (a, b) = (AuthGate::new_prefix().unwrap(), AuthGate::new_prefix().unwrap());
        assert_ne!(a, b);
        assert!(a.len() == TOKEN_LETTERS && a.bytes().all(|c| c.is_ascii_lowercase()), "{a}");
    }

    #[tokio::test]
    async fn a_hash_made_here_verifies_and_a_wrong_password_does_not() {
        let g = gate(Duration::from_secs(60));
        let hash = g.hash("secret".to_string()).await.unwrap();
        let hash = String::from_utf8(hash).unwrap();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert!(bcrypt::verify("secret", &hash).unwrap());
        assert!(!bcrypt::verify("Secret", &hash).unwrap());
    }

    #[test]
    fn auth_errors_have_etcds_codes() {
        assert_eq!(auth_status(AuthError::PermissionDenied).code(), tonic::Code::PermissionDenied);
        assert_eq!(auth_status(AuthError::InvalidToken).code(), tonic::Code::Unauthenticated);
        assert_eq!(auth_status(AuthError::UserEmpty).code(), tonic::Code::InvalidArgument);
        assert_eq!(auth_status(AuthError::NotEnabled).code(), tonic::Code::FailedPrecondition);
        let reason = cancel_reason(AuthError::PermissionDenied);
        assert_eq!(
            reason,
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        );
    }
}
