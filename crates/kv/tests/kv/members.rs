//! The replicated member table: the two ways in (configuration-change contexts and
//! ordinary commands), snapshots of it, and old snapshots without it.

use crate::common::*;
use kv::*;

fn member(id: u64, port: u16, learner: bool) -> Member {
    Member {
        id,
        name: String::new(),
        peer_urls: vec![format!("http://127.0.0.1:{port}")],
        client_urls: Vec::new(),
        is_learner: learner,
    }
}

/// A store with three seeded members, a learner added by configuration change, one
/// member removed, and an update and a publish through the log.
fn changed() -> Node {
    let mut n = Node::new();
    n.sm.seed_members(&[member(1, 1, false), member(2, 2, false), member(3, 3, false)]);
    n.put("a", "1");
    n.index += 1;
    let added = n.sm.apply_member_change(n.index, &MemberOp::Add(member(9, 9, true)));
    assert_eq!(added, Some(member(9, 9, true)));
    n.index += 1;
    assert!(n.sm.apply_member_change(n.index, &MemberOp::Remove(2)).is_some());
    let update = MemberOp::Update { id: 3, peer_urls: vec!["http://10.0.0.3:1".into()] };
    assert!(matches!(n.op(Op::Member(update)), Response::Member(Some(_))));
    let publish = MemberOp::Publish {
        id: 1,
        name: "m1".into(),
        client_urls: vec!["http://127.0.0.1:2379".into()],
    };
    let Response::Member(Some(m1)) = n.op(Op::Member(publish)) else { panic!("published") };
    assert_eq!(m1.name, "m1");
    n
}

#[test]
fn member_changes_apply_in_log_order_and_removed_ids_are_kept() {
    let n = changed();
    let ids: Vec<u64> = n.sm.members().list().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 3, 9]);
    assert_eq!(n.sm.members().removed(), vec![2]);
    assert_eq!(n.sm.members().get(3).unwrap().peer_urls, vec!["http://10.0.0.3:1"]);
    assert!(n.sm.members().get(9).unwrap().is_learner);
    // Membership is not part of the key space: no revision moved for it.
    assert_eq!(n.sm.revision(), 2);
}

#[test]
fn a_member_op_for_an_unknown_or_removed_member_changes_nothing() {
    let mut n = changed();
    let before = n.sm.members().clone();
    let update = MemberOp::Update { id: 2, peer_urls: vec!["http://x:1".into()] };
    assert_eq!(n.op(Op::Member(update)), Response::Member(None));
    n.index += 1;
    assert_eq!(n.sm.apply_member_change(n.index, &MemberOp::Add(member(2, 7, false))), None);
    assert_eq!(n.sm.members(), &before);
}

#[test]
fn the_member_table_survives_a_snapshot() {
    let n = changed();
    let bytes = snapshot_bytes(&n.sm);
    assert_eq!(bytes[8], SNAPSHOT_FORMAT_VERSION);
    let restored = StateMachine::restore(&bytes[..]).unwrap();
    assert_eq!(restored.members(), n.sm.members());
    assert_eq!(restored, n.sm);
}

/// Version 5 (before the member table) still loads, with an empty table for the node
/// to seed.
#[test]
fn a_version_5_snapshot_reads_with_an_empty_member_table() {
    let mut n = Node::new();
    n.put("a", "1");
    let v5 = as_version_5(&snapshot_bytes(&n.sm));
    let restored = StateMachine::restore(&v5[..]).unwrap();
    assert!(restored.members().is_empty());
    assert_eq!(restored, n.sm);
}

#[test]
fn member_ops_round_trip_through_the_codec_and_garbage_is_an_error() {
    let ops = [
        MemberOp::Add(Member { name: "n".into(), ..member(u64::MAX, 1, true) }),
        MemberOp::Remove(7),
        MemberOp::Promote(8),
        MemberOp::Update { id: 1, peer_urls: vec!["a".into(), "b".into()] },
        MemberOp::Publish { id: 1, name: "x".into(), client_urls: vec![] },
    ];
    for op in ops {
        let bytes = op.encode();
        assert_eq!(MemberOp::decode(&bytes), Ok(op));
        assert!(MemberOp::decode(&bytes[..bytes.len() - 1]).is_err());
    }
    assert!(MemberOp::decode(&[WIRE_FORMAT_VERSION, 99]).is_err());
    let r = Response::Member(Some(member(5, 5, false)));
    assert_eq!(Response::decode(&r.encode()), Ok(r));
}

#[test]
fn seeding_happens_once_and_clearing_forgets_removed_ids() {
    let mut n = changed();
    n.sm.seed_members(&[member(42, 42, false)]);
    assert!(n.sm.members().get(42).is_none(), "a table in use is never re-seeded");
    n.sm.clear_members();
    assert!(n.sm.members().is_empty());
    n.sm.seed_members(&[member(42, 42, false)]);
    assert_eq!(n.sm.members().list(), vec![member(42, 42, false)]);
}
