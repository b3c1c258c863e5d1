//! Snapshots: a frozen view, a restore that rebuilds the identical state, and
//! corruption detected rather than installed.

use crate::common::*;
use kv::*;

/// A state with history, tombstones, a compaction still pruning, and
/// sessions with saved responses.
fn busy_node(seed: u64) -> Node {
    let mut n = Node::with_config(Config { prune_entries_per_apply: 2, ..Config::default() });
    let mut rng = Rng::new(seed);
    let client = match n.op(Op::RegisterSession) {
        Response::SessionRegistered { client_id } => client_id,
        other => panic!("{other:?}"),
    };
    for seq in 1..=60 {
        let key = format!("k{}", rng.below(12));
        let op = match rng.below(4) {
            0 => Op::DeleteRange(DeleteRangeRequest { key: key.into(), ..Default::default() }),
            1 => Op::Append { key: key.into(), suffix: vec![rng.next_u64() as u8] },
            _ => Op::Put(put_req(&key, &format!("v{seq}"))),
        };
        n.apply(Command::with_session(client, seq, op));
    }
    let rev = n.sm.revision() - 10;
    n.op(Op::Compact { revision: rev });
    n
}

#[test]
fn restore_rebuilds_an_identical_state() {
    let n = busy_node(1);
    let bytes = snapshot_bytes(&n.sm);
    let restored = StateMachine::restore(&bytes[..]).unwrap();
    assert_eq!(restored, n.sm);
    assert_eq!(snapshot_bytes(&restored), bytes, "bit-identical re-serialization");
}

/// After a restore, the same further commands give the same responses and
/// the same state as on the original replica.
#[test]
fn restored_replica_continues_identically() {
    let mut original = busy_node(2);
    let mut restored = Node {
        sm: StateMachine::restore(&snapshot_bytes(&original.sm)[..]).unwrap(),
        index: original.index,
    };
    let mut rng = Rng::new(99);
    for i in 0..80 {
        let key = format!("k{}", rng.below(12));
        let op = match rng.below(3) {
            0 => Op::Range(RangeRequest {
                revision: original.sm.compact_revision() + rng.below(5),
                ..RangeRequest::all()
            }),
            1 => Op::DeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: vec![0],
                prev_kv: true,
            }),
            _ => Op::Put(put_req(&key, &format!("w{i}"))),
        };
        assert_eq!(original.op(op.clone()), restored.op(op));
    }
    assert_eq!(original.sm, restored.sm);
}

#[test]
fn the_view_is_frozen_while_apply_goes_on() {
    let mut n = busy_node(3);
    let view = n.sm.snapshot_view();
    let before = snapshot_bytes(&n.sm);
    let applied = view.applied_index();
    for i in 0..50 {
        n.put(&format!("new{i}"), "v");
    }
    let mut from_view = Vec::new();
    view.write_to(&mut from_view).unwrap();
    assert_eq!(from_view, before);
    let restored = StateMachine::restore(&from_view[..]).unwrap();
    assert_eq!(restored.applied_index(), applied);
    assert!(restored.get(b"new0").is_none());
}

#[test]
fn the_view_can_be_written_on_another_thread() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let n = busy_node(4);
    let view = n.sm.snapshot_view();
    assert_send(&view);
    let bytes = std::thread::spawn(move || {
        let mut out = Vec::new();
        view.write_to(&mut out).unwrap();
        out
    })
    .join()
    .unwrap();
    assert_eq!(StateMachine::restore(&bytes[..]).unwrap(), n.sm);
}

