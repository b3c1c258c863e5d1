use super::*;
use prost::Message as _;

fn entry(term: u64, index: u64, kind: EntryKind, data: &[u8]) -> Entry {
    Entry { term, index, kind, data: Arc::from(data) }
}

fn msg(term: u64, body: MessageBody) -> Message {
    Message { from: 1, to: 2, term, body }
}

fn meta(index: u64, term: u64, voters: &[u64]) -> SnapshotMeta {
    SnapshotMeta { index, term, conf: ConfState::from_voters(voters.iter().copied().collect()) }
}

/// A joint configuration with learners on both sides of the change.
fn joint_meta() -> SnapshotMeta {
    let set = |ids: &[u64]| ids.iter().copied().collect();
    let conf = ConfState {
        voters: set(&[1, 2, 4]),
        voters_outgoing: set(&[1, 2, 3]),
        learners: set(&[5]),
        learners_next: set(&[3]),
    };
    SnapshotMeta { index: 200, term: 8, conf }
}

/// At least one message of every body kind, with non-default field values so a field
/// dropped or swapped on the way shows up.
fn one_of_each_kind() -> Vec<Message> {
    let hint = RejectHint { conflict_term: 4, conflict_first_index: 17, log_len: 30 };
    vec![
        msg(7, MessageBody::PreVote { last_index: 41, last_term: 6 }),
        msg(7, MessageBody::PreVoteResp { reject: true }),
        msg(7, MessageBody::Vote { last_index: 41, last_term: 6, transfer: false }),
        msg(8, MessageBody::Vote { last_index: 41, last_term: 6, transfer: true }),
        msg(7, MessageBody::TimeoutNow),
        msg(7, MessageBody::VoteResp { reject: false }),
        msg(7, MessageBody::VoteResp { reject: true }),
        msg(
            7,
            MessageBody::Append {
                prev_index: 10,
                prev_term: 5,
                entries: vec![
                    entry(5, 11, EntryKind::Normal, b"put a 1"),
                    entry(7, 12, EntryKind::Noop, b""),
                    entry(7, 13, EntryKind::Normal, &[0, 255, 0, 1]),
                    entry(7, 14, EntryKind::ConfChange, &[1, 0, 0, 0, 0]),
                ],
                commit: 9,
            },
        ),
        // A probe: no entries.
        msg(7, MessageBody::Append { prev_index: 10, prev_term: 5, entries: vec![], commit: 9 }),
        msg(7, MessageBody::AppendResp { index: 13, reject: None }),
        msg(7, MessageBody::AppendResp { index: 10, reject: Some(hint) }),
        msg(7, MessageBody::Heartbeat { commit: 12, read_round: 3 }),
        msg(7, MessageBody::HeartbeatResp { read_round: 3 }),
        msg(
            7,
            MessageBody::Snapshot {
                meta: joint_meta(),
                offset: 0,
                total_bytes: 1,
                chunk: Arc::from(&b"j"[..]),
                done: true,
            },
        ),
        msg(
            7,
            MessageBody::Snapshot {
                meta: meta(100, 6, &[1, 2, 3]),
                offset: 4096,
                total_bytes: 4100,
                chunk: Arc::from(&b"tail"[..]),
                done: true,
            },
        ),
        msg(
            7,
            MessageBody::Snapshot {
                meta: meta(100, 6, &[1, 2, 3]),
                offset: 0,
                total_bytes: 4100,
                chunk: Arc::from(&[9u8; 16][..]),
                done: false,
            },
        ),
        msg(
            7,
            MessageBody::SnapshotResp {
                snapshot_index: 100,
                next_offset: 4096,
                done: false,
                last_index: 0,
            },
        ),
        msg(7, MessageBody::ReadIndex { ctx: 77 }),
        msg(7, MessageBody::ReadIndexResp { ctx: 77, index: 0 }),
        msg(7, MessageBody::ReadIndexResp { ctx: 78, index: 12 }),
    ]
}

/// Core message -> wire message -> bytes -> wire message -> core message.
fn through_the_wire(m: &Message) -> Result<Message, ConvertError> {
    let bytes = pb::Message::from(m).encode_to_vec();
    let decoded = pb::Message::decode(bytes.as_slice()).expect("our own encoding decodes");
    Message::try_from(decoded)
}

#[test]
fn every_message_kind_round_trips_through_bytes() {
    let messages = one_of_each_kind();
    let kinds: BTreeSet<&str> = messages.iter().map(Message::kind_name).collect();
    assert_eq!(kinds.len(), 13, "cover every MessageBody variant; got {kinds:?}");
    for m in &messages {
        assert_eq!(through_the_wire(m).as_ref(), Ok(m), "{}", m.kind_name());
    }
}

#[test]
fn batch_round_trips_in_order() {
    let messages = one_of_each_kind();
    let batch = pb::MessageBatch::from_raft(0xC1, &messages);
    let decoded = pb::MessageBatch::decode(batch.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded.cluster_id, 0xC1);
    assert_eq!(decoded.into_raft(), Ok(messages));
}

