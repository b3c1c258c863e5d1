//! The auth store as replicated state: etcd 3.4's rules for users, roles,
//! permissions and enabling, the permission check at apply, and snapshots.

use crate::common::*;
use kv::*;

fn stamp(user: &str, revision: u64) -> AuthStamp {
    AuthStamp { user: user.into(), revision }
}

impl Node {
    /// Runs an auth command as the member itself (unchecked).
    fn auth(&mut self, op: AuthOp) -> Result<AuthResponse, AuthError> {
        answer(self.op(Op::Auth(op)))
    }
    /// Runs an auth command as `user`, stamped with the current auth revision.
    fn auth_as(&mut self, user: &str, op: AuthOp) -> Result<AuthResponse, AuthError> {
        let s = stamp(user, self.sm.auth().revision);
        answer(self.apply(Command::new(Op::Auth(op)).stamped(s)))
    }
    /// Runs a kv command as `user`, stamped with the current auth revision.
    fn as_user(&mut self, user: &str, op: Op) -> Response {
        let s = stamp(user, self.sm.auth().revision);
        self.apply(Command::new(op).stamped(s))
    }
}

fn answer(r: Response) -> Result<AuthResponse, AuthError> {
    match r {
        Response::Auth(a) => Ok(a),
        Response::Error(KvError::Auth(e)) => Err(e),
        other => panic!("unexpected {other:?}"),
    }
}

fn refusal(r: &Response) -> Option<AuthError> {
    match r {
        Response::Error(KvError::Auth(e)) => Some(*e),
        _ => None,
    }
}

fn user_add(name: &str) -> AuthOp {
    AuthOp::UserAdd { name: name.into(), password_hash: Some(b"$2b$10$hash".to_vec()) }
}

fn grant(user: &str, role: &str) -> AuthOp {
    AuthOp::UserGrantRole { user: user.into(), role: role.into() }
}

fn perm(role: &str, t: PermissionType, key: &str, range_end: &[u8]) -> AuthOp {
    let permission = Permission { perm_type: t, key: key.into(), range_end: range_end.to_vec() };
    AuthOp::RoleGrantPermission { role: role.into(), permission }
}

/// A store with root (role root), and user `alice` with role `reader` (read on
/// prefix `pub/`) and role `writer` (readwrite on the single key `own`), auth on.
fn enabled_store() -> Node {
    let mut n = Node::new();
    n.auth(user_add("root")).unwrap();
    n.auth(grant("root", "root")).unwrap();
    n.auth(user_add("alice")).unwrap();
    n.auth(AuthOp::RoleAdd { name: "reader".into() }).unwrap();
    n.auth(AuthOp::RoleAdd { name: "writer".into() }).unwrap();
    n.auth(perm("reader", PermissionType::Read, "pub/", b"pub0")).unwrap();
    n.auth(perm("writer", PermissionType::ReadWrite, "own", b"")).unwrap();
    n.auth(grant("alice", "reader")).unwrap();
    n.auth(grant("alice", "writer")).unwrap();
    n.auth(AuthOp::Enable).unwrap();
    n
}

#[test]
fn enable_needs_root_user_with_root_role() {
    let mut n = Node::new();
    assert_eq!(n.auth(AuthOp::Enable), Err(AuthError::RootUserNotExist));
    n.auth(user_add("root")).unwrap();
    assert_eq!(n.auth(AuthOp::Enable), Err(AuthError::RootRoleNotExist));
    assert_eq!(
        AuthError::RootRoleNotExist.message(),
        "etcdserver: root user does not have root role"
    );
    // The root role need not be added first, as in etcd.
    n.auth(grant("root", "root")).unwrap();
    let r = n.auth(AuthOp::Enable).unwrap();
    assert!(r.enabled);
}

