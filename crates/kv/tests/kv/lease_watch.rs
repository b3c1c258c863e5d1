//! Leases (grant, attach, revoke deletes at one revision, snapshots) and the event
//! listing that watches are served from.

use crate::common::*;
use kv::*;

fn grant(n: &mut Node, id: i64, ttl_secs: i64) -> Result<LeaseGrantResponse, KvError> {
    match n.op(Op::LeaseGrant { id, ttl_secs }) {
        Response::LeaseGranted(g) => Ok(g),
        Response::Error(e) => Err(e),
        other => panic!("unexpected {other:?}"),
    }
}

fn revoke(n: &mut Node, id: i64) -> Result<LeaseRevokeResponse, KvError> {
    match n.op(Op::LeaseRevoke { id }) {
        Response::LeaseRevoked(r) => Ok(r),
        Response::Error(e) => Err(e),
        other => panic!("unexpected {other:?}"),
    }
}

fn put_leased(n: &mut Node, key: &str, value: &str, lease: i64) -> Response {
    n.op(Op::Put(PutRequest { lease, ..put_req(key, value) }))
}

fn lease_keys(n: &Node, id: i64) -> Vec<String> {
    let t = n.sm.lease_time_to_live(id, true).unwrap();
    t.keys.into_iter().map(|k| String::from_utf8(k).unwrap()).collect()
}

pub(crate) fn all_events(n: &Node, from: u64, prev_kv: bool) -> Result<EventBatch, KvError> {
    n.sm.events(&[0], &[0], from, u64::MAX, prev_kv, u64::MAX)
}

pub(crate) fn describe(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let key = String::from_utf8(e.kv.key.clone()).unwrap();
            match e.kind {
                EventKind::Put => format!(
                    "{}:put {key}={}",
                    e.kv.mod_revision,
                    String::from_utf8(e.kv.value.clone()).unwrap()
                ),
                EventKind::Delete => format!("{}:del {key}", e.kv.mod_revision),
            }
        })
        .collect()
}

#[test]
fn grant_assigns_unique_ids_and_refuses_a_taken_one() {
    let mut n = Node::new();
    let a = grant(&mut n, 0, 10).unwrap();
    assert_eq!(a.id, 1, "an assigned id is the log index of the grant");
    assert_eq!(a.ttl_secs, 10);
    // A client takes the id the next auto grant would get: the machine steps over it.
    assert_eq!(grant(&mut n, 3, 5).unwrap().id, 3);
    assert_eq!(grant(&mut n, 0, 5).unwrap().id, 4);
    assert_eq!(grant(&mut n, 3, 5), Err(KvError::LeaseExists { id: 3 }));
    assert_eq!(
        grant(&mut n, 9, LEASE_TTL_MAX_SECS + 1),
        Err(KvError::LeaseTtlTooLarge { ttl_secs: LEASE_TTL_MAX_SECS + 1 })
    );
    assert_eq!(grant(&mut n, 0, 0).unwrap().ttl_secs, 1, "a TTL is at least one second");
    assert_eq!(n.sm.revision(), INITIAL_REVISION, "grants do not bump the revision");
    let ids: Vec<i64> = n.sm.leases().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![1, 3, 4, 6]);
}

#[test]
fn a_put_naming_a_missing_lease_fails_and_changes_nothing() {
    let mut n = Node::new();
    n.put("k", "v");
    let before = n.sm.clone();
    assert_eq!(
        put_leased(&mut n, "k", "w", 42),
        Response::Error(KvError::LeaseNotFound { id: 42 })
    );
    // Also inside a transaction, after an earlier write of the same branch.
    let txn = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Put(PutRequest { lease: 42, ..put_req("b", "2") }),
        ],
        ..Default::default()
    };
    assert_eq!(n.txn(txn), Err(KvError::LeaseNotFound { id: 42 }));
    let mut after = n.sm.clone();
    assert_eq!(after.revision(), before.revision());
    assert_eq!(after.get(b"a"), None);
    // Only the applied index moved.
    let probe = Command::new(Op::Get { key: b"k".to_vec() });
    let mut before = before;
    before.apply_command(100, &probe);
    after.apply_command(100, &probe);
    assert_eq!(before, after);
}

