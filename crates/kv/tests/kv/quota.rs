//! The space estimate the quota is measured on, and the replicated alarms: what
//! etcd's NOSPACE alarm refuses (puts, transactions with puts, lease grants) and
//! what it lets through (reads, deletes, compactions, alarm commands).

use crate::common::*;
use kv::*;

fn alarm(action: AlarmAction, member_id: u64, alarm: AlarmType) -> Op {
    Op::Alarm { action, member_id, alarm }
}

fn alarms_of(r: Response) -> Vec<AlarmMember> {
    match r {
        Response::Alarm(a) => a.alarms,
        other => panic!("not an alarm answer: {other:?}"),
    }
}

fn nospace(member_id: u64) -> AlarmMember {
    AlarmMember { member_id, alarm: AlarmType::Nospace }
}

/// What a full rebuild computes: a snapshot restore recounts from scratch.
fn recount(sm: &StateMachine) -> u64 {
    StateMachine::restore(&snapshot_bytes(sm)[..]).unwrap().size_bytes()
}

#[test]
fn every_put_grows_the_estimate_by_its_entry() {
    let mut n = Node::new();
    let empty = n.sm.size_bytes();
    assert_eq!(empty, STATE_BASE_BYTES, "an empty store is never 0");
    let mut last = empty;
    for i in 0..50 {
        let value = "v".repeat(i);
        n.put("key", &value);
        let now = n.sm.size_bytes();
        assert_eq!(now - last, ENTRY_OVERHEAD_BYTES + 3 + i as u64, "put {i}");
        assert_eq!(now, space_cost(&Op::Put(put_req("key", &value))) + last);
        last = now;
    }
    assert_eq!(recount(&n.sm), last);
}

/// The estimate is kept in O(1) per change; after any mix of commands (a failed
/// transaction rolled back, leases granted and revoked with their keys, compaction
/// pruning in steps) it equals a full recount.
#[test]
fn the_incremental_estimate_always_equals_a_full_recount() {
    let mut n = Node::with_config(Config { prune_entries_per_apply: 3, ..Config::default() });
    let mut rng = Rng::new(11);
    for step in 0..400 {
        let key = format!("k{}", rng.below(20));
        let op = match rng.below(9) {
            0 => Op::DeleteRange(DeleteRangeRequest { key: key.into(), ..Default::default() }),
            1 => Op::LeaseGrant { id: 1 + rng.below(4) as i64, ttl_secs: 10 },
            2 => Op::LeaseRevoke { id: 1 + rng.below(4) as i64 },
            3 => Op::Put(PutRequest { lease: 1 + rng.below(4) as i64, ..put_req(&key, "leased") }),
            4 if n.sm.revision() > 5 => Op::Compact { revision: n.sm.revision() - rng.below(4) },
            // A put with ignore_value on a missing key fails after the first put:
            // the transaction is rolled back whole.
            5 => Op::Txn(TxnRequest {
                success: vec![
                    RequestOp::Put(put_req("t", "x")),
                    RequestOp::Put(PutRequest {
                        ignore_value: true,
                        ..put_req(&format!("missing{step}"), "")
                    }),
                ],
                ..Default::default()
            }),
            _ => Op::Put(put_req(&key, &"v".repeat(rng.below(40) as usize))),
        };
        n.op(op);
        assert_eq!(n.sm.size_bytes(), recount(&n.sm), "after step {step}");
    }
}

#[test]
fn compaction_shrinks_the_estimate_as_pruning_goes() {
    let mut n = Node::with_config(Config { prune_entries_per_apply: 1, ..Config::default() });
    for i in 0..100 {
        n.put(&format!("k{}", i % 4), &"x".repeat(100));
    }
    let before = n.sm.size_bytes();
    n.op(Op::Compact { revision: n.sm.revision() });
    // Pruning runs a bounded step per applied command: reads move it on.
    let mut last = before;
    for _ in 0..10 {
        n.op(Op::Get { key: "k0".into() });
        assert!(n.sm.size_bytes() <= last, "never grows while pruning");
        last = n.sm.size_bytes();
    }
    let one_version_per_key = 4 * (ENTRY_OVERHEAD_BYTES + 2 + 100);
    assert_eq!(
        n.sm.size_bytes(),
        STATE_BASE_BYTES + one_version_per_key,
        "only the live versions are left"
    );
    assert!(before > 20 * one_version_per_key, "{before}");
}

#[test]
fn leases_count_toward_the_estimate() {
    let mut n = Node::new();
    n.op(Op::LeaseGrant { id: 5, ttl_secs: 10 });
    assert_eq!(n.sm.size_bytes(), STATE_BASE_BYTES + LEASE_OVERHEAD_BYTES);
    n.op(Op::LeaseRevoke { id: 5 });
    assert_eq!(n.sm.size_bytes(), STATE_BASE_BYTES);
}

