//! Small hand-built histories, each pinning one rule of linearizability as the
//! checker applies it. Times are simulated ticks.

use lincheck::{
    check, CheckOptions, History, KvModel, KvOp, KvResult, OpId, Outcome, RegisterModel,
    RegisterOp, RegisterResult, Verdict, Violation,
};

type KvHistory = History<KvOp, KvResult>;

/// Records one operation from `invoke` to `complete` for `process`.
fn op(
    h: &mut KvHistory,
    process: u64,
    span: (u64, u64),
    input: KvOp,
    out: Outcome<KvResult>,
) -> OpId {
    let id = h.invoke(process, span.0, input);
    h.complete(id, span.1, out);
    id
}

fn done() -> Outcome<KvResult> {
    Outcome::Ok(KvResult::Done)
}

fn read(value: Option<&str>) -> Outcome<KvResult> {
    Outcome::Ok(KvResult::Value(value.map(|v| v.as_bytes().to_vec())))
}

fn verdict(h: &KvHistory) -> Verdict {
    check(&KvModel::strict(), h, &CheckOptions::default())
}

fn violation(h: &KvHistory) -> Box<Violation> {
    match verdict(h) {
        Verdict::NotLinearizable(v) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn sequential_put_then_get_is_linearizable() {
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "v"), done());
    op(&mut h, 1, (3, 4), KvOp::get("k"), read(Some("v")));
    op(&mut h, 2, (5, 6), KvOp::get("other"), read(None));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    // The put of "b" completes at 4; a get invoked at 5 must see it.
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "a"), done());
    op(&mut h, 1, (3, 4), KvOp::put("k", "b"), done());
    let stale = op(&mut h, 2, (5, 6), KvOp::get("k"), read(Some("a")));
    let v = violation(&h);
    assert_eq!(v.partition, "key \"k\"");
    assert_eq!(v.operations_checked, 3);
    assert_eq!(v.prefix.len(), 2, "both puts can be linearized");
    assert_eq!(v.state_after_prefix, "\"b\"");
    assert_eq!(v.deadline.id, stale);
    assert_eq!(v.candidates.len(), 1);
    assert_eq!(v.candidates[0].op.id, stale);
    assert!(!v.candidates[0].applies);
}

#[test]
fn explanation_names_the_key_operations_times_and_state() {
    let mut h = History::new();
    op(&mut h, 1, (10, 20), KvOp::put("k", "a"), done());
    op(&mut h, 1, (30, 40), KvOp::put("k", "b"), done());
    op(&mut h, 7, (50, 60), KvOp::get("k"), read(Some("a")));
    let text = violation(&h).to_string();
    for needle in [
        "key \"k\": its 3 operations have no linearization",
        "#1 process 1: put \"k\" \"b\" -> ok (invoked at 30, returned at 40)",
        "holds \"b\"",
        "#2 process 7: get \"k\" -> \"a\" (invoked at 50, returned at 60)  <- impossible",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn concurrent_operations_may_take_effect_out_of_invoke_order() {
    // The get is invoked first but overlaps the put, so the put can go first;
    // the two appends overlap, so they may land in either order.
    let mut h = History::new();
    op(&mut h, 1, (1, 10), KvOp::get("k"), read(Some("v")));
    op(&mut h, 2, (2, 5), KvOp::put("k", "v"), done());
    let a = h.invoke(3, 11, KvOp::append("k", "a"));
    let b = h.invoke(4, 12, KvOp::append("k", "b"));
    h.complete(b, 13, done());
    h.complete(a, 14, done());
    op(&mut h, 5, (15, 16), KvOp::get("k"), read(Some("vba")));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn sequential_appends_cannot_be_reordered() {
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::append("k", "a"), done());
    op(&mut h, 1, (3, 4), KvOp::append("k", "b"), done());
    op(&mut h, 2, (5, 6), KvOp::get("k"), read(Some("ba")));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

#[test]
fn unknown_write_may_take_effect_even_after_its_client_gave_up() {
    // The client timed out at 2; the put still lands between the two gets.
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "x"), Outcome::Unknown);
    op(&mut h, 2, (3, 4), KvOp::get("k"), read(None));
    op(&mut h, 2, (5, 6), KvOp::get("k"), read(Some("x")));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn unknown_write_may_never_take_effect() {
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "x"), Outcome::Unknown);
    h.invoke(3, 2, KvOp::append("k", "y")); // never completes
    op(&mut h, 2, (3, 4), KvOp::get("k"), read(None));
    op(&mut h, 2, (5, 6), KvOp::get("k"), read(None));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn unknown_write_cannot_take_effect_twice_or_be_undone() {
    // Once "x" was read, it cannot vanish: nothing else wrote the key.
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "x"), Outcome::Unknown);
    op(&mut h, 2, (3, 4), KvOp::get("k"), read(Some("x")));
    op(&mut h, 2, (5, 6), KvOp::get("k"), read(None));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    // Nor can it explain a value nobody wrote.
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "x"), Outcome::Unknown);
    op(&mut h, 2, (3, 4), KvOp::get("k"), read(Some("y")));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