/// Flipping any single byte must make restore fail: the structure checks
/// catch some, the CRC32C catches the rest.
#[test]
fn every_flipped_byte_is_detected() {
    let mut n = Node::new();
    n.put("a", "1");
    n.put("a", "2");
    n.delete("a", b"");
    n.put("b", "3");
    n.op(Op::RegisterSession);
    let bytes = snapshot_bytes(&n.sm);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x5a;
        match StateMachine::restore(&bad[..]) {
            Ok(_) => panic!("flip at byte {i} not detected"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn a_flipped_value_byte_is_a_checksum_mismatch() {
    let mut n = Node::new();
    n.put("key", "the-value");
    let mut bytes = snapshot_bytes(&n.sm);
    let at = bytes.windows(9).position(|w| w == b"the-value").unwrap();
    bytes[at] ^= 1;
    let e = StateMachine::restore(&bytes[..]).unwrap_err();
    assert!(matches!(e, SnapshotError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

#[test]
fn truncation_bad_magic_version_and_trailing_bytes_are_named() {
    let bytes = snapshot_bytes(&busy_node(5).sm);
    for len in [0, 5, 9, 40, bytes.len() / 2, bytes.len() - 1] {
        let e = StateMachine::restore(&bytes[..len]).unwrap_err();
        assert!(matches!(e, SnapshotError::Truncated { .. }), "cut at {len}: {e}");
    }
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(StateMachine::restore(&bad[..]), Err(SnapshotError::BadMagic)));
    let mut bad = bytes.clone();
    bad[8] = 9;
    assert!(matches!(
        StateMachine::restore(&bad[..]),
        Err(SnapshotError::UnsupportedVersion { version: 9 })
    ));
    let mut bad = bytes;
    bad.push(0);
    let e = StateMachine::restore(&bad[..]).unwrap_err();
    assert!(matches!(e, SnapshotError::TrailingBytes { .. }), "{e}");
}

#[test]
fn a_corrupt_length_is_refused_without_allocating_it() {
    let mut n = Node::new();
    n.put("k", "v");
    let mut bytes = snapshot_bytes(&n.sm);
    // The first entry's key length sits right after the fixed header:
    // magic 8 + version 1 + 3 u64 + 6 u64 config + cursor flag 1 + 2 u64.
    let at = 8 + 1 + 24 + 48 + 1 + 16;
    assert_eq!(&bytes[at..at + 4], &1u32.to_le_bytes());
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = StateMachine::restore(&bytes[..]).unwrap_err();
    let SnapshotError::Corrupt { offset, what } = &e else { panic!("{e}") };
    assert_eq!(*offset, at as u64 + 4);
    assert!(what.contains("key length"), "{what}");
}

/// The commands behind `fixtures/snapshot-v2.bin`: sessions, a lease, history,
/// transactions that change several keys at one revision (in an operation order
/// unlike key order) and a compaction whose pruning is still under way.
fn v2_fixture_node() -> Node {
    let mut n = Node::with_config(Config { prune_entries_per_apply: 1, ..Config::default() });
    let client = match n.op(Op::RegisterSession) {
        Response::SessionRegistered { client_id } => client_id,
        other => panic!("{other:?}"),
    };
    n.op(Op::LeaseGrant { id: 7, ttl_secs: 30 });
    for (seq, key) in (1..).zip(["m", "b", "m", "y", "c"]) {
        n.apply(Command::with_session(client, seq, Op::Put(put_req(key, &format!("v{seq}")))));
    }
    n.op(Op::Put(PutRequest { lease: 7, ..put_req("l1", "leased") }));
    n.txn(TxnRequest {
        success: vec![
            RequestOp::Put(put_req("z", "t1")),
            RequestOp::Put(put_req("a", "t1")),
            RequestOp::DeleteRange(DeleteRangeRequest { key: "m".into(), ..Default::default() }),
        ],
        ..Default::default()
    })
    .unwrap();
    n.delete("b", b"d");
    n.txn(TxnRequest {
        success: vec![
            RequestOp::Put(put_req("y", "t2")),
            RequestOp::Put(put_req("b", "t2")),
            RequestOp::Put(PutRequest { lease: 7, ..put_req("l2", "leased") }),
        ],
        ..Default::default()
    })
    .unwrap();
    n.put("a", "last");
    let rev = n.sm.revision() - 3;
    n.op(Op::Compact { revision: rev });
    n
}

/// A snapshot written by the previous release (format version 2, before
/// sub-revisions; `fixtures/snapshot-v2.bin`, written by that release (a95d4fe) from
/// [`v2_fixture_node`]) still loads: it reads the same at every revision as the
/// state rebuilt from the same commands, continues identically, and numbers the
/// changes of each old revision in key order, the order that release delivered
/// them in.
#[test]
fn a_version_2_snapshot_from_the_previous_release_is_still_read() {
    let v2 = include_bytes!("fixtures/snapshot-v2.bin");
    assert_eq!((&v2[..8], v2[8]), (&SNAPSHOT_MAGIC[..], 2));
    let mut old = Node { sm: StateMachine::restore(&v2[..]).unwrap(), index: 0 };
    let mut new = v2_fixture_node();
    old.index = new.index;
    assert_eq!(old.sm.applied_index(), new.sm.applied_index());
    assert_eq!((old.sm.revision(), old.sm.compact_revision()), (11, 8));
    assert_eq!(old.sm.history_len(), new.sm.history_len(), "the same pruning progress");
    for rev in 8..=11 {
        let all = RangeRequest { revision: rev, ..RangeRequest::all() };
        assert_eq!(old.sm.range(&all), new.sm.range(&all), "range at {rev}");
    }
    assert_eq!(old.sm.leases(), vec![(7, 30)]);
    assert_eq!(old.sm.session_count(), 1);

    // The multi-key revisions: 8 (put z, put a, delete m) and 10 (put y, put b,
    // put l2). Restored: key order. Applied by this release: operation order.
    let events = |n: &Node| {
        crate::lease_watch::describe(&crate::lease_watch::all_events(n, 8, false).unwrap().events)
    };
    let restored = events(&old);
    assert_eq!(
        restored,
        [
            "8:put a=t1",
            "8:put z=t1",
            "9:del b",
            "9:del c",
            "10:put b=t2",
            "10:put l2=leased",
            "10:put y=t2",
            "11:put a=last"
        ]
    );
    let applied = events(&new);
    assert_eq!(
        applied,
        [
            "8:put z=t1",
            "8:put a=t1",
            "9:del b",
            "9:del c",
            "10:put y=t2",
            "10:put b=t2",
            "10:put l2=leased",
            "11:put a=last"
        ]
    );

    // Both go on alike, and the old state is written back in the current format.
    for n in [&mut old, &mut new] {
        assert!(matches!(n.op(Op::LeaseRevoke { id: 7 }), Response::LeaseRevoked(_)));
        n.txn(TxnRequest {
            success: vec![RequestOp::Put(put_req("p2", "x")), RequestOp::Put(put_req("p1", "x"))],
            ..Default::default()
        })
        .unwrap();
        n.op(Op::Compact { revision: 10 });
    }
    let tail = |n: &Node| {
        crate::lease_watch::describe(&crate::lease_watch::all_events(n, 11, false).unwrap().events)
    };
    assert_eq!(tail(&old), tail(&new));
    assert_eq!(
        tail(&old),
        ["11:put a=last", "12:del l1", "12:del l2", "13:put p2=x", "13:put p1=x"]
    );
    let v3 = snapshot_bytes(&old.sm);
    assert_eq!(v3[8], SNAPSHOT_FORMAT_VERSION);
    assert_eq!(StateMachine::restore(&v3[..]).unwrap(), old.sm);
}

/// Every change of a revision has its own sub-revision; a snapshot where two share
/// one could not have been written by a replica, so it is refused.
#[test]
fn two_entries_at_one_revision_and_sub_revision_are_corrupt() {
    let mut n = Node::new();
    n.txn(TxnRequest {
        success: vec![RequestOp::Put(put_req("b", "1")), RequestOp::Put(put_req("a", "1"))],
        ..Default::default()
    })
    .unwrap();
    let mut bytes = snapshot_bytes(&n.sm);
    // The first entry ("a", the second change) after the fixed header (see
    // a_corrupt_length_is_refused_without_allocating_it): length 4, key, revision 8.
    let sub_at = 8 + 1 + 24 + 48 + 1 + 16 + 4 + 1 + 8;
    assert_eq!(
        &bytes[sub_at - 9..sub_at + 8],
        &[&b"a"[..], &2u64.to_le_bytes(), &1u64.to_le_bytes()].concat()[..]
    );
    bytes[sub_at..sub_at + 8].copy_from_slice(&0u64.to_le_bytes());
    let body_end = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..body_end]);
    bytes[body_end..].copy_from_slice(&crc.to_le_bytes());
    let e = StateMachine::restore(&bytes[..]).unwrap_err();
    let SnapshotError::Corrupt { what, .. } = &e else { panic!("{e}") };
    assert!(what.contains("two entries at revision (2, 0)"), "{what}");
}
