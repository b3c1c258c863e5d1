//! This member's simple tokens, assigned through the log as etcd 3.4 does.
//!
//! The member that receives an Authenticate checks the password, then proposes
//! [`kv::AuthOp::Authenticate`] with a random prefix. Every member that applies the
//! entry records the token `prefix.index` (the entry's index, etcd's format) here, so a
//! token issued by one member is valid on all of them. What is kept here is member-local
//! and not replicated: the expiry (`--auth-token-ttl` after the last use, on this
//! member's clock) and the table itself.
//!
//! Across restarts and snapshots, as etcd 3.4's simple tokens (kept in memory by its
//! `tokenSimple`):
//! * a restarted member has no tokens: the assignments it applies again from its log at
//!   start (`replayed_through`, the last index of its log when it started) are not
//!   recorded, so a token that expired before the restart does not come back;
//! * installing a snapshot keeps the tokens (etcd's `authStore.Recover` leaves its
//!   token provider alone), and every use checks the user's password hash again, so a
//!   user deleted or a password changed in the entries the snapshot covered still kills
//!   them;
//! * an applied AuthDisable drops every token (etcd's `tokenProvider.disable`).
//!
//! A token whose index this member has not applied yet is waited for by the caller
//! (etcd's `isValidSimpleToken` waits for the index), so a client may use a token on a
//! member that lags the one it authenticated on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kv::{AuthError, AuthOp, AuthState, Command, Op, Response};
use node::Applied;

/// Live tokens kept per member. At the edge an Authenticate is refused with "too many
/// requests" while the table is full of live tokens; at apply (which cannot refuse) a
/// full table drops its expired tokens and then the one closest to expiry.
pub const TOKENS_MAX: usize = 100_000;

/// A recorded token, keyed by its prefix.
#[derive(Clone, Debug)]
struct Kept {
    /// The index of the entry that assigned it (the token's suffix).
    index: u64,
    user: String,
    /// The password hash the password was checked against: a changed password (or a
    /// deleted user) kills the token.
    password_hash: Vec<u8>,
    expires: Instant,
}

/// This member's token table (see the module docs).
#[derive(Debug)]
pub struct TokenKeeper {
    ttl: Duration,
    replayed_through: u64,
    tokens: Mutex<HashMap<String, Kept>>,
}

/// A token's prefix and index (`prefix.index`), if it has that form.
pub(crate) fn split_token(token: &str) -> Option<(&str, u64)> {
    let (prefix, index) = token.rsplit_once('.')?;
    Some((prefix, index.parse().ok()?))
}

impl TokenKeeper {
    /// An empty table whose tokens live for `ttl` after their last use; assignments at
    /// or below `replayed_through` (entries applied again at start) are not recorded.
    pub fn new(ttl: Duration, replayed_through: u64) -> Self {
        TokenKeeper { ttl, replayed_through, tokens: Mutex::new(HashMap::new()) }
    }

