//! Table tests of the peer-input bounds: each row is one field at its limit (accepted)
//! and one past it (refused).

use super::*;
use crate::message::RejectHint;
use crate::types::{ConfState, Entry};
use std::sync::Arc;

const ME: NodeId = 1;
const LIMITS: PeerLimits = PeerLimits { max_snapshot_bytes: 1000, max_append_entries: 4 };

fn msg(term: Term, body: MessageBody) -> Message {
    Message { from: 2, to: ME, term, body }
}

fn check(m: &Message) -> Result<(), Invalid> {
    check_message(m, ME, &LIMITS)
}

fn entry(index: Index, term: Term) -> Entry {
    Entry { term, index, kind: EntryKind::Normal, data: Arc::from(&b"x"[..]) }
}

fn append(prev_index: Index, entries: Vec<Entry>) -> MessageBody {
    MessageBody::Append { prev_index, prev_term: 1, entries, commit: 0 }
}

fn chunk(total_bytes: u64, offset: u64, len: usize, done: bool) -> MessageBody {
    let conf = ConfState::from_voters([1, 2, 3].into());
    MessageBody::Snapshot {
        meta: SnapshotMeta { index: 10, term: 1, conf },
        offset,
        total_bytes,
        chunk: Arc::from(vec![0u8; len]),
        done,
    }
}

#[test]
fn ids_must_name_a_peer_and_this_member() {
    let ok = msg(1, MessageBody::HeartbeatResp { read_round: 0 });
    assert_eq!(check(&ok), Ok(()));
    assert_eq!(check(&Message { from: 0, ..ok.clone() }), Err(Invalid::ZeroId));
    assert_eq!(check(&Message { to: 0, ..ok.clone() }), Err(Invalid::ZeroId));
    assert_eq!(check(&Message { to: 3, ..ok.clone() }), Err(Invalid::NotForUs { to: 3, me: ME }));
    assert_eq!(check(&Message { from: ME, ..ok }), Err(Invalid::FromSelf));
}

#[test]
fn terms_are_bounded_so_an_election_can_always_add_one() {
    let body = MessageBody::HeartbeatResp { read_round: 0 };
    assert_eq!(check(&msg(TERM_MAX, body.clone())), Ok(()));
    assert!(matches!(check(&msg(TERM_MAX + 1, body.clone())), Err(Invalid::BadTerm { .. })));
    assert!(matches!(check(&msg(u64::MAX, body)), Err(Invalid::BadTerm { .. })));
}

#[test]
fn a_vote_request_cannot_claim_a_last_term_beyond_its_own_term() {
    let vote = |last_term| MessageBody::Vote { last_index: 5, last_term, transfer: false };
    assert_eq!(check(&msg(3, vote(3))), Ok(()));
    assert!(matches!(check(&msg(3, vote(4))), Err(Invalid::BadTerm { .. })));
    let huge = MessageBody::PreVote { last_index: u64::MAX, last_term: 1 };
    assert!(matches!(check(&msg(3, huge)), Err(Invalid::IndexTooLarge { .. })));
}

#[test]
fn indices_in_answers_are_bounded() {
    let resp = |index| MessageBody::AppendResp { index, reject: None };
    assert_eq!(check(&msg(1, resp(INDEX_MAX))), Ok(()));
    assert!(matches!(check(&msg(1, resp(u64::MAX))), Err(Invalid::IndexTooLarge { .. })));
    let hint = RejectHint { conflict_term: 1, conflict_first_index: 1, log_len: u64::MAX };
    let rejected = MessageBody::AppendResp { index: 3, reject: Some(hint) };
    assert!(matches!(check(&msg(1, rejected)), Err(Invalid::IndexTooLarge { .. })));
    let snap = MessageBody::SnapshotResp {
        snapshot_index: 1,
        next_offset: u64::MAX,
        done: true,
        last_index: u64::MAX,
    };
    assert!(matches!(check(&msg(1, snap)), Err(Invalid::IndexTooLarge { .. })));
    let read = MessageBody::ReadIndexResp { ctx: 1, index: u64::MAX };
    assert!(matches!(check(&msg(1, read)), Err(Invalid::IndexTooLarge { .. })));
    let beat = MessageBody::Heartbeat { commit: u64::MAX, read_round: u64::MAX };
    assert!(matches!(check(&msg(1, beat)), Err(Invalid::IndexTooLarge { .. })));
}