#[test]
fn a_transaction_costs_its_costlier_branch_nested_ones_included() {
    let put = |k: &str, v: &str| RequestOp::Put(put_req(k, v));
    let nested = TxnRequest { success: vec![put("n", "1234")], failure: vec![], compare: vec![] };
    let t = TxnRequest {
        compare: vec![],
        success: vec![put("a", "1"), RequestOp::Txn(nested)],
        failure: vec![put("b", "12")],
    };
    let entry = |k: u64, v: u64| ENTRY_OVERHEAD_BYTES + k + v;
    assert_eq!(space_cost(&Op::Txn(t)), entry(1, 1) + entry(1, 4));
    let reads_only = TxnRequest {
        success: vec![RequestOp::Range(RangeRequest::all())],
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::default())],
        compare: vec![],
    };
    assert_eq!(space_cost(&Op::Txn(reads_only)), 0);
    assert_eq!(space_cost(&Op::Compact { revision: 3 }), 0);
    assert_eq!(space_cost(&Op::LeaseGrant { id: 0, ttl_secs: 5 }), LEASE_OVERHEAD_BYTES);
}

/// etcd's Maintenance.Alarm: activate answers the alarm, get lists (all of them for
/// type NONE), deactivate answers the alarm it cleared, or nothing.
#[test]
fn alarms_are_activated_listed_and_deactivated_as_etcd_does() {
    let mut n = Node::new();
    use AlarmAction::*;
    assert_eq!(alarms_of(n.op(alarm(Get, 0, AlarmType::None))), vec![]);
    assert_eq!(alarms_of(n.op(alarm(Activate, 9, AlarmType::Nospace))), vec![nospace(9)]);
    assert_eq!(alarms_of(n.op(alarm(Activate, 9, AlarmType::Nospace))), vec![nospace(9)]);
    assert_eq!(alarms_of(n.op(alarm(Activate, 3, AlarmType::Nospace))), vec![nospace(3)]);
    let corrupt = AlarmMember { member_id: 3, alarm: AlarmType::Corrupt };
    n.op(alarm(Activate, 3, AlarmType::Corrupt));
    assert_eq!(
        alarms_of(n.op(alarm(Get, 0, AlarmType::None))),
        vec![nospace(3), corrupt, nospace(9)]
    );
    assert_eq!(alarms_of(n.op(alarm(Get, 0, AlarmType::Corrupt))), vec![corrupt]);
    assert_eq!(alarms_of(n.op(alarm(Deactivate, 3, AlarmType::Corrupt))), vec![corrupt]);
    assert_eq!(alarms_of(n.op(alarm(Deactivate, 3, AlarmType::Corrupt))), vec![]);
    assert_eq!(alarms_of(n.op(alarm(Activate, 1, AlarmType::None))), vec![], "NONE is no alarm");
    assert_eq!(n.sm.alarms(), vec![nospace(3), nospace(9)]);
    assert!(n.sm.alarm_raised(AlarmType::Nospace));
    assert!(!n.sm.alarm_raised(AlarmType::Corrupt));
}

/// etcd's capped applier: under NOSPACE, writes that may grow the store are refused
/// on every member alike, because the refusal depends on replicated state only.
#[test]
fn nospace_refuses_puts_txns_with_puts_and_grants_and_lets_the_rest_through() {
    let mut n = Node::new();
    n.put("a", "1");
    n.put("b", "2");
    n.op(Op::LeaseGrant { id: 1, ttl_secs: 10 });
    n.op(alarm(AlarmAction::Activate, 7, AlarmType::Nospace));
    let rev = n.sm.revision();
    let refused = |r: Response| assert_eq!(r, Response::Error(KvError::NoSpace));
    refused(n.op(Op::Put(put_req("c", "3"))));
    refused(n.op(Op::Append { key: "a".into(), suffix: "x".into() }));
    refused(n.op(Op::LeaseGrant { id: 2, ttl_secs: 10 }));
    let nested_put = TxnRequest {
        failure: vec![RequestOp::Txn(TxnRequest {
            success: vec![RequestOp::Put(put_req("d", "4"))],
            ..Default::default()
        })],
        ..Default::default()
    };
    assert_eq!(n.txn(nested_put), Err(KvError::NoSpace));
    assert_eq!(n.sm.revision(), rev, "nothing refused changed the store");

    // Reads, deletes, read-only transactions, revokes and compactions go on.
    assert_eq!(keys(&n.range(RangeRequest::all()).unwrap()), ["a", "b"]);
    let read_delete = TxnRequest {
        success: vec![
            RequestOp::Range(RangeRequest::all()),
            RequestOp::DeleteRange(DeleteRangeRequest { key: "b".into(), ..Default::default() }),
        ],
        ..Default::default()
    };
    assert!(n.txn(read_delete).is_ok());
    assert_eq!(n.delete("a", b"").deleted, 1);
    assert!(matches!(n.op(Op::LeaseRevoke { id: 1 }), Response::LeaseRevoked(_)));
    assert!(matches!(n.op(Op::Compact { revision: n.sm.revision() }), Response::Compact(_)));

    // Disarmed: writes work again.
    n.op(alarm(AlarmAction::Deactivate, 7, AlarmType::Nospace));
    n.put("c", "3");
}