#[test]
fn revoke_deletes_every_attached_key_at_one_revision() {
    let mut n = Node::new();
    let lease = grant(&mut n, 0, 30).unwrap().id;
    for key in ["a", "b", "d"] {
        assert!(matches!(put_leased(&mut n, key, "v", lease), Response::Put(_)));
    }
    n.put("c", "unleased");
    // Overwriting without the lease detaches; ignore_lease keeps it.
    n.put("d", "detached");
    let keep = PutRequest { ignore_lease: true, ..put_req("b", "kept") };
    assert!(matches!(n.op(Op::Put(keep)), Response::Put(_)));
    assert_eq!(lease_keys(&n, lease), vec!["a", "b"]);
    let before = n.sm.revision();
    let r = revoke(&mut n, lease).unwrap();
    assert_eq!((r.revision, r.deleted, r.id), (before + 1, 2, lease));
    assert_eq!(n.value("a"), None);
    assert_eq!(n.value("b"), None);
    assert_eq!(n.value("c").as_deref(), Some("unleased"));
    assert_eq!(n.value("d").as_deref(), Some("detached"));
    let events = all_events(&n, r.revision, true).unwrap();
    assert_eq!(
        describe(&events.events),
        vec![format!("{0}:del a", r.revision), format!("{0}:del b", r.revision)]
    );
    assert_eq!(events.events[1].prev_kv.as_ref().unwrap().value, b"kept");
    assert_eq!(revoke(&mut n, lease), Err(KvError::LeaseNotFound { id: lease }));
    assert!(n.sm.leases().is_empty());
}

#[test]
fn revoking_a_lease_without_keys_keeps_the_revision() {
    let mut n = Node::new();
    let lease = grant(&mut n, 7, 30).unwrap().id;
    assert!(matches!(put_leased(&mut n, "k", "v", lease), Response::Put(_)));
    n.delete("k", &[]);
    assert!(lease_keys(&n, lease).is_empty(), "a delete detaches the key");
    let before = n.sm.revision();
    assert_eq!(revoke(&mut n, lease).unwrap().revision, before);
}

#[test]
fn a_failed_txn_leaves_the_lease_attachments_alone() {
    let mut n = Node::new();
    let lease = grant(&mut n, 5, 30).unwrap().id;
    assert!(matches!(put_leased(&mut n, "k", "v", lease), Response::Put(_)));
    let txn = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("k", "unleased")),
            RequestOp::Put(PutRequest { ignore_value: true, ..put_req("missing", "") }),
        ],
        ..Default::default()
    };
    assert!(matches!(n.txn(txn), Err(KvError::KeyNotFound { .. })));
    assert_eq!(lease_keys(&n, lease), vec!["k"]);
}

#[test]
fn time_to_live_and_keep_alive_through_the_log_report_the_granted_ttl() {
    let mut n = Node::new();
    let lease = grant(&mut n, 0, 12).unwrap().id;
    assert!(matches!(put_leased(&mut n, "x", "1", lease), Response::Put(_)));
    match n.op(Op::LeaseTimeToLive { id: lease, keys: true }) {
        Response::LeaseTtl(t) => {
            assert_eq!((t.id, t.ttl_secs, t.granted_ttl_secs), (lease, 12, 12));
            assert_eq!(t.keys, vec![b"x".to_vec()]);
        }
        other => panic!("{other:?}"),
    }
    match n.op(Op::LeaseKeepAlive { id: lease }) {
        Response::LeaseTtl(t) => assert!(t.keys.is_empty() && t.granted_ttl_secs == 12),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        n.op(Op::LeaseKeepAlive { id: 999 }),
        Response::Error(KvError::LeaseNotFound { id: 999 })
    );
}

