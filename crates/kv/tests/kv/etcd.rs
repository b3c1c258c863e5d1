//! etcd v3 semantics, one rule per test.

use crate::common::*;
use kv::*;

fn compare(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare { key: key.into(), range_end: Vec::new(), result, target }
}

#[test]
fn fresh_store_is_at_revision_one_and_each_put_bumps_by_one() {
    let mut n = Node::new();
    assert_eq!(n.sm.revision(), INITIAL_REVISION);
    assert_eq!(n.put("a", "1").revision, 2);
    assert_eq!(n.put("b", "1").revision, 3);
    assert_eq!(n.put("a", "2").revision, 4);
}

#[test]
fn reads_and_noop_deletes_do_not_bump_the_revision() {
    let mut n = Node::new();
    n.put("a", "1");
    n.range(RangeRequest::all()).unwrap();
    let d = n.delete("zzz", b"");
    assert_eq!((d.deleted, d.revision), (0, 2));
    n.op(Op::Get { key: "a".into() });
    assert_eq!(n.sm.revision(), 2);
}

#[test]
fn a_failed_write_changes_nothing() {
    let mut n = Node::new();
    let r = n.op(Op::Put(put_req("", "v")));
    assert_eq!(r, Response::Error(KvError::EmptyKey));
    let r = n.op(Op::Put(PutRequest {
        key: "missing".into(),
        ignore_value: true,
        ..Default::default()
    }));
    assert!(matches!(r, Response::Error(KvError::KeyNotFound { .. })), "{r:?}");
    assert_eq!(n.sm.revision(), INITIAL_REVISION);
    assert_eq!(n.sm.history_len(), 0);
}

#[test]
fn delete_range_of_many_keys_is_one_revision() {
    let mut n = Node::new();
    for k in ["a1", "a2", "a3", "b"] {
        n.put(k, "v");
    }
    let d = n.delete("a", &prefix_end(b"a"));
    assert_eq!(d.deleted, 3);
    assert_eq!(d.revision, 6);
    assert_eq!(keys(&d_as_range(&d)), ["a1", "a2", "a3"]);
    assert_eq!(keys(&n.range(RangeRequest::all()).unwrap()), ["b"]);
}

fn d_as_range(d: &DeleteRangeResponse) -> RangeResponse {
    RangeResponse { kvs: d.prev_kvs.clone(), ..Default::default() }
}