#[test]
fn the_auth_revision_rises_with_each_change_but_not_with_enable_or_queries() {
    let mut n = Node::new();
    assert_eq!(n.sm.auth().revision, 1);
    n.auth(user_add("root")).unwrap();
    n.auth(grant("root", "root")).unwrap();
    assert_eq!(n.sm.auth().revision, 3);
    n.auth(grant("root", "root")).unwrap();
    assert_eq!(n.sm.auth().revision, 3, "granting a held role changes nothing");
    n.auth(AuthOp::Enable).unwrap();
    n.auth_as("root", AuthOp::UserList).unwrap();
    assert_eq!(n.sm.auth().revision, 3);
    let r = n.auth_as("root", AuthOp::Disable).unwrap();
    assert_eq!((r.enabled, r.auth_revision), (false, 4));
    assert_eq!(n.sm.revision(), INITIAL_REVISION, "auth changes leave the kv revision alone");
}

#[test]
fn user_and_role_errors_are_etcds() {
    let mut n = Node::new();
    assert_eq!(n.auth(user_add("")), Err(AuthError::UserEmpty));
    n.auth(user_add("u")).unwrap();
    assert_eq!(n.auth(user_add("u")), Err(AuthError::UserAlreadyExists));
    assert_eq!(n.auth(AuthOp::UserGet { name: "x".into() }), Err(AuthError::UserNotFound));
    assert_eq!(n.auth(grant("u", "nope")), Err(AuthError::RoleNotFound));
    assert_eq!(n.auth(AuthOp::RoleAdd { name: "".into() }), Err(AuthError::RoleEmpty));
    n.auth(AuthOp::RoleAdd { name: "r".into() }).unwrap();
    assert_eq!(n.auth(AuthOp::RoleAdd { name: "r".into() }), Err(AuthError::RoleAlreadyExists));
    let revoke = AuthOp::UserRevokeRole { user: "u".into(), role: "r".into() };
    assert_eq!(n.auth(revoke), Err(AuthError::RoleNotGranted));
    let revoke_perm =
        AuthOp::RoleRevokePermission { role: "r".into(), key: b"k".to_vec(), range_end: vec![] };
    assert_eq!(n.auth(revoke_perm), Err(AuthError::PermissionNotGranted));
    assert_eq!(AuthError::UserAlreadyExists.message(), "etcdserver: user name already exists");
}

#[test]
fn role_delete_revokes_it_from_users_and_gets_list_sorted() {
    let mut n = enabled_store();
    let r = n.auth_as("root", AuthOp::UserGet { name: "alice".into() }).unwrap();
    assert_eq!(r.roles, vec!["reader", "writer"]);
    n.auth_as("root", AuthOp::RoleDelete { name: "reader".into() }).unwrap();
    let r = n.auth_as("root", AuthOp::UserGet { name: "alice".into() }).unwrap();
    assert_eq!(r.roles, vec!["writer"]);
    let r = n.auth_as("root", AuthOp::RoleList).unwrap();
    assert_eq!(r.roles, vec!["writer"]);
    let r = n.auth_as("root", AuthOp::UserList).unwrap();
    assert_eq!(r.users, vec!["alice", "root"]);
}

#[test]
fn granting_a_permission_on_the_same_range_replaces_its_type() {
    let mut n = Node::new();
    n.auth(AuthOp::RoleAdd { name: "r".into() }).unwrap();
    n.auth(perm("r", PermissionType::Read, "b", b"")).unwrap();
    n.auth(perm("r", PermissionType::Write, "a", b"c")).unwrap();
    n.auth(perm("r", PermissionType::ReadWrite, "b", b"")).unwrap();
    let r = n.auth(AuthOp::RoleGet { name: "r".into() }).unwrap();
    let got: Vec<_> = r.permissions.iter().map(|p| (p.perm_type, p.key.clone())).collect();
    assert_eq!(
        got,
        vec![(PermissionType::Write, b"a".to_vec()), (PermissionType::ReadWrite, b"b".to_vec())]
    );
}

#[test]
fn root_cannot_be_deleted_or_lose_its_role_while_auth_is_on() {
    let mut n = enabled_store();
    let invalid = Err(AuthError::InvalidAuthManagement);
    assert_eq!(n.auth_as("root", AuthOp::UserDelete { name: "root".into() }), invalid);
    assert_eq!(n.auth_as("root", AuthOp::RoleDelete { name: "root".into() }), invalid);
    let revoke = AuthOp::UserRevokeRole { user: "root".into(), role: "root".into() };
    assert_eq!(n.auth_as("root", revoke.clone()), invalid);
    n.auth_as("root", AuthOp::Disable).unwrap();
    n.auth(revoke).unwrap();
    n.auth(AuthOp::UserDelete { name: "root".into() }).unwrap();
}