#[test]
fn events_list_puts_and_deletes_in_revision_order_with_prev_kv() {
    let mut n = Node::new();
    n.put("a", "1"); // 2
    n.put("b", "1"); // 3
    n.put("a", "2"); // 4
    n.delete("a", &[]); // 5
    n.put("zz", "1"); // 6
    let all = all_events(&n, 2, true).unwrap();
    assert_eq!(
        describe(&all.events),
        vec!["2:put a=1", "3:put b=1", "4:put a=2", "5:del a", "6:put zz=1"]
    );
    assert_eq!((all.next_revision, all.revision), (7, 6));
    assert_eq!(all.events[0].prev_kv, None);
    assert_eq!(all.events[2].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(all.events[3].prev_kv.as_ref().unwrap().value, b"2");
    let del = &all.events[3].kv;
    assert_eq!((del.create_revision, del.version, del.value.len()), (0, 0, 0));
    assert!(all_events(&n, 2, false).unwrap().events.iter().all(|e| e.prev_kv.is_none()));

    // One key, a prefix, a half-open range; and a window of revisions.
    let one = n.sm.events(b"a", &[], 2, u64::MAX, false, 1000).unwrap();
    assert_eq!(describe(&one.events), vec!["2:put a=1", "4:put a=2", "5:del a"]);
    let prefix = n.sm.events(b"z", &prefix_end(b"z"), 2, u64::MAX, false, 1000).unwrap();
    assert_eq!(describe(&prefix.events), vec!["6:put zz=1"]);
    let span = n.sm.events(b"a", b"b", 3, 4, false, 1000).unwrap();
    assert_eq!((describe(&span.events), span.next_revision), (vec!["4:put a=2".into()], 5));

    // Nothing yet at a future revision: an empty batch that waits there.
    let future = all_events(&n, 9, false).unwrap();
    assert!(future.events.is_empty());
    assert_eq!(future.next_revision, 9);
}

#[test]
fn a_budget_stops_between_revisions_never_inside_one() {
    let mut n = Node::new();
    let txn = TxnRequest {
        success: (0..5).map(|i| RequestOp::Put(put_req(&format!("k{i}"), "v"))).collect(),
        ..Default::default()
    };
    n.txn(txn).unwrap(); // 5 changes at revision 2
    n.put("k0", "w"); // 3
    let first = n.sm.events(&[0], &[0], 2, u64::MAX, false, 2).unwrap();
    assert_eq!(first.events.len(), 5, "the whole of revision 2, though over budget");
    assert_eq!(first.next_revision, 3);
    let rest = n.sm.events(&[0], &[0], first.next_revision, u64::MAX, false, 2).unwrap();
    assert_eq!(describe(&rest.events), vec!["3:put k0=w"]);
    assert_eq!(rest.next_revision, 4);
}

/// A single-key watch from an old revision used to load the key's whole history in
/// one call, whatever the budget (a hot key with a long history made one catch-up
/// query as slow as the history is long). The budget holds for one key too, still
/// never splitting a revision, and resuming from `next_revision` gets the rest.
#[test]
fn a_budget_holds_for_a_single_key_and_resuming_gets_the_rest() {
    let mut n = Node::new();
    for i in 0..10 {
        n.put("hot", &i.to_string()); // revisions 2..=11
        n.put("cold", &i.to_string());
    }
    // A nested delete after a sibling's put of the same key: two changes of
    // `hot` at one revision (22), which a budget must not split.
    let nested =
        |op: RequestOp| RequestOp::Txn(TxnRequest { success: vec![op], ..Default::default() });
    let del = DeleteRangeRequest { key: b"hot".to_vec(), ..Default::default() };
    let txn = TxnRequest {
        success: vec![
            nested(RequestOp::Put(put_req("hot", "x"))),
            nested(RequestOp::DeleteRange(del)),
        ],
        ..Default::default()
    };
    n.txn(txn).unwrap();
    let whole = n.sm.events(b"hot", &[], 2, u64::MAX, false, u64::MAX).unwrap();
    assert_eq!(whole.events.len(), 12);
    let first = n.sm.events(b"hot", &[], 2, u64::MAX, false, 3).unwrap();
    assert_eq!(describe(&first.events), describe(&whole.events[..3]));
    assert_eq!(first.next_revision, 8, "hot's 4th change is at revision 8");
    let mut sizes = vec![first.events.len()];
    let mut got = first.events;
    let mut from = first.next_revision;
    while from <= n.sm.revision() {
        let batch = n.sm.events(b"hot", &[], from, u64::MAX, false, 2).unwrap();
        assert!(batch.next_revision > from);
        from = batch.next_revision;
        sizes.push(batch.events.len());
        got.extend(batch.events);
    }
    assert_eq!(got, whole.events);
    // The last batch, 20 then both changes of 22, goes over the budget of 2
    // rather than split revision 22.
    assert_eq!(sizes, vec![3, 2, 2, 2, 3]);
}

/// etcd's compaction at revision c keeps, of each key, its last change at or below
/// c unless that is a delete; so a watch from c still gets the puts made at c
/// (without previous key-values: c - 1 is compacted), and only a watch from below c
/// is refused, naming c. Found by the etcdctl compatibility suite, where raftkv
/// refused a watch from the compact revision that etcd served.
#[test]
fn a_watch_from_the_compact_revision_gets_its_puts_and_below_it_is_compacted() {
    // Pruning one entry per apply, so the compaction is still under way at first.
    let mut n = Node::with_config(Config { prune_entries_per_apply: 1, ..Config::default() });
    for i in 0..6 {
        n.put("k", &i.to_string()); // revisions 2..=7
    }
    n.put("d", "gone-at-8"); // 8
    n.txn(TxnRequest {
        success: vec![
            RequestOp::Put(put_req("k", "at-9")),
            RequestOp::DeleteRange(DeleteRangeRequest { key: "d".into(), ..Default::default() }),
            RequestOp::Put(put_req("a", "new-at-9")),
        ],
        ..Default::default()
    })
    .unwrap(); // 9
    n.put("k", "at-10"); // 10
    assert!(matches!(n.op(Op::Compact { revision: 9 }), Response::Compact(_)));

    let expected = vec!["9:put k=at-9", "9:put a=new-at-9", "10:put k=at-10"];
    for pruning_done in [false, true] {
        for from in [2, 8] {
            assert_eq!(
                all_events(&n, from, true),
                Err(KvError::Compacted { requested: from, compact_revision: 9 })
            );
        }
        let at = all_events(&n, 9, true).unwrap();
        assert_eq!(describe(&at.events), expected, "pruning done: {pruning_done}");
        assert_eq!(at.events[0].prev_kv, None, "revision 8 is compacted");
        assert_eq!(at.events[2].prev_kv.as_ref().unwrap().value, b"at-9");
        let one = n.sm.events(b"d", &[], 9, u64::MAX, true, 100).unwrap();
        assert!(one.events.is_empty(), "the delete at 9 is compacted away");
        let k = n.sm.events(b"k", &[], 9, u64::MAX, true, 100).unwrap();
        assert_eq!(describe(&k.events), vec!["9:put k=at-9", "10:put k=at-10"]);
        // A range read at the compact revision works too, as in etcd.
        let r = n.range(RangeRequest { revision: 9, ..RangeRequest::all() }).unwrap();
        assert_eq!(keys(&r), vec!["a", "k"]);
        // Finish pruning: what a watch sees does not depend on it.
        while !pruning_done && n.sm.history_len() > 3 {
            n.op(Op::Get { key: b"k".to_vec() });
        }
    }
    assert_eq!(n.sm.history_len(), 3, "k at 9 and 10, a at 9");
}

/// etcd numbers the changes of a revision (main, sub) in the order the transaction
/// makes them, and a watcher gets them in that order: a txn that puts z, puts b,
/// deletes [m, o) (holding m and n) and puts c is seen as z, b, m, n, c by etcd 3.4
/// (checked against a real etcd). A delete range and a lease revoke go in key order.
/// raftkv used to list the events of a revision in key order.
#[test]
fn the_events_of_a_revision_come_in_the_order_its_operations_made_them() {
    let mut n = Node::new();
    n.put("m", "1"); // 2
    n.put("n", "1"); // 3
    let lease = grant(&mut n, 0, 60).unwrap().id;
    for key in ["l3", "l1", "l2"] {
        put_leased(&mut n, key, "v", lease); // 4, 5, 6
    }
    let nested = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("y", "nested")),
            RequestOp::Put(put_req("e", "nested")),
        ],
        ..Default::default()
    };
    let txn = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("z", "1")),
            RequestOp::Put(put_req("b", "1")),
            RequestOp::Range(RangeRequest::all()),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "m".into(),
                range_end: "o".into(),
                prev_kv: false,
            }),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "nothing".into(),
                ..Default::default()
            }),
            RequestOp::Txn(nested),
            RequestOp::Put(put_req("c", "1")),
        ],
        ..Default::default()
    };
    assert_eq!(n.txn(txn).unwrap().revision, 7);
    revoke(&mut n, lease).unwrap(); // 8
    let order = vec![
        "7:put z=1",
        "7:put b=1",
        "7:del m",
        "7:del n",
        "7:put y=nested",
        "7:put e=nested",
        "7:put c=1",
        "8:del l1",
        "8:del l2",
        "8:del l3",
    ];
    assert_eq!(describe(&all_events(&n, 7, false).unwrap().events), order);
    // A range of keys keeps the order; a budget never splits the revision.
    let some = n.sm.events(b"b", b"n", 7, u64::MAX, false, 1).unwrap();
    assert_eq!(describe(&some.events), vec!["7:put b=1", "7:del m", "7:put e=nested", "7:put c=1"]);
    assert_eq!(some.next_revision, 8);
    // The order is replicated state: a snapshot keeps it.
    let restored = StateMachine::restore(&snapshot_bytes(&n.sm)[..]).unwrap();
    assert_eq!(restored, n.sm);
    let copy = Node { sm: restored, index: n.index };
    assert_eq!(describe(&all_events(&copy, 7, false).unwrap().events), order);
}