#[test]
fn corrupt_refuses_every_command_but_alarms() {
    let mut n = Node::new();
    n.put("a", "1");
    n.op(alarm(AlarmAction::Activate, 2, AlarmType::Corrupt));
    let refused = |r: Response| assert_eq!(r, Response::Error(KvError::Corrupt));
    refused(n.op(Op::Put(put_req("c", "3"))));
    refused(n.op(Op::Get { key: "a".into() }));
    refused(n.op(Op::DeleteRange(DeleteRangeRequest { key: "a".into(), ..Default::default() })));
    refused(n.op(Op::Compact { revision: 2 }));
    n.op(alarm(AlarmAction::Deactivate, 2, AlarmType::Corrupt));
    n.put("c", "3");
}

#[test]
fn a_snapshot_keeps_the_raised_alarms() {
    let mut n = Node::new();
    n.put("a", "1");
    n.op(alarm(AlarmAction::Activate, u64::MAX, AlarmType::Nospace));
    n.op(alarm(AlarmAction::Activate, 4, AlarmType::Corrupt));
    n.op(alarm(AlarmAction::Deactivate, 4, AlarmType::Corrupt));
    let bytes = snapshot_bytes(&n.sm);
    assert_eq!(bytes[8], SNAPSHOT_FORMAT_VERSION);
    let restored = StateMachine::restore(&bytes[..]).unwrap();
    assert_eq!(restored, n.sm);
    assert_eq!(restored.alarms(), vec![nospace(u64::MAX)]);
    let mut r = Node { sm: restored, index: n.index };
    assert_eq!(r.op(Op::Put(put_req("b", "2"))), Response::Error(KvError::NoSpace));
}

/// A version 3 snapshot (the release before alarms) is a version 4 one without the
/// alarm count: it still loads, with no alarm raised.
#[test]
fn a_version_3_snapshot_reads_with_no_alarm() {
    let mut n = Node::new();
    n.put("a", "1");
    n.op(Op::LeaseGrant { id: 3, ttl_secs: 9 });
    let v4 = as_version_4(&snapshot_bytes(&n.sm));
    let body = &v4[..v4.len() - 4 - 8];
    assert_eq!(&v4[v4.len() - 12..v4.len() - 4], &0u64.to_le_bytes(), "no alarms");
    let mut v3 = body.to_vec();
    v3[8] = 3;
    v3.extend_from_slice(&crc32c::crc32c(&v3).to_le_bytes());
    let restored = StateMachine::restore(&v3[..]).unwrap();
    assert_eq!(restored, n.sm);
    assert_eq!(restored.size_bytes(), n.sm.size_bytes());

    // A version 3 snapshot with alarm bytes appended is not valid.
    let mut bad = v4[..v4.len() - 4].to_vec();
    bad[8] = 3;
    bad.extend_from_slice(&crc32c::crc32c(&bad).to_le_bytes());
    assert!(StateMachine::restore(&bad[..]).is_err());
}

#[test]
fn alarms_out_of_order_in_a_snapshot_are_corruption() {
    let mut n = Node::new();
    n.op(alarm(AlarmAction::Activate, 1, AlarmType::Nospace));
    n.op(alarm(AlarmAction::Activate, 2, AlarmType::Nospace));
    let good = as_version_4(&snapshot_bytes(&n.sm));
    // Swap the two alarms (9 bytes each, just before the CRC, in version 4).
    let end = good.len() - 4;
    let mut bad = good[..end - 18].to_vec();
    bad.extend_from_slice(&good[end - 9..end]);
    bad.extend_from_slice(&good[end - 18..end - 9]);
    bad.extend_from_slice(&crc32c::crc32c(&bad).to_le_bytes());
    let e = StateMachine::restore(&bad[..]).unwrap_err().to_string();
    assert!(e.contains("out of order"), "{e}");
}