#[test]
fn auth_calls_need_root_except_getting_oneself_or_ones_role() {
    let mut n = enabled_store();
    assert_eq!(n.auth_as("alice", AuthOp::UserList), Err(AuthError::PermissionDenied));
    assert_eq!(n.auth_as("", AuthOp::UserList), Err(AuthError::UserEmpty));
    assert_eq!(n.auth_as("alice", user_add("bob")), Err(AuthError::PermissionDenied));
    assert_eq!(n.auth_as("alice", AuthOp::Disable), Err(AuthError::PermissionDenied));
    n.auth_as("alice", AuthOp::UserGet { name: "alice".into() }).unwrap();
    n.auth_as("alice", AuthOp::RoleGet { name: "reader".into() }).unwrap();
    let other = AuthOp::UserGet { name: "root".into() };
    assert_eq!(n.auth_as("alice", other), Err(AuthError::PermissionDenied));
}

#[test]
fn a_prefix_reader_may_read_the_prefix_only_and_write_nothing_there() {
    let mut n = enabled_store();
    let read = |k: &str, end: &[u8]| {
        Op::Range(RangeRequest { key: k.into(), range_end: end.to_vec(), ..Default::default() })
    };
    let denied = Some(AuthError::PermissionDenied);
    assert_eq!(refusal(&n.as_user("alice", read("pub/a", b""))), None);
    assert_eq!(refusal(&n.as_user("alice", Op::Range(RangeRequest::prefix("pub/")))), None);
    assert_eq!(refusal(&n.as_user("alice", read("pub/a", b"pub/b"))), None);
    assert_eq!(refusal(&n.as_user("alice", read("pub/a", b"pub1"))), denied, "past the prefix");
    assert_eq!(refusal(&n.as_user("alice", read("pua", b""))), denied);
    assert_eq!(refusal(&n.as_user("alice", Op::Range(RangeRequest::all()))), denied);
    assert_eq!(refusal(&n.as_user("alice", Op::Put(put_req("pub/a", "v")))), denied);
    assert_eq!(refusal(&n.as_user("alice", Op::Put(put_req("own", "v")))), None);
    assert_eq!(refusal(&n.as_user("alice", Op::Put(put_req("own2", "v")))), denied);
    let del = Op::DeleteRange(DeleteRangeRequest { key: "pub/a".into(), ..Default::default() });
    assert_eq!(refusal(&n.as_user("alice", del)), denied);
    assert_eq!(refusal(&n.as_user("root", Op::Range(RangeRequest::all()))), None, "root bypasses");
    assert_eq!(refusal(&n.as_user("", Op::Range(RangeRequest::all()))), Some(AuthError::UserEmpty));
    assert_eq!(n.value("own").as_deref(), Some("v"));
    assert_eq!(n.value("pub/a"), None, "refused writes changed nothing");
}

#[test]
fn adjacent_permissions_of_two_roles_cover_a_range_together() {
    let mut n = enabled_store();
    n.auth_as("root", AuthOp::RoleAdd { name: "more".into() }).unwrap();
    n.auth_as("root", perm("more", PermissionType::Read, "pub0", b"pub5")).unwrap();
    n.auth_as("root", grant("alice", "more")).unwrap();
    let span =
        RangeRequest { key: "pub/x".into(), range_end: b"pub4".to_vec(), ..Default::default() };
    assert_eq!(refusal(&n.as_user("alice", Op::Range(span))), None);
    let past =
        RangeRequest { key: "pub/x".into(), range_end: b"pub6".to_vec(), ..Default::default() };
    assert_eq!(refusal(&n.as_user("alice", Op::Range(past))), Some(AuthError::PermissionDenied));
}