#[test]
fn appends_are_contiguous_ordered_and_bounded_in_count() {
    let four = (1..=4).map(|i| entry(10 + i, 2)).collect();
    assert_eq!(check(&msg(2, append(10, four))), Ok(()));
    let five = (1..=5).map(|i| entry(10 + i, 2)).collect();
    assert_eq!(check(&msg(2, append(10, five))), Err(Invalid::TooManyEntries { count: 5, max: 4 }));
    let gap = vec![entry(11, 2), entry(13, 2)];
    assert_eq!(check(&msg(2, append(10, gap))), Err(Invalid::EntriesOutOfOrder { index: 12 }));
    let backwards = vec![entry(11, 2), entry(12, 1)];
    assert_eq!(
        check(&msg(2, append(10, backwards))),
        Err(Invalid::EntriesOutOfOrder { index: 12 })
    );
    let term_zero = vec![entry(1, 0)];
    assert_eq!(check(&msg(2, append(0, term_zero))), Err(Invalid::EntriesOutOfOrder { index: 1 }));
    let future_term = vec![entry(11, 3)];
    assert!(matches!(check(&msg(2, append(10, future_term))), Err(Invalid::BadTerm { .. })));
    let at_the_end = vec![entry(INDEX_MAX, 2), entry(INDEX_MAX + 1, 2)];
    assert!(matches!(
        check(&msg(2, append(INDEX_MAX - 1, at_the_end))),
        Err(Invalid::IndexTooLarge { .. })
    ));
}

#[test]
fn snapshot_chunks_fit_their_snapshot_and_the_size_limit() {
    assert_eq!(check(&msg(1, chunk(1000, 0, 400, false))), Ok(()));
    assert_eq!(check(&msg(1, chunk(1000, 600, 400, true))), Ok(()));
    assert_eq!(
        check(&msg(1, chunk(1 << 62, 0, 1, false))),
        Err(Invalid::SnapshotTooLarge { total_bytes: 1 << 62, max: 1000 })
    );
    let past_end = Invalid::BadChunk { offset: 700, len: 400, total_bytes: 1000 };
    assert_eq!(check(&msg(1, chunk(1000, 700, 400, true))), Err(past_end));
    assert!(matches!(check(&msg(1, chunk(1000, 600, 400, false))), Err(Invalid::BadChunk { .. })));
    assert!(matches!(check(&msg(1, chunk(1000, 0, 10, true))), Err(Invalid::BadChunk { .. })));
    assert!(matches!(
        check(&msg(1, chunk(1000, u64::MAX, 10, false))),
        Err(Invalid::BadChunk { .. })
    ));
}

#[test]
fn a_snapshot_membership_is_non_empty_and_names_no_zero() {
    for voters in [vec![], vec![0, 1]] {
        let conf = ConfState::from_voters(voters.into_iter().collect());
        let body = MessageBody::Snapshot {
            meta: SnapshotMeta { index: 10, term: 1, conf },
            offset: 0,
            total_bytes: 1,
            chunk: Arc::from(&b"x"[..]),
            done: true,
        };
        assert!(matches!(check(&msg(1, body)), Err(Invalid::BadVoters { .. })));
    }
}

#[test]
fn a_membership_change_entry_over_its_bound_is_refused() {
    let conf_entry = |len: usize| Entry {
        term: 1,
        index: 1,
        kind: EntryKind::ConfChange,
        data: Arc::from(vec![0u8; len]),
    };
    let max = crate::CONF_CHANGE_BYTES_MAX;
    assert_eq!(check(&msg(1, append(0, vec![conf_entry(max)]))), Ok(()));
    assert_eq!(
        check(&msg(1, append(0, vec![conf_entry(max + 1)]))),
        Err(Invalid::ConfChangeTooLarge { index: 1, len: max + 1 })
    );
}