#[test]
fn outgoing_entry_data_shares_the_core_allocation() {
    let data: Arc<[u8]> = Arc::from(&b"a command"[..]);
    let e = Entry { term: 1, index: 1, kind: EntryKind::Normal, data: Arc::clone(&data) };
    let wire = pb::Entry::from(&e);
    assert_eq!(wire.data.as_ptr(), data.as_ptr());
}

/// A wire message for the malformed-input tests, built from a valid core message.
fn wire(m: &Message) -> pb::Message {
    pb::Message::from(m)
}

fn append_wire(term: u64, prev: (u64, u64), entries: &[(u64, u64)]) -> pb::Message {
    let entries = entries.iter().map(|&(t, i)| entry(t, i, EntryKind::Normal, b"x")).collect();
    wire(&msg(
        term,
        MessageBody::Append { prev_index: prev.0, prev_term: prev.1, entries, commit: 0 },
    ))
}

#[test]
fn message_without_body_is_rejected() {
    let m = pb::Message { from: 1, to: 2, term: 3, body: None };
    assert_eq!(Message::try_from(m), Err(ConvertError::MissingBody));
}

#[test]
fn body_kind_from_a_newer_peer_is_rejected_not_misread() {
    // from=1, to=2, term=3, then field 17 (a body kind this build lacks), empty.
    let bytes = [0x08, 1, 0x10, 2, 0x18, 3, 0x8A, 0x01, 0x00];
    let m = pb::Message::decode(&bytes[..]).expect("unknown fields are skipped");
    assert_eq!(Message::try_from(m), Err(ConvertError::MissingBody));
}

#[test]
fn node_id_zero_is_rejected() {
    let mut m = wire(&msg(1, MessageBody::VoteResp { reject: true }));
    m.from = 0;
    assert_eq!(Message::try_from(m.clone()), Err(ConvertError::ZeroNodeId("Message.from")));
    m.from = 1;
    m.to = 0;
    assert_eq!(Message::try_from(m), Err(ConvertError::ZeroNodeId("Message.to")));
}

#[test]
fn unknown_or_unset_entry_kind_is_rejected() {
    for kind in [0, 4, -1, 99] {
        let mut m = append_wire(2, (0, 0), &[(1, 1)]);
        let Some(Body::Append(a)) = m.body.as_mut() else { unreachable!() };
        a.entries[0].kind = kind;
        assert_eq!(Message::try_from(m), Err(ConvertError::UnknownEntryKind(kind)));
    }
}

#[test]
fn append_entries_must_follow_prev_index_one_by_one() {
    let gap = append_wire(2, (5, 1), &[(1, 6), (1, 8)]);
    assert_eq!(
        Message::try_from(gap),
        Err(ConvertError::EntriesNotContiguous { expected_index: 7, found_index: 8 })
    );
    let wrong_start = append_wire(2, (5, 1), &[(1, 5)]);
    assert_eq!(
        Message::try_from(wrong_start),
        Err(ConvertError::EntriesNotContiguous { expected_index: 6, found_index: 5 })
    );
}

#[test]
fn append_past_the_last_index_is_rejected_without_overflow() {
    let m = append_wire(2, (u64::MAX, 1), &[(1, 0)]);
    assert_eq!(Message::try_from(m), Err(ConvertError::IndexOverflow));
    // A probe at the very end carries no entry, so nothing overflows.
    let probe = append_wire(2, (u64::MAX, 1), &[]);
    assert!(Message::try_from(probe).is_ok());
}

/// Raft §5.3: terms never decrease along a log, and a leader in term T holds no
/// entry of a term above T. An append that breaks either is not from a leader.
#[test]
fn append_entry_terms_must_rise_within_the_senders_term() {
    let falling = append_wire(5, (3, 2), &[(3, 4), (2, 5)]);
    assert_eq!(
        Message::try_from(falling),
        Err(ConvertError::EntryTermOutOfOrder { index: 5, term: 2, min_term: 3, max_term: 5 })
    );
    let below_prev = append_wire(5, (3, 4), &[(3, 4)]);
    assert_eq!(
        Message::try_from(below_prev),
        Err(ConvertError::EntryTermOutOfOrder { index: 4, term: 3, min_term: 4, max_term: 5 })
    );
    let from_the_future = append_wire(5, (3, 2), &[(6, 4)]);
    assert_eq!(
        Message::try_from(from_the_future),
        Err(ConvertError::EntryTermOutOfOrder { index: 4, term: 6, min_term: 2, max_term: 5 })
    );
}

fn snapshot_wire(offset: u64, total_bytes: u64, chunk: &[u8], done: bool) -> pb::Message {
    wire(&msg(
        3,
        MessageBody::Snapshot {
            meta: meta(10, 2, &[1, 2, 3]),
            offset,
            total_bytes,
            chunk: Arc::from(chunk),
            done,
        },
    ))
}