#[test]
fn every_compare_and_every_op_of_every_branch_of_a_txn_is_checked() {
    let mut n = enabled_store();
    let cmp = |k: &str| Compare {
        key: k.into(),
        range_end: vec![],
        result: CompareResult::Equal,
        target: CompareTarget::Version(0),
    };
    let ok = TxnRequest {
        compare: vec![cmp("pub/a")],
        success: vec![RequestOp::Put(put_req("own", "1"))],
        failure: vec![RequestOp::Range(RangeRequest::key("pub/b"))],
    };
    assert_eq!(refusal(&n.as_user("alice", Op::Txn(ok.clone()))), None);
    let bad_compare = TxnRequest { compare: vec![cmp("secret")], ..ok.clone() };
    let bad_failure =
        TxnRequest { failure: vec![RequestOp::Put(put_req("pub/a", "x"))], ..ok.clone() };
    let nested = TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest {
            failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: "x".into(),
                ..Default::default()
            })],
            ..Default::default()
        })],
        ..ok.clone()
    };
    for t in [bad_compare, bad_failure, nested] {
        assert_eq!(refusal(&n.as_user("alice", Op::Txn(t))), Some(AuthError::PermissionDenied));
    }
}

/// etcd's race: a permission checked where the request arrived may be revoked
/// before the request is applied. The command carries the auth revision of its
/// check; apply refuses it once auth has moved on, and changes nothing.
#[test]
fn a_command_checked_before_a_revoke_is_refused_at_apply() {
    let mut n = enabled_store();
    let checked_at = stamp("alice", n.sm.auth().revision);
    let revoke = AuthOp::UserRevokeRole { user: "alice".into(), role: "writer".into() };
    n.auth_as("root", revoke).unwrap();
    let late = Command::new(Op::Put(put_req("own", "v"))).stamped(checked_at);
    assert_eq!(refusal(&n.apply(late)), Some(AuthError::OldRevision));
    assert_eq!(n.value("own"), None);
    // Checked again under the new state, it is denied.
    assert_eq!(
        refusal(&n.as_user("alice", Op::Put(put_req("own", "v")))),
        Some(AuthError::PermissionDenied)
    );
}

fn login(hash: &[u8]) -> AuthOp {
    let token_prefix = "abcdefghijklmnop".to_string();
    AuthOp::Authenticate { name: "alice".into(), password_hash: hash.to_vec(), token_prefix }
}

/// etcd 3.4 assigns a simple token at apply, on every member (its
/// `applierV3backend.Authenticate`): the assignment needs no caller, changes no auth
/// state, and is refused if auth moved on since the password was checked, if the
/// checked hash is no longer the user's, or while auth is off.
#[test]
fn a_token_assignment_is_refused_once_auth_moved_on_since_the_password_check() {
    let mut n = enabled_store();
    let hash = b"$2b$10$hash";
    let checked_at = stamp("", n.sm.auth().revision);
    let before = n.sm.auth().clone();
    let ok = n.apply(Command::new(Op::Auth(login(hash))).stamped(checked_at.clone()));
    assert!(matches!(ok, Response::Auth(_)), "{ok:?}");
    assert_eq!(*n.sm.auth(), before, "an assignment changes no replicated auth state");
    let wrong = n.apply(Command::new(Op::Auth(login(b"other"))).stamped(checked_at.clone()));
    assert_eq!(refusal(&wrong), Some(AuthError::AuthFailed));
    let change = AuthOp::UserChangePassword {
        name: "alice".into(),
        password_hash: Some(b"$2b$10$new".to_vec()),
    };
    n.auth_as("root", change).unwrap();
    let late = n.apply(Command::new(Op::Auth(login(hash))).stamped(checked_at));
    assert_eq!(refusal(&late), Some(AuthError::OldRevision));
    let current = stamp("", n.sm.auth().revision);
    let stale_hash = n.apply(Command::new(Op::Auth(login(hash))).stamped(current.clone()));
    assert_eq!(refusal(&stale_hash), Some(AuthError::AuthFailed));
    n.auth_as("root", AuthOp::Disable).unwrap();
    let off = n.apply(Command::new(Op::Auth(login(b"$2b$10$new"))).stamped(current));
    assert_eq!(refusal(&off), Some(AuthError::NotEnabled));
}