#[test]
fn version_counts_puts_and_resets_after_delete_with_a_new_create_revision() {
    let mut n = Node::new();
    n.put("k", "1"); // rev 2
    n.put("k", "2"); // rev 3
    let kv = n.sm.get(b"k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    n.delete("k", b""); // rev 4
    assert!(n.sm.get(b"k").is_none());
    n.put("k", "3"); // rev 5
    let kv = n.sm.get(b"k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn put_prev_kv_and_ignore_value_and_ignore_lease() {
    let mut n = Node::new();
    // Leases are enforced: a put may name only a granted one.
    for id in [7, 9] {
        assert!(matches!(n.op(Op::LeaseGrant { id, ttl_secs: 60 }), Response::LeaseGranted(_)));
    }
    n.op(Op::Put(PutRequest {
        key: "k".into(),
        value: "v1".into(),
        lease: 7,
        ..Default::default()
    }));
    let r = n.op(Op::Put(PutRequest {
        key: "k".into(),
        lease: 9,
        prev_kv: true,
        ignore_value: true,
        ..Default::default()
    }));
    let Response::Put(p) = r else { panic!("{r:?}") };
    assert_eq!(p.prev_kv.unwrap().value, b"v1");
    let kv = n.sm.get(b"k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease, kv.version), (&b"v1"[..], 9, 2));
    n.op(Op::Put(PutRequest {
        key: "k".into(),
        value: "v3".into(),
        ignore_lease: true,
        ..Default::default()
    }));
    let kv = n.sm.get(b"k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"v3"[..], 9));
}

#[test]
fn range_end_conventions() {
    let mut n = Node::new();
    for k in ["a", "ab", "abc", "b", "c"] {
        n.put(k, "v");
    }
    // Empty range_end: exactly the key.
    assert_eq!(keys(&n.range(RangeRequest::key("ab")).unwrap()), ["ab"]);
    // "\0": every key >= key.
    let mut r = RangeRequest::key("ab");
    r.range_end = vec![0];
    assert_eq!(keys(&n.range(r).unwrap()), ["ab", "abc", "b", "c"]);
    // key "\0", range_end "\0": everything.
    assert_eq!(n.range(RangeRequest::all()).unwrap().count, 5);
    // Prefix.
    assert_eq!(keys(&n.range(RangeRequest::prefix("a")).unwrap()), ["a", "ab", "abc"]);
    // Half-open [a, b).
    let mut r = RangeRequest::key("ab");
    r.range_end = b"b".to_vec();
    assert_eq!(keys(&n.range(r).unwrap()), ["ab", "abc"]);
    // range_end <= key: empty.
    let mut r = RangeRequest::key("c");
    r.range_end = b"a".to_vec();
    assert_eq!(n.range(r).unwrap().count, 0);
    assert_eq!(prefix_end(b"a\xff\xff"), b"b");
    assert_eq!(prefix_end(b"\xff"), [0]);
}

#[test]
fn limit_sets_more_and_count_counts_everything() {
    let mut n = Node::new();
    for k in ["a", "b", "c", "d"] {
        n.put(k, "v");
    }
    let mut r = RangeRequest::all();
    r.limit = 2;
    let resp = n.range(r.clone()).unwrap();
    assert_eq!((keys(&resp), resp.more, resp.count), (vec!["a".to_string(), "b".into()], true, 4));
    r.limit = 4;
    let resp = n.range(r).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (4, false, 4));
}

#[test]
fn count_only_and_keys_only() {
    let mut n = Node::new();
    n.put("a", "1");
    n.put("b", "2");
    let mut r = RangeRequest::all();
    r.count_only = true;
    let resp = n.range(r).unwrap();
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (0, 2, false));
    let mut r = RangeRequest::all();
    r.keys_only = true;
    let resp = n.range(r).unwrap();
    assert_eq!(keys(&resp), ["a", "b"]);
    assert!(resp.kvs.iter().all(|kv| kv.value.is_empty() && kv.version == 1));
}

/// A range with a limit copies out only what it can return (with filters, one
/// more to know whether more pass), yet `count` is every key in the range, and
/// `more` says whether the filtered result was cut: as a full read cut by hand.
#[test]
fn limit_with_filters_returns_the_first_passing_keys_and_counts_them_all() {
    let mut n = Node::new();
    for i in 0..20 {
        n.put(&format!("k{i:02}"), "v"); // k00 at revision 2 ... k19 at 21
    }
    let filtered = |limit| RangeRequest { limit, min_mod_revision: 12, ..RangeRequest::all() };
    let all = n.range(filtered(0)).unwrap();
    assert_eq!((all.kvs.len(), all.more, all.count), (10, false, 20));
    for limit in [1, 3, 9, 10, 11] {
        let cut = n.range(filtered(limit)).unwrap();
        let expected = &all.kvs[..(limit as usize).min(10)];
        assert_eq!(cut.kvs, expected, "limit {limit}");
        assert_eq!((cut.more, cut.count), (limit < 10, 20), "limit {limit}");
    }
    let count = n.range(RangeRequest { count_only: true, ..filtered(1) }).unwrap();
    assert_eq!((count.kvs.len(), count.more, count.count), (0, false, 20));
}

#[test]
fn sort_and_revision_filters() {
    let mut n = Node::new();
    n.put("a", "3"); // rev 2
    n.put("b", "1"); // rev 3
    n.put("c", "2"); // rev 4
    n.put("a", "4"); // rev 5
    let mut r = RangeRequest::all();
    r.sort_target = SortTarget::Value;
    r.sort_order = SortOrder::Descend;
    assert_eq!(keys(&n.range(r.clone()).unwrap()), ["a", "c", "b"]);
    // A non-key target with no order sorts ascending, as in etcd.
    r.sort_order = SortOrder::None;
    r.sort_target = SortTarget::Mod;
    assert_eq!(keys(&n.range(r.clone()).unwrap()), ["b", "c", "a"]);
    r.sort_target = SortTarget::Key;
    r.sort_order = SortOrder::Descend;
    r.limit = 2;
    let resp = n.range(r).unwrap();
    assert_eq!((keys(&resp), resp.more), (vec!["c".to_string(), "b".into()], true));
    let mut r = RangeRequest::all();
    r.min_mod_revision = 3;
    r.max_create_revision = 3;
    let resp = n.range(r).unwrap();
    assert_eq!(keys(&resp), ["a", "b"]);
    assert_eq!(resp.count, 3, "count is before filters, as in etcd");
}

#[test]
fn reads_at_past_revisions_see_the_history() {
    let mut n = Node::new();
    n.put("k", "1"); // 2
    n.put("k", "2"); // 3
    n.delete("k", b""); // 4
    n.put("k", "3"); // 5
    let at = |n: &mut Node, rev| {
        let mut r = RangeRequest::key("k");
        r.revision = rev;
        n.range(r)
            .unwrap()
            .kvs
            .first()
            .map(|kv| (String::from_utf8(kv.value.clone()).unwrap(), kv.version))
    };
    assert_eq!(at(&mut n, 1), None);
    assert_eq!(at(&mut n, 2), Some(("1".into(), 1)));
    assert_eq!(at(&mut n, 3), Some(("2".into(), 2)));
    assert_eq!(at(&mut n, 4), None);
    assert_eq!(at(&mut n, 5), Some(("3".into(), 1)));
    let mut r = RangeRequest::key("k");
    r.revision = 6;
    assert_eq!(n.range(r), Err(KvError::FutureRevision { requested: 6, current: 5 }));
}

#[test]
fn compaction_rejects_old_reads_and_keeps_the_compacted_revision_readable() {
    let mut n = Node::new();
    n.put("k", "1"); // 2
    n.put("k", "2"); // 3
    n.put("gone", "x"); // 4
    n.delete("gone", b""); // 5
    n.put("k", "3"); // 6
    assert_eq!(
        n.op(Op::Compact { revision: 5 }),
        Response::Compact(CompactResponse { revision: 6 })
    );
    let mut r = RangeRequest::all();
    r.revision = 4;
    assert_eq!(n.range(r.clone()), Err(KvError::Compacted { requested: 4, compact_revision: 5 }));
    r.revision = 5;
    let resp = n.range(r).unwrap();
    assert_eq!(keys(&resp), ["k"]);
    assert_eq!(resp.kvs[0].value, b"2");
    // History below 5 is pruned: k@3 and k@6 remain, "gone" vanishes.
    assert_eq!(n.sm.history_len(), 2);
    assert_eq!(
        n.op(Op::Compact { revision: 5 }),
        Response::Error(KvError::Compacted { requested: 5, compact_revision: 5 })
    );
    assert_eq!(
        n.op(Op::Compact { revision: 7 }),
        Response::Error(KvError::FutureRevision { requested: 7, current: 6 })
    );
}

/// Pruning a large history is spread over later applies, never one long
/// stall; reads are right at every step.
#[test]
fn compaction_prunes_in_bounded_steps() {
    let mut n = Node::with_config(Config { prune_entries_per_apply: 10, ..Config::default() });
    for round in 0..3 {
        for k in 0..50 {
            n.put(&format!("k{k:02}"), &format!("{round}"));
        }
    }
    assert_eq!(n.sm.history_len(), 150);
    let rev = n.sm.revision();
    n.op(Op::Compact { revision: rev });
    assert!(n.sm.history_len() > 50, "one step must not prune everything");
    for _ in 0..20 {
        let resp = n.range(RangeRequest::prefix("k")).unwrap();
        assert_eq!(resp.count, 50);
        assert!(resp.kvs.iter().all(|kv| kv.value == b"2" && kv.version == 3));
    }
    assert_eq!(n.sm.history_len(), 50);
}

#[test]
fn append_concatenates_and_counts_as_a_put() {
    let mut n = Node::new();
    let r = n.op(Op::Append { key: "k".into(), suffix: "ab".into() });
    assert_eq!(r, Response::Append(PutResponse { revision: 2, prev_kv: None }));
    n.op(Op::Append { key: "k".into(), suffix: "cd".into() });
    let kv = n.sm.get(b"k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.version, kv.mod_revision), (&b"abcd"[..], 2, 3));
}

#[test]
fn txn_is_one_revision_and_reads_its_own_writes() {
    let mut n = Node::new();
    n.put("x", "0"); // 2
    let t = TxnRequest {
        compare: vec![compare("x", CompareResult::Equal, CompareTarget::Value("0".into()))],
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Put(put_req("b", "2")),
            RequestOp::Range(RangeRequest::prefix("")),
        ],
        failure: vec![],
    };
    // An empty prefix is an empty key: refused as a whole.
    assert_eq!(n.txn(t.clone()), Err(KvError::EmptyKey));
    let mut t = t;
    t.success[2] = RequestOp::Range(RangeRequest::all());
    let resp = n.txn(t).unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, 3);
    let ResponseOp::Range(r) = &resp.responses[2] else { panic!() };
    assert_eq!(keys(r), ["a", "b", "x"]);
    assert!(r.kvs.iter().filter(|kv| kv.key != b"x").all(|kv| kv.mod_revision == 3));
}

#[test]
fn txn_compare_semantics() {
    let mut n = Node::new();
    n.put("a1", "5"); // 2
    n.put("a2", "7"); // 3
    let holds = |n: &mut Node, c: Compare| {
        n.txn(TxnRequest { compare: vec![c], ..Default::default() }).unwrap().succeeded
    };
    use CompareResult::*;
    use CompareTarget::*;
    assert!(holds(&mut n, compare("a1", Equal, Value("5".into()))));
    assert!(holds(&mut n, compare("a1", Greater, Value("4".into()))));
    assert!(holds(&mut n, compare("a1", Less, ModRevision(3))));
    assert!(holds(&mut n, compare("a1", NotEqual, Version(2))));
    // A missing key: value compares fail, others compare against zero.
    assert!(!holds(&mut n, compare("nope", NotEqual, Value("x".into()))));
    assert!(holds(&mut n, compare("nope", Equal, Version(0))));
    assert!(holds(&mut n, compare("nope", Equal, CreateRevision(0))));
    // Over a range: must hold for every key.
    let mut c = compare("a", Greater, Value("4".into()));
    c.range_end = prefix_end(b"a");
    assert!(holds(&mut n, c.clone()));
    c.target = Value("6".into());
    assert!(!holds(&mut n, c));
    assert_eq!(n.sm.revision(), 3, "read-only txns do not bump");
}

#[test]
fn failed_txn_step_rolls_back_earlier_writes() {
    let mut n = Node::new();
    let t = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Put(PutRequest {
                key: "missing".into(),
                ignore_value: true,
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert!(matches!(n.txn(t), Err(KvError::KeyNotFound { .. })));
    assert_eq!(n.sm.get(b"a"), None);
    assert_eq!(n.sm.revision(), INITIAL_REVISION);
}

#[test]
fn txn_refuses_a_key_written_twice_in_one_branch() {
    let mut n = Node::new();
    let dup = TxnRequest {
        success: vec![RequestOp::Put(put_req("a", "1")), RequestOp::Put(put_req("a", "2"))],
        ..Default::default()
    };
    assert_eq!(n.txn(dup), Err(KvError::DuplicateKeyInTxn { key: b"a".to_vec() }));
    let put_in_deleted_range = TxnRequest {
        failure: vec![
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "a".into(),
                range_end: "b".into(),
                prev_kv: false,
            }),
            RequestOp::Txn(TxnRequest {
                success: vec![RequestOp::Put(put_req("ax", "1"))],
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert!(n.txn(put_in_deleted_range).is_err());
    // etcd's order rule for sibling nested transactions: a delete in a later one does
    // not conflict with a put in an earlier one; the other way round it does.
    let nested_op =
        |op: RequestOp| RequestOp::Txn(TxnRequest { success: vec![op], ..Default::default() });
    let del_x =
        || RequestOp::DeleteRange(DeleteRangeRequest { key: "x".into(), ..Default::default() });
    let put_then_delete = TxnRequest {
        success: vec![nested_op(RequestOp::Put(put_req("x", "1"))), nested_op(del_x())],
        ..Default::default()
    };
    assert!(n.txn(put_then_delete).unwrap().succeeded);
    assert!(n.sm.get(b"x").is_none(), "the later delete ran last");
    let delete_then_put = TxnRequest {
        success: vec![nested_op(del_x()), nested_op(RequestOp::Put(put_req("x", "1")))],
        ..Default::default()
    };
    assert_eq!(n.txn(delete_then_put), Err(KvError::DuplicateKeyInTxn { key: b"x".to_vec() }));
    // The same key in different branches is fine.
    let ok = TxnRequest {
        success: vec![RequestOp::Put(put_req("a", "1"))],
        failure: vec![RequestOp::Put(put_req("a", "2"))],
        ..Default::default()
    };
    assert!(n.txn(ok).unwrap().succeeded);
}

/// etcd evaluates the compares of nested transactions against the state
/// before the outer transaction ran, not after its earlier writes.
#[test]
fn nested_txn_compares_see_the_state_before_the_outer_txn() {
    let mut n = Node::new();
    let t = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Txn(TxnRequest {
                compare: vec![compare("a", CompareResult::Equal, CompareTarget::Version(0))],
                success: vec![RequestOp::Put(put_req("saw_nothing", "1"))],
                failure: vec![RequestOp::Put(put_req("saw_a", "1"))],
            }),
        ],
        ..Default::default()
    };
    let resp = n.txn(t).unwrap();
    let ResponseOp::Txn(nested) = &resp.responses[1] else { panic!() };
    assert!(nested.succeeded);
    assert_eq!(nested.revision, 2);
    assert!(n.sm.get(b"saw_nothing").is_some());
}

#[test]
fn txn_limits_are_enforced() {
    let mut n = Node::with_config(Config { txn_ops_max: 2, ..Config::default() });
    let t = TxnRequest {
        success: vec![RequestOp::Range(RangeRequest::key("a")); 3],
        ..Default::default()
    };
    assert_eq!(n.txn(t), Err(KvError::TooManyOps { count: 3, max: 2 }));
    // A nested transaction gets only what its parent leaves, as in etcd.
    let nested = |ops: usize| TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Txn(TxnRequest {
                success: vec![RequestOp::Range(RangeRequest::key("b")); ops],
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert_eq!(n.txn(nested(1)), Err(KvError::TooManyOps { count: 1, max: 0 }));
    let mut n = Node::with_config(Config { txn_ops_max: 4, ..Config::default() });
    assert_eq!(n.txn(nested(3)), Err(KvError::TooManyOps { count: 3, max: 2 }));
    assert!(n.txn(nested(2)).is_ok(), "4 - 2 operations are left to the nested txn");
    let mut n = Node::new(); // 128 operations
    let mut deep = TxnRequest::default();
    for _ in 0..TXN_DEPTH_MAX {
        deep = TxnRequest { success: vec![RequestOp::Txn(deep)], ..Default::default() };
    }
    // Too deep to even decode; applying the decoded command directly is
    // refused too.
    assert!(Command::decode(&Command::new(Op::Txn(deep.clone())).encode()).is_err());
    n.index += 1;
    let r = n.sm.apply_command(n.index, &Command::new(Op::Txn(deep)));
    assert_eq!(r, Response::Error(KvError::TxnTooDeep { max: TXN_DEPTH_MAX }));
}

#[test]
fn input_validation_errors_are_values_with_advice() {
    let mut n =
        Node::with_config(Config { key_bytes_max: 4, value_bytes_max: 4, ..Config::default() });
    let r = n.op(Op::Put(put_req("toolong", "v")));
    assert_eq!(r, Response::Error(KvError::KeyTooLarge { len: 7, max: 4 }));
    n.put("k", "abc");
    let r = n.op(Op::Append { key: "k".into(), suffix: "de".into() });
    assert_eq!(r, Response::Error(KvError::ValueTooLarge { len: 5, max: 4 }));
    assert_eq!(n.range(RangeRequest::key("")), Err(KvError::EmptyKey));
    let msg = KvError::Compacted { requested: 3, compact_revision: 9 }.to_string();
    assert!(msg.contains("compacted") && msg.contains("newer"), "{msg}");
}

#[test]
fn a_malformed_entry_is_an_error_on_every_replica_and_uses_its_index() {
    let mut n = Node::new();
    let r = n.sm.apply(1, &[WIRE_FORMAT_VERSION, 0, 99]);
    let Response::Error(KvError::MalformedCommand { detail }) = r else { panic!("{r:?}") };
    assert!(detail.contains("unknown op tag 99"), "{detail}");
    assert_eq!(n.sm.applied_index(), 1);
}

#[test]
#[should_panic(expected = "applied after")]
fn applying_an_index_twice_is_a_caller_bug() {
    let mut sm = StateMachine::new(Config::default());
    let bytes = Command::new(Op::Get { key: "k".into() }).encode();
    sm.apply(5, &bytes);
    sm.apply(5, &bytes);
}