#[test]
fn snapshot_chunk_must_lie_inside_the_snapshot() {
    let past_end = snapshot_wire(8, 10, b"abcd", false);
    assert!(matches!(Message::try_from(past_end), Err(ConvertError::BadSnapshotChunk { .. })));
    let overflow = snapshot_wire(u64::MAX - 1, u64::MAX, b"abcd", false);
    assert!(matches!(Message::try_from(overflow), Err(ConvertError::BadSnapshotChunk { .. })));
    let early_done = snapshot_wire(0, 10, b"abcd", true);
    assert!(matches!(Message::try_from(early_done), Err(ConvertError::BadSnapshotChunk { .. })));
    let last_not_done = snapshot_wire(6, 10, b"abcd", false);
    assert!(matches!(Message::try_from(last_not_done), Err(ConvertError::BadSnapshotChunk { .. })));
    let empty_snapshot = snapshot_wire(0, 0, b"", true);
    assert!(Message::try_from(empty_snapshot).is_ok());
}

#[test]
fn snapshot_without_meta_or_membership_is_rejected() {
    let mut m = snapshot_wire(0, 4, b"abcd", true);
    let Some(Body::Snapshot(s)) = m.body.as_mut() else { unreachable!() };
    s.meta.as_mut().unwrap().conf = None;
    assert_eq!(Message::try_from(m.clone()), Err(ConvertError::MissingField("SnapshotMeta.conf")));
    let Some(Body::Snapshot(s)) = m.body.as_mut() else { unreachable!() };
    s.meta = None;
    assert_eq!(Message::try_from(m), Err(ConvertError::MissingField("SnapshotChunk.meta")));
}

#[test]
fn snapshot_voters_must_be_distinct_and_nonzero() {
    let with_voters = |voters: Vec<u64>| {
        let mut m = snapshot_wire(0, 4, b"abcd", true);
        let Some(Body::Snapshot(s)) = m.body.as_mut() else { unreachable!() };
        s.meta.as_mut().unwrap().conf = Some(pb::ConfState { voters, ..Default::default() });
        Message::try_from(m)
    };
    assert_eq!(with_voters(vec![1, 2, 1]), Err(ConvertError::DuplicateVoter(1)));
    assert_eq!(with_voters(vec![1, 0]), Err(ConvertError::ZeroNodeId("ConfState.voters")));
    let with_conf = |conf: pb::ConfState| {
        let mut m = snapshot_wire(0, 4, b"abcd", true);
        let Some(Body::Snapshot(s)) = m.body.as_mut() else { unreachable!() };
        s.meta.as_mut().unwrap().conf = Some(conf);
        Message::try_from(m)
    };
    let learner_voter =
        pb::ConfState { voters: vec![1, 2], learners: vec![2], ..Default::default() };
    assert_eq!(with_conf(learner_voter), Err(ConvertError::LearnerIsVoter(2)));
    let zero_learner = pb::ConfState { voters: vec![1], learners: vec![0], ..Default::default() };
    assert_eq!(with_conf(zero_learner), Err(ConvertError::ZeroNodeId("ConfState.learners")));
}

#[test]
fn one_bad_message_rejects_the_whole_batch() {
    let mut batch = pb::MessageBatch::from_raft(1, &one_of_each_kind());
    batch.messages[3].body = None;
    assert_eq!(batch.into_raft(), Err(ConvertError::MissingBody));
}

#[test]
fn errors_read_as_sentences() {
    let e = ConvertError::EntriesNotContiguous { expected_index: 7, found_index: 9 };
    assert_eq!(e.to_string(), "append entries are not contiguous: expected index 7, found 9");
}

/// Whatever arrives, decoding and converting return; they never panic. Mutates valid
/// encodings (flipped, truncated, spliced bytes) with a fixed-seed generator, so a
/// failure replays.
#[test]
fn corrupted_bytes_never_panic() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*: good enough to pick positions and bytes.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let originals: Vec<Vec<u8>> =
        one_of_each_kind().iter().map(|m| pb::Message::from(m).encode_to_vec()).collect();
    let mut decoded_ok = 0;
    for round in 0..20_000 {
        let mut bytes = originals[round % originals.len()].clone();
        for _ in 0..1 + next() % 3 {
            let pos = (next() % (bytes.len() as u64 + 1)) as usize;
            match next() % 3 {
                0 if pos < bytes.len() => bytes[pos] = next() as u8,
                1 => bytes.truncate(pos),
                _ => bytes.insert(pos, next() as u8),
            }
        }
        if let Ok(m) = pb::Message::decode(bytes.as_slice()) {
            decoded_ok += 1;
            let _ = Message::try_from(m);
        }
    }
    assert!(decoded_ok > 1000, "the mutations should mostly leave decodable input");
}