#[test]
fn a_refused_command_does_not_use_up_its_session_sequence() {
    let mut n = enabled_store();
    let Response::SessionRegistered { client_id } = n.op(Op::RegisterSession) else { panic!() };
    let old = stamp("alice", n.sm.auth().revision - 1);
    let put = Op::Put(put_req("own", "v"));
    let first = Command::with_session(client_id, 1, put.clone()).stamped(old);
    assert_eq!(refusal(&n.apply(first)), Some(AuthError::OldRevision));
    let again =
        Command::with_session(client_id, 1, put).stamped(stamp("alice", n.sm.auth().revision));
    assert!(matches!(n.apply(again), Response::Put(_)), "the retry with the same seq runs");
}

#[test]
fn unstamped_member_commands_pass_and_disabled_auth_checks_nothing() {
    let mut n = enabled_store();
    assert!(matches!(n.op(Op::Put(put_req("anything", "v"))), Response::Put(_)));
    n.auth_as("root", AuthOp::Disable).unwrap();
    assert!(matches!(n.as_user("", Op::Put(put_req("x", "v"))), Response::Put(_)));
}

#[test]
fn revoking_a_lease_needs_write_on_its_keys() {
    let mut n = enabled_store();
    n.op(Op::LeaseGrant { id: 7, ttl_secs: 60 });
    n.op(Op::Put(PutRequest { lease: 7, ..put_req("pub/a", "v") }));
    assert_eq!(
        refusal(&n.as_user("alice", Op::LeaseRevoke { id: 7 })),
        Some(AuthError::PermissionDenied)
    );
    assert!(matches!(n.as_user("root", Op::LeaseRevoke { id: 7 }), Response::LeaseRevoked(_)));
}

#[test]
fn auth_state_survives_a_snapshot_and_applies_alike_after_it() {
    let mut n = enabled_store();
    let bytes = snapshot_bytes(&n.sm);
    let restored = StateMachine::restore(&bytes[..]).unwrap();
    assert_eq!(restored, n.sm);
    assert_eq!(snapshot_bytes(&restored), bytes);
    let mut copy = Node { sm: restored, index: n.index };
    let op = Op::Put(put_req("pub/a", "v"));
    assert_eq!(copy.as_user("alice", op.clone()), n.as_user("alice", op));
    // A damaged user order is corruption, not a silently different store.
    let at = bytes.windows(5).position(|w| w == b"alice").unwrap();
    let mut bad = bytes.clone();
    bad[at] = b's'; // "slice" > "root": out of order
    let body = bad.len() - 4;
    let crc = crc32c::crc32c(&bad[..body]);
    bad[body..].copy_from_slice(&crc.to_le_bytes());
    let e = StateMachine::restore(&bad[..]).unwrap_err().to_string();
    assert!(e.contains("out of order"), "{e}");
}

#[test]
fn auth_commands_and_errors_round_trip_through_the_codec() {
    for e in [AuthError::UserEmpty, AuthError::OldRevision, AuthError::RootRoleNotExist] {
        let r = Response::Error(KvError::Auth(e));
        assert_eq!(Response::decode(&r.encode()), Ok(r));
    }
    let r = Response::Auth(AuthResponse {
        revision: 3,
        auth_revision: 9,
        enabled: true,
        roles: vec!["a".into()],
        users: vec!["b".into()],
        permissions: vec![Permission {
            perm_type: PermissionType::Write,
            key: b"k".to_vec(),
            range_end: vec![0],
        }],
    });
    assert_eq!(Response::decode(&r.encode()), Ok(r));
    let login = Command::new(Op::Auth(AuthOp::Authenticate {
        name: "alice".into(),
        password_hash: b"$2b$10$hash".to_vec(),
        token_prefix: "abcdefghijklmnop".into(),
    }))
    .stamped(stamp("", 4));
    assert_eq!(Command::decode(&login.encode()), Ok(login));
    // A command without a stamp encodes exactly as before stamps existed.
    assert_eq!(Command::new(Op::RegisterSession).encode(), vec![WIRE_FORMAT_VERSION, 0, 8]);
    let bad_name = Command::new(Op::Auth(AuthOp::RoleAdd { name: "x".into() })).encode();
    let mut bad = bad_name.clone();
    *bad.last_mut().unwrap() = 0xff;
    assert!(matches!(Command::decode(&bad).unwrap_err().kind, DecodeErrorKind::InvalidUtf8 { .. }));
}
