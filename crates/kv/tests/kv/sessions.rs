//! Client sessions: exactly-once execution of retried writes (Raft
//! dissertation §6.3) and deterministic expiry.

use crate::common::*;
use kv::*;

fn register(n: &mut Node) -> u64 {
    match n.op(Op::RegisterSession) {
        Response::SessionRegistered { client_id } => client_id,
        other => panic!("{other:?}"),
    }
}

fn append(key: &str, suffix: &str) -> Op {
    Op::Append { key: key.into(), suffix: suffix.into() }
}

#[test]
fn session_id_is_the_registration_log_index() {
    let mut n = Node::new();
    n.put("x", "1");
    assert_eq!(register(&mut n), 2);
    assert_eq!(register(&mut n), 3);
    assert_eq!(n.sm.session_count(), 2);
}

/// A client whose reply was lost retries with the same seq; the append must
/// not run twice and the client gets the original reply.
#[test]
fn retry_returns_the_saved_response_without_re_executing() {
    let mut n = Node::new();
    let c = register(&mut n);
    let first = n.apply(Command::with_session(c, 1, append("k", "x")));
    n.put("other", "v"); // another client moves the revision on
    let retry = n.apply(Command::with_session(c, 1, append("k", "x")));
    assert_eq!(first, retry);
    assert_eq!(n.value("k").as_deref(), Some("x"));
    let next = n.apply(Command::with_session(c, 2, append("k", "y")));
    assert!(next.error().is_none());
    assert_eq!(n.value("k").as_deref(), Some("xy"));
}

#[test]
fn an_error_response_is_saved_and_replayed_too() {
    let mut n = Node::new();
    let c = register(&mut n);
    let first = n.apply(Command::with_session(c, 1, Op::Put(put_req("", "v"))));
    assert_eq!(first, Response::Error(KvError::EmptyKey));
    assert_eq!(n.apply(Command::with_session(c, 1, Op::Put(put_req("", "v")))), first);
}

#[test]
fn an_older_seq_is_stale() {
    let mut n = Node::new();
    let c = register(&mut n);
    n.apply(Command::with_session(c, 1, append("k", "a")));
    n.apply(Command::with_session(c, 2, append("k", "b")));
    let r = n.apply(Command::with_session(c, 1, append("k", "a")));
    assert_eq!(r, Response::Error(KvError::StaleSequence { client_id: c, seq: 1, last_seq: 2 }));
    // seq 0 is never valid: sequences start at 1.
    let c2 = register(&mut n);
    assert!(matches!(
        n.apply(Command::with_session(c2, 0, append("k", "z"))),
        Response::Error(KvError::StaleSequence { .. })
    ));
    assert_eq!(n.value("k").as_deref(), Some("ab"));
}

#[test]
fn an_unknown_session_is_refused_without_executing() {
    let mut n = Node::new();
    let r = n.apply(Command::with_session(42, 1, append("k", "a")));
    assert_eq!(r, Response::Error(KvError::SessionExpired { client_id: 42 }));
    assert_eq!(n.sm.get(b"k"), None);
}

/// A session idle for more than `session_idle_entries_max` log entries is
/// dropped when a later entry is applied; a retry then gets SessionExpired
/// instead of running twice.
#[test]
fn idle_sessions_expire_by_log_index() {
    let config = Config { session_idle_entries_max: 5, ..Config::default() };
    let mut n = Node::with_config(config);
    let idle = register(&mut n); // index 1
    let busy = register(&mut n); // index 2
    n.apply(Command::with_session(idle, 1, append("k", "a"))); // index 3
    for seq in 1..=5 {
        // indices 4..=8; idle's last activity stays at 3
        n.apply(Command::with_session(busy, seq, append("b", "x")));
    }
    assert_eq!(n.sm.session_count(), 2, "8 - 3 = 5 is not more than 5");
    n.apply(Command::with_session(busy, 6, append("b", "x"))); // index 9
    assert_eq!(n.sm.session_count(), 1);
    let retry = n.apply(Command::with_session(idle, 1, append("k", "a")));
    assert_eq!(retry, Response::Error(KvError::SessionExpired { client_id: idle }));
    assert_eq!(n.value("k").as_deref(), Some("a"), "not executed twice");
}