/// etcd refuses a txn that changes one key twice at one level (a put twice, or a put
/// and a delete of it, in either order) as "duplicate key". (Sibling nested txns may:
/// a put in one and a delete in a later one is allowed, as in etcd; both changes are
/// events of the revision, in operation order.)
#[test]
fn a_txn_that_changes_a_key_twice_is_refused() {
    let mut n = Node::new();
    n.put("a", "1");
    let del_a =
        || RequestOp::DeleteRange(DeleteRangeRequest { key: "a".into(), ..Default::default() });
    for success in [
        vec![RequestOp::Put(put_req("q", "1")), RequestOp::Put(put_req("q", "2"))],
        vec![del_a(), RequestOp::Put(put_req("a", "2"))],
        vec![RequestOp::Put(put_req("a", "2")), del_a()],
    ] {
        let refused = n.txn(TxnRequest { success, ..Default::default() });
        assert!(matches!(refused, Err(KvError::DuplicateKeyInTxn { .. })), "{refused:?}");
    }
    assert_eq!(n.sm.revision(), 2);
}

/// The event index against a reference built from range reads alone: the events at
/// revision r are the keys whose state differs between r - 1 and r.
#[test]
fn events_agree_with_the_difference_of_consecutive_revisions() {
    let mut rng = Rng::new(7);
    let mut n = Node::new();
    let lease = grant(&mut n, 0, 60).unwrap().id;
    for step in 0..300 {
        let key = format!("k{}", rng.below(16));
        match rng.below(6) {
            0 => {
                n.delete(&key, if rng.chance(30) { &b"k9"[..] } else { &[] });
            }
            1 => {
                put_leased(&mut n, &key, &step.to_string(), lease);
            }
            2 if rng.chance(10) => {
                revoke(&mut n, lease).ok();
                grant(&mut n, lease, 60).unwrap();
            }
            _ => {
                n.put(&key, &step.to_string());
            }
        }
    }
    let mut expected = Vec::new();
    let at = |rev: u64| {
        let r = n.sm.range(&RangeRequest { revision: rev, ..RangeRequest::all() }).unwrap();
        r.kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    for rev in 2..=n.sm.revision() {
        let (before, now) = (at(rev - 1), at(rev));
        let keys: std::collections::BTreeSet<_> = before.keys().chain(now.keys()).collect();
        for key in keys {
            match (before.get(key), now.get(key)) {
                (_, Some(kv)) if kv.mod_revision == rev => expected.push(Event {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                    prev_kv: before.get(key).cloned(),
                }),
                (Some(prev), None) => expected.push(Event {
                    kind: EventKind::Delete,
                    kv: KeyValue { key: key.clone(), mod_revision: rev, ..Default::default() },
                    prev_kv: Some(prev.clone()),
                }),
                _ => {}
            }
        }
    }
    let mut got = Vec::new();
    let mut from = 2;
    while from <= n.sm.revision() {
        let batch = n.sm.events(&[0], &[0], from, u64::MAX, true, 7).unwrap();
        assert!(batch.next_revision > from);
        from = batch.next_revision;
        got.extend(batch.events);
    }
    assert_eq!(got, expected);
}

#[test]
fn leases_survive_a_snapshot_and_revoke_the_same_keys_after_it() {
    let mut n = Node::new();
    let a = grant(&mut n, 0, 30).unwrap().id;
    let b = grant(&mut n, 77, 5).unwrap().id;
    put_leased(&mut n, "a1", "v", a);
    put_leased(&mut n, "a2", "v", a);
    put_leased(&mut n, "b1", "v", b);
    put_leased(&mut n, "a2", "moved", b);
    n.put("free", "v");
    let bytes = snapshot_bytes(&n.sm);
    let restored = StateMachine::restore(&bytes[..]).unwrap();
    assert_eq!(restored, n.sm, "leases, attachments and the event index rebuilt identically");
    assert_eq!(snapshot_bytes(&restored), bytes);
    assert_eq!(restored.leases(), vec![(a, 30), (b, 5)]);
    let mut copy = Node { sm: restored, index: n.index };
    assert_eq!(lease_keys(&copy, b), vec!["a2", "b1"]);
    assert_eq!(revoke(&mut copy, b), revoke(&mut n, b));
    assert_eq!(copy.sm, n.sm);
    assert_eq!(all_events(&copy, 2, true), all_events(&n, 2, true));
}

#[test]
fn a_version_1_snapshot_without_leases_is_still_read() {
    let mut n = Node::new();
    n.put("k", "v");
    let current = snapshot_bytes(&n.sm);
    let v3 = as_version_4(&current);
    // Version 1 = the current version without the entry's sub-revision (it follows
    // the revision), the lease count and the alarm count (zero of each here), re-sealed.
    // Header: magic 8 + version 1 + 3 u64 + 6 u64 config + cursor flag 1 + 2 u64;
    // then key length 4, key "k", revision 8, sub-revision 8.
    let sub_at = 8 + 1 + 24 + 48 + 1 + 16 + 4 + 1 + 8;
    assert_eq!(&v3[sub_at - 9..sub_at], &[&b"k"[..], &2u64.to_le_bytes()].concat()[..]);
    assert_eq!(&v3[sub_at..sub_at + 8], &0u64.to_le_bytes());
    // The current format ends with the lease count and the alarm count (version 4).
    let body_end = v3.len() - 4 - 16;
    assert_eq!(&v3[body_end..v3.len() - 4], &[0u8; 16]);
    let mut v1 = [&v3[..sub_at], &v3[sub_at + 8..body_end]].concat();
    v1[8] = 1;
    let crc = crc32c::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    let restored = StateMachine::restore(&v1[..]).unwrap();
    assert_eq!(restored, n.sm);
    assert_eq!(snapshot_bytes(&restored), current, "re-written in the current format");
}

#[test]
fn lease_commands_responses_and_errors_round_trip_through_the_codec() {
    for op in [
        Op::LeaseGrant { id: -3, ttl_secs: 60 },
        Op::LeaseRevoke { id: 9 },
        Op::LeaseKeepAlive { id: i64::MAX },
        Op::LeaseTimeToLive { id: 1, keys: true },
    ] {
        let c = Command::with_session(4, 5, op);
        assert_eq!(Command::decode(&c.encode()), Ok(c));
    }
    for r in [
        Response::LeaseGranted(LeaseGrantResponse { revision: 3, id: 7, ttl_secs: 10 }),
        Response::LeaseRevoked(LeaseRevokeResponse { revision: 4, id: 7, deleted: 2 }),
        Response::LeaseTtl(LeaseTtlResponse {
            revision: 5,
            id: 7,
            ttl_secs: 3,
            granted_ttl_secs: 10,
            keys: vec![b"a".to_vec(), Vec::new()],
        }),
        Response::Error(KvError::LeaseNotFound { id: 7 }),
        Response::Error(KvError::LeaseExists { id: -7 }),
        Response::Error(KvError::LeaseTtlTooLarge { ttl_secs: i64::MAX }),
    ] {
        assert_eq!(Response::decode(&r.encode()), Ok(r));
    }
}

/// A value of about 100 KiB that names its writer, so events can be told apart.
fn large_value(tag: &str) -> String {
    format!("{tag}:{}", "v".repeat(100 * 1024))
}

/// Every batch of `key`..`range_end` from revision 2 on, each within `bytes`.
fn batches_within(
    n: &Node,
    key: &[u8],
    range_end: &[u8],
    prev_kv: bool,
    bytes: u64,
) -> Vec<EventBatch> {
    let limits = EventLimits { changes: u64::MAX, bytes };
    let mut batches = Vec::new();
    let mut from = 2;
    while from <= n.sm.revision() {
        let batch = n.sm.events_within(key, range_end, from, u64::MAX, prev_kv, limits).unwrap();
        assert!(batch.next_revision > from, "a batch always makes progress");
        from = batch.next_revision;
        batches.push(batch);
    }
    batches
}

/// Each batch but the last stopped at the byte budget, at a revision boundary:
/// below the budget before its last revision, at or past it with it.
fn assert_stopped_at_budget(batches: &[EventBatch], bytes: u64) {
    let (last, full) = batches.split_last().unwrap();
    for batch in full {
        let last_rev = batch.events.last().unwrap().kv.mod_revision;
        let before: u64 = batch
            .events
            .iter()
            .filter(|e| e.kv.mod_revision < last_rev)
            .map(Event::payload_bytes)
            .sum();
        let total: u64 = batch.events.iter().map(Event::payload_bytes).sum();
        assert!(before < bytes, "went on past the budget: {before} >= {bytes}");
        assert!(total >= bytes, "stopped below the budget: {total} < {bytes}");
        assert!(batch.next_revision > last_rev, "a revision is never split");
    }
    assert!(!last.events.is_empty());
}

#[test]
fn a_key_catch_up_stops_at_the_byte_budget_and_resumes_with_every_event_once() {
    let mut n = Node::new();
    for i in 0..30 {
        n.put("big", &large_value(&i.to_string())); // revisions 2, 4, ..
        n.put("other", &large_value("other"));
    }
    let budget = 1 << 20;
    for prev_kv in [false, true] {
        let whole = n.sm.events(b"big", &[], 2, u64::MAX, prev_kv, u64::MAX).unwrap();
        assert_eq!(whole.events.len(), 30);
        let batches = batches_within(&n, b"big", &[], prev_kv, budget);
        // 11 values of 100 KiB reach a MiB (11, 11, 8); with previous values
        // 6 events do (the first has none): 5 batches of 6.
        let expected = if prev_kv { 5 } else { 3 };
        assert_eq!(batches.len(), expected, "prev_kv {prev_kv}");
        assert_stopped_at_budget(&batches, budget);
        let got: Vec<Event> = batches.into_iter().flat_map(|b| b.events).collect();
        assert_eq!(got, whole.events);
    }
}

#[test]
fn a_range_catch_up_stops_at_the_byte_budget_and_never_splits_a_revision() {
    let mut n = Node::new();
    for i in 0..20 {
        n.put(&format!("r/{i}"), &large_value(&i.to_string()));
        n.put("s", &large_value("outside the range"));
        // Three large puts at one revision: a batch takes them all or none.
        let puts = (0..3)
            .map(|j| RequestOp::Put(put_req(&format!("r/t{j}"), &large_value(&i.to_string()))))
            .collect();
        n.txn(TxnRequest { success: puts, ..Default::default() }).unwrap();
    }
    let budget = 1 << 20;
    let whole = n.sm.events(b"r/", b"r0", 2, u64::MAX, true, u64::MAX).unwrap();
    assert_eq!(whole.events.len(), 80);
    let batches = batches_within(&n, b"r/", b"r0", true, budget);
    assert!(batches.len() > 5, "{} batches", batches.len());
    assert_stopped_at_budget(&batches, budget);
    let got: Vec<Event> = batches.into_iter().flat_map(|b| b.events).collect();
    assert_eq!(got, whole.events);
}

#[test]
fn a_revision_larger_than_the_byte_budget_comes_whole() {
    let mut n = Node::new();
    let puts =
        (0..4).map(|j| RequestOp::Put(put_req(&format!("t{j}"), &large_value("t")))).collect();
    n.txn(TxnRequest { success: puts, ..Default::default() }).unwrap(); // 2
    n.put("t0", &large_value("after")); // 3
    let limits = EventLimits { changes: u64::MAX, bytes: 1000 };
    for (key, range_end) in [(&b"t0"[..], &[][..]), (b"t", b"u")] {
        let first = n.sm.events_within(key, range_end, 2, u64::MAX, false, limits).unwrap();
        let at_two = if range_end.is_empty() { 1 } else { 4 };
        assert_eq!(first.events.len(), at_two);
        assert!(first.events.iter().all(|e| e.kv.mod_revision == 2));
        assert_eq!(first.next_revision, 3);
        let second = n.sm.events_within(key, range_end, 3, u64::MAX, false, limits).unwrap();
        assert_eq!(second.events[0].kv.value, large_value("after").into_bytes());
        assert_eq!(second.events.len(), 1);
        assert_eq!(second.next_revision, 4);
    }
}