    /// Records the token assignments and auth disables of an applied batch, in log
    /// order. Runs on the applier thread before the batch's applied index is published,
    /// so whoever sees the index finds the tokens.
    pub fn record(&self, applied: &Applied) {
        let now = Instant::now();
        for (entry, response) in &applied.entries {
            // Only a successful auth command answers `Auth`; the rest is not decoded.
            let Some(Response::Auth(_)) = response else { continue };
            let Ok(Command { op: Op::Auth(op), .. }) = Command::decode(&entry.data) else {
                continue;
            };
            match op {
                AuthOp::Authenticate { name, password_hash, token_prefix }
                    if entry.index > self.replayed_through =>
                {
                    self.assign(now, entry.index, name, password_hash, token_prefix);
                }
                AuthOp::Disable => self.lock().clear(),
                _ => {}
            }
        }
        if !applied.view.auth().enabled {
            self.lock().clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.tokens.lock().expect("token table lock")
    }

    fn assign(&self, now: Instant, index: u64, user: String, hash: Vec<u8>, prefix: String) {
        let mut tokens = self.lock();
        if tokens.len() >= TOKENS_MAX && !tokens.contains_key(&prefix) {
            tokens.retain(|_, t| t.expires > now);
            if tokens.len() >= TOKENS_MAX {
                let soonest = tokens.iter().min_by_key(|(_, t)| t.expires).map(|(p, _)| p.clone());
                if let Some(p) = soonest {
                    tokens.remove(&p);
                }
            }
        }
        let kept = Kept { index, user, password_hash: hash, expires: now + self.ttl };
        tokens.insert(prefix, kept);
    }

    /// Whether a new token would find room without dropping a live one.
    pub(crate) fn has_room(&self) -> bool {
        let now = Instant::now();
        let mut tokens = self.lock();
        if tokens.len() >= TOKENS_MAX {
            tokens.retain(|_, t| t.expires > now);
        }
        tokens.len() < TOKENS_MAX
    }

    /// The whole token assigned under `prefix`, once this member applied it.
    pub(crate) fn token_of_prefix(&self, prefix: &str) -> Option<String> {
        self.lock().get(prefix).map(|t| format!("{prefix}.{}", t.index))
    }

    /// The user of a live `token`, renewing its TTL (etcd's simple tokens live for the
    /// TTL after their last use). `None`: this member has no such token (it may not
    /// have applied it yet: see [`split_token`]).
    pub(crate) fn user_of(&self, token: &str, state: &AuthState) -> Result<String, AuthError> {
        let Some((prefix, index)) = split_token(token) else {
            return Err(AuthError::InvalidToken);
        };
        let now = Instant::now();
        let mut tokens = self.lock();
        let Some(kept) = tokens.get_mut(prefix) else { return Err(AuthError::InvalidToken) };
        if kept.index != index {
            return Err(AuthError::InvalidToken);
        }
        let current = state.users.get(&kept.user).and_then(|u| u.password_hash.as_ref());
        if kept.expires <= now || current != Some(&kept.password_hash) {
            tokens.remove(prefix);
            return Err(AuthError::InvalidToken);
        }
        kept.expires = now + self.ttl;
        Ok(kept.user.clone())
    }

    /// Live and expired tokens held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::{AuthStamp, StateMachine};
    use std::collections::BTreeSet;
    use std::sync::Arc;

    fn state_with(user: &str, hash: &[u8]) -> AuthState {
        let u = kv::User { password_hash: Some(hash.to_vec()), roles: BTreeSet::new() };
        AuthState {
            enabled: true,
            users: Arc::new(std::collections::BTreeMap::from([(user.to_string(), u)])),
            ..AuthState::default()
        }
    }

    fn keeper(ttl: Duration) -> TokenKeeper {
        TokenKeeper::new(ttl, 0)
    }

    fn assign(k: &TokenKeeper, index: u64, user: &str, hash: &[u8], prefix: &str) {
        k.assign(Instant::now(), index, user.into(), hash.to_vec(), prefix.into());
    }

    #[test]
    fn a_token_names_its_user_until_the_password_changes_or_the_user_goes() {
        let k = keeper(Duration::from_secs(60));
        assign(&k, 7, "alice", b"h1", "abc");
        assert_eq!(k.token_of_prefix("abc").as_deref(), Some("abc.7"));
        let s = state_with("alice", b"h1");
        assert_eq!(k.user_of("abc.7", &s), Ok("alice".to_string()));
        assert_eq!(k.user_of("abc.8", &s), Err(AuthError::InvalidToken), "another index");
        assert_eq!(k.user_of("abc", &s), Err(AuthError::InvalidToken), "no index");
        assert_eq!(k.user_of("nope.7", &s), Err(AuthError::InvalidToken));
        assert_eq!(k.user_of("abc.7", &state_with("alice", b"h2")), Err(AuthError::InvalidToken));
        assign(&k, 9, "alice", b"h1", "def");
        assert_eq!(k.user_of("def.9", &state_with("bob", b"h1")), Err(AuthError::InvalidToken));
    }

    #[test]
    fn a_token_unused_for_its_ttl_is_refused() {
        let k = keeper(Duration::ZERO);
        assign(&k, 1, "alice", b"h1", "abc");
        assert_eq!(k.user_of("abc.1", &state_with("alice", b"h1")), Err(AuthError::InvalidToken));
    }

    #[test]
    fn a_full_table_drops_the_token_closest_to_expiry_and_refuses_at_the_edge() {
        let k = keeper(Duration::from_secs(60));
        for i in 0..TOKENS_MAX as u64 {
            assign(&k, i + 1, "alice", b"h", &format!("p{i}"));
        }
        assert!(!k.has_room());
        assign(&k, u64::MAX, "alice", b"h", "late");
        assert_eq!(k.len(), TOKENS_MAX);
        assert!(k.token_of_prefix("p0").is_none(), "the oldest went");
        assert!(k.token_of_prefix("late").is_some());
    }

    /// Applies `ops` on a fresh state machine and hands the batch to the keeper.
    fn apply_batch(k: &TokenKeeper, ops: &[(u64, Op)]) {
        let mut sm = StateMachine::new(kv::Config::default());
        let mut entries = Vec::new();
        for (index, op) in ops {
            let stamp = AuthStamp { user: "root".into(), revision: sm.auth().revision };
            let cmd = Command::new(op.clone()).stamped(stamp);
            let response = sm.apply_command(*index, &cmd);
            let data = cmd.encode().into();
            let entry = raft::Entry { index: *index, term: 1, kind: raft::EntryKind::Normal, data };
            entries.push((entry, Some(response)));
        }
        k.record(&Applied { installed: None, entries, view: sm });
    }

    fn setup(hash: &[u8]) -> Vec<Op> {
        let root = || "root".to_string();
        vec![
            Op::Auth(AuthOp::UserAdd { name: root(), password_hash: Some(hash.to_vec()) }),
            Op::Auth(AuthOp::UserGrantRole { user: root(), role: root() }),
            Op::Auth(AuthOp::Enable),
        ]
    }

    fn login(prefix: &str, hash: &[u8]) -> Op {
        Op::Auth(AuthOp::Authenticate {
            name: "root".into(),
            password_hash: hash.to_vec(),
            token_prefix: prefix.into(),
        })
    }

    #[test]
    fn applied_assignments_are_recorded_in_log_order_and_a_disable_drops_them() {
        let k = keeper(Duration::from_secs(60));
        let mut ops: Vec<Op> = setup(b"h");
        ops.push(login("first", b"h"));
        ops.push(login("refused", b"wrong"));
        let indexed: Vec<_> = ops.into_iter().enumerate().map(|(i, o)| (i as u64 + 1, o)).collect();
        apply_batch(&k, &indexed);
        assert_eq!(k.token_of_prefix("first").as_deref(), Some("first.4"));
        assert!(k.token_of_prefix("refused").is_none(), "a refused assignment is not kept");
        let mut ops = setup(b"h");
        ops.push(login("gone", b"h"));
        ops.push(Op::Auth(AuthOp::Disable));
        ops.push(Op::Auth(AuthOp::Enable));
        ops.push(login("kept", b"h"));
        let indexed: Vec<_> = ops.into_iter().enumerate().map(|(i, o)| (i as u64 + 1, o)).collect();
        apply_batch(&k, &indexed);
        assert!(k.token_of_prefix("first").is_none() && k.token_of_prefix("gone").is_none());
        assert_eq!(k.token_of_prefix("kept").as_deref(), Some("kept.7"));
    }

    #[test]
    fn assignments_applied_again_at_start_are_not_recorded() {
        let k = TokenKeeper::new(Duration::from_secs(60), 4);
        let mut ops = setup(b"h");
        ops.push(login("replayed", b"h"));
        ops.push(login("new", b"h"));
        let indexed: Vec<_> = ops.into_iter().enumerate().map(|(i, o)| (i as u64 + 1, o)).collect();
        apply_batch(&k, &indexed);
        assert!(k.token_of_prefix("replayed").is_none());
        assert_eq!(k.token_of_prefix("new").as_deref(), Some("new.5"));
    }
}