/// Registering beyond the limit used to evict the least recently used session,
/// so any client could, by registering in a loop, evict every other client's live
/// session. Now the registration is refused, the live sessions keep working, and a
/// slot frees only when a session expires by idling.
#[test]
fn registering_beyond_the_limit_is_refused_and_evicts_no_live_session() {
    let config = Config { sessions_max: 2, session_idle_entries_max: 5, ..Config::default() };
    let mut n = Node::with_config(config);
    let a = register(&mut n);
    let b = register(&mut n);
    for _ in 0..3 {
        let refused = n.op(Op::RegisterSession);
        assert_eq!(refused, Response::Error(KvError::TooManySessions { max: 2 }));
    }
    assert_eq!(n.sm.session_count(), 2);
    assert!(n.apply(Command::with_session(a, 1, append("k", "a"))).error().is_none());
    assert!(n.apply(Command::with_session(b, 1, append("k", "b"))).error().is_none());
    // b idles past the limit while a stays active: b's slot frees up.
    for seq in 2..8 {
        assert!(n.apply(Command::with_session(a, seq, append("k", "a"))).error().is_none());
    }
    let c = register(&mut n);
    assert!(n.apply(Command::with_session(c, 1, append("k", "c"))).error().is_none());
    let r = n.apply(Command::with_session(b, 2, append("k", "b")));
    assert_eq!(r, Response::Error(KvError::SessionExpired { client_id: b }));
}

/// A session-tagged write's response is replicated state; a large one (a txn
/// reading a big range) used to be kept whole. Now a response over the bound is
/// replaced by an error that tells a retry the write took effect, and where; the
/// first answer is still the full response, and the write still runs once.
#[test]
fn a_large_response_is_not_kept_and_a_retry_learns_the_write_took_effect() {
    let mut n = Node::new();
    let id = register(&mut n);
    let big = "v".repeat(SESSION_RESPONSE_BYTES_MAX);
    n.put("big", &big);
    let read_and_append = || {
        Op::Txn(TxnRequest {
            success: vec![
                RequestOp::Range(RangeRequest::key("big")),
                RequestOp::Put(put_req("small", "1")),
            ],
            ..Default::default()
        })
    };
    let first = n.apply(Command::with_session(id, 1, read_and_append()));
    let Response::Txn(t) = &first else { panic!("{first:?}") };
    let ResponseOp::Range(r) = &t.responses[0] else { panic!("{t:?}") };
    assert_eq!(r.kvs[0].value, big.as_bytes(), "the first answer is whole");
    let revision = n.sm.revision();
    let retry = n.apply(Command::with_session(id, 1, read_and_append()));
    assert_eq!(
        retry,
        Response::Error(KvError::ResponseNotKept { client_id: id, seq: 1, revision })
    );
    assert_eq!(n.sm.revision(), revision, "not run again");
    let snapshot = snapshot_bytes(&n.sm);
    assert!(snapshot.len() < SESSION_RESPONSE_BYTES_MAX * 2, "big is stored once");
    let mut copy = Node { sm: StateMachine::restore(&snapshot[..]).unwrap(), index: n.index };
    assert_eq!(copy.apply(Command::with_session(id, 1, read_and_append())), retry);
    // A small response is still kept whole and replayed.
    let put = Op::Put(PutRequest { prev_kv: true, ..put_req("small", "2") });
    let first = n.apply(Command::with_session(id, 2, put.clone()));
    assert!(first.error().is_none());
    assert_eq!(n.apply(Command::with_session(id, 2, put)), first);
}

/// Expiry depends on log content only: replicas fed the same entries keep
/// the same sessions, whatever the wall clock did.
#[test]
fn expiry_is_deterministic_across_replicas() {
    let config = Config { session_idle_entries_max: 7, sessions_max: 4, ..Config::default() };
    let mut rng = Rng::new(7);
    let mut entries = Vec::new();
    let mut index = 0;
    for _ in 0..300 {
        index += 1 + rng.below(3); // gaps: entries that are not kv commands
        let op = if rng.chance(15) { Op::RegisterSession } else { append("k", "z") };
        let command = Command::with_session(rng.below(index) + 1, 1 + rng.below(3), op);
        entries.push((index, command.encode()));
    }
    let mut replicas = [StateMachine::new(config), StateMachine::new(config)];
    for replica in &mut replicas {
        for (index, bytes) in &entries {
            replica.apply(*index, bytes);
        }
    }
    assert_eq!(replicas[0], replicas[1]);
    assert_eq!(snapshot_bytes(&replicas[0]), snapshot_bytes(&replicas[1]));
}

#[test]
fn sessions_survive_a_snapshot_and_still_deduplicate() {
    let mut n = Node::new();
    let c = register(&mut n);
    let first = n.apply(Command::with_session(c, 1, append("k", "x")));
    let bytes = snapshot_bytes(&n.sm);
    let mut restored = Node { sm: StateMachine::restore(&bytes[..]).unwrap(), index: n.index };
    assert_eq!(restored.sm.session_count(), 1);
    let retry = restored.apply(Command::with_session(c, 1, append("k", "x")));
    assert_eq!(retry, first);
    assert_eq!(restored.value("k").as_deref(), Some("x"));
}