#[test]
fn unknown_write_cannot_take_effect_before_its_invoke() {
    let mut h = History::new();
    op(&mut h, 2, (1, 2), KvOp::get("k"), read(Some("x")));
    op(&mut h, 1, (3, 4), KvOp::put("k", "x"), Outcome::Unknown);
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

#[test]
fn failed_cas_is_dropped_but_a_successful_one_must_show() {
    let swapped = Outcome::Ok(KvResult::Cas { swapped: true });
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "a"), done());
    op(&mut h, 1, (3, 4), KvOp::cas("k", Some("a"), "b"), Outcome::Fail);
    op(&mut h, 2, (5, 6), KvOp::get("k"), read(Some("a")));
    assert_eq!(verdict(&h), Verdict::Linearizable, "a failed cas has no effect");

    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "a"), done());
    op(&mut h, 1, (3, 4), KvOp::cas("k", Some("a"), "b"), swapped);
    op(&mut h, 2, (5, 6), KvOp::get("k"), read(Some("a")));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

#[test]
fn cas_that_reports_no_match_must_not_have_matched() {
    let no_match = || Outcome::Ok(KvResult::Cas { swapped: false });
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "a"), done());
    op(&mut h, 1, (3, 4), KvOp::cas("k", Some("a"), "b"), no_match());
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));

    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "a"), done());
    op(&mut h, 1, (3, 4), KvOp::cas("k", Some("z"), "b"), no_match());
    op(&mut h, 2, (5, 6), KvOp::get("k"), read(Some("a")));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn delete_makes_the_key_absent() {
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::put("k", "a"), done());
    op(&mut h, 1, (3, 4), KvOp::delete("k"), done());
    op(&mut h, 2, (5, 6), KvOp::get("k"), read(None));
    op(
        &mut h,
        2,
        (7, 8),
        KvOp::cas("k", None::<&str>, "c"),
        Outcome::Ok(KvResult::Cas { swapped: true }),
    );
    op(&mut h, 2, (9, 10), KvOp::get("k"), read(Some("c")));
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // The empty string is a value, not absence, in the strict model.
    let mut h = History::new();
    op(&mut h, 1, (1, 2), KvOp::delete("k"), done());
    op(&mut h, 2, (3, 4), KvOp::get("k"), read(Some("")));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    assert!(check(&KvModel::empty_is_absent(), &h, &CheckOptions::default()).is_linearizable());
}

#[test]
fn events_at_the_same_tick_keep_their_recorded_order() {
    // Put completes at tick 5 and the get is invoked at tick 5, after it.
    let mut h = History::new();
    op(&mut h, 1, (1, 5), KvOp::put("k", "a"), done());
    op(&mut h, 2, (5, 5), KvOp::get("k"), read(None));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

#[test]
fn keys_are_checked_independently_and_the_bad_one_is_named() {
    let mut h = History::new();
    op(&mut h, 1, (1, 4), KvOp::put("a", "1"), done());
    op(&mut h, 2, (2, 3), KvOp::get("a"), read(Some("1")));
    op(&mut h, 3, (5, 6), KvOp::put("b", "1"), done());
    op(&mut h, 3, (7, 8), KvOp::get("b"), read(Some("2")));
    assert_eq!(violation(&h).partition, "key \"b\"");
}

#[test]
fn exhausted_step_budget_gives_unknown_not_a_guess() {
    let mut h = History::new();
    for p in 0..6 {
        let value = p.to_string();
        op(&mut h, p, (p, 100 + p), KvOp::append("k", value), done());
    }
    op(&mut h, 9, (200, 201), KvOp::get("k"), read(Some("543210")));
    let tight = CheckOptions { timeout: None, max_steps: Some(3) };
    match check(&KvModel::strict(), &h, &tight) {
        Verdict::Unknown(reason) => assert!(reason.contains("step budget"), "{reason}"),
        other => panic!("expected unknown, got {other:?}"),
    }
    assert_eq!(verdict(&h), Verdict::Linearizable, "enough budget decides it");
}

#[test]
fn register_history_with_failed_cas_and_unknown_write() {
    // Jepsen etcd style: failed cas dropped, indeterminate write lands late.
    let mut h: History<RegisterOp, RegisterResult> = History::new();
    let w = h.invoke(1, 1, RegisterOp::Write(3));
    h.complete(w, 2, Outcome::Ok(RegisterResult::Done));
    let c = h.invoke(2, 3, RegisterOp::Cas { from: 1, to: 2 });
    h.complete(c, 4, Outcome::Fail);
    let u = h.invoke(3, 5, RegisterOp::Write(4));
    h.complete(u, 6, Outcome::Unknown);
    let r = h.invoke(1, 7, RegisterOp::Read);
    h.complete(r, 8, Outcome::Ok(RegisterResult::Read(Some(3))));
    let r = h.invoke(1, 9, RegisterOp::Read);
    h.complete(r, 10, Outcome::Ok(RegisterResult::Read(Some(4))));
    let options = CheckOptions::default();
    assert_eq!(check(&RegisterModel, &h, &options), Verdict::Linearizable);
    let r = h.invoke(1, 11, RegisterOp::Read);
    h.complete(r, 12, Outcome::Ok(RegisterResult::Read(Some(3))));
    match check(&RegisterModel, &h, &options) {
        Verdict::NotLinearizable(v) => {
            assert_eq!(v.partition, "the register");
            assert_eq!(v.state_after_prefix, "4");
            assert_eq!(v.deadline.id, r);
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}
