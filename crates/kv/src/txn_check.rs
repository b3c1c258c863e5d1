//! etcd 3.4's duplicate-key rule for transactions, in O(n log n).
//!
//! A branch (a list of operations, nested transactions included) may put a
//! key at most once, and not inside a range deleted at its level or by a
//! nested transaction before it; the two branches of one nested transaction
//! may put the same key (only one of them runs). etcd checks it before a
//! transaction reaches its log; raftkv checks it at the edge (the server,
//! before proposing) and again at apply, which must stay deterministic and
//! cannot trust the log. Either way it runs on every member for every
//! transaction, so its cost is part of the apply budget.
//!
//! The first version compared every put with every deleted range: a valid
//! transaction of about 60k nested deletes and 60k nested puts under the
//! 1.5 MiB request limit took seconds to check on every member at once, a
//! query of death. Here the puts of a level are a sorted set and its deleted
//! ranges a set of merged, disjoint intervals searched by binary search, so a
//! key costs O(log n) per nesting level it passes through (at most
//! [`TXN_DEPTH_MAX`](crate::TXN_DEPTH_MAX)). The walk, and so the key an error
//! names, is the first version's: a test keeps that version as a reference
//! and compares both on random transactions.
//!
//! That walk still builds a set per level, so a key is inserted into a tree
//! once per level it passes through: for the largest transaction (56,883
//! deletes and 56,883 puts, 4 levels deep) about a sixth of its apply. Every
//! refusal needs two puts of one key or a put inside a deleted range, so a
//! branch whose puts (at every level, both branches of nested transactions)
//! are all distinct and outside every range it deletes anywhere passes the
//! walk. [`check_branch_keys`] first tries that: one sort of the puts and one
//! of the deletes, then a merge pass. Only a branch that fails it (a refusal,
//! or two branches of one nested transaction putting the same key) takes the
//! walk, which decides, and names the key, as before.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{DeleteRangeRequest, KvError, RequestOp};

/// The keys a set of deletes covers: single keys, and disjoint half-open
/// spans merged on insert (`None` as an end: no upper bound).
#[derive(Default)]
struct Deleted<'a> {
    keys: BTreeSet<&'a [u8]>,
    spans: BTreeMap<&'a [u8], Option<&'a [u8]>>,
}

impl<'a> Deleted<'a> {
    /// Adds what `r` deletes, in etcd's range conventions.
    fn add_request(&mut self, r: &'a DeleteRangeRequest) {
        match &r.range_end[..] {
            [] => {
                self.keys.insert(&r.key);
            }
            [0] => self.add_span(&r.key, None),
            end => self.add_span(&r.key, Some(end)),
        }
    }

    /// Adds `[start, end)`, merging it with the spans it overlaps or touches.
    fn add_span(&mut self, mut start: &'a [u8], mut end: Option<&'a [u8]>) {
        if end.is_some_and(|e| e <= start) {
            return; // Empty: etcd deletes nothing.
        }
        if let Some((&s, &e)) = self.spans.range(..=start).next_back() {
            if e.is_none_or(|e| e >= start) {
                self.spans.remove(s);
                start = s;
                end = later_end(e, end);
            }
        }
        while let Some((&s, &e)) = self.spans.range(start..).next() {
            if end.is_some_and(|end| s > end) {
                break;
            }
            self.spans.remove(s);
            end = later_end(e, end);
        }
        self.spans.insert(start, end);
    }

    /// Adds what `other` deletes, inserting the smaller set into the larger.
    fn add_all(&mut self, mut other: Deleted<'a>) {
        if self.keys.len() + self.spans.len() < other.keys.len() + other.spans.len() {
            std::mem::swap(self, &mut other);
        }
        self.keys.extend(other.keys);
        for (start, end) in other.spans {
            self.add_span(start, end);
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.keys.contains(key)
            || self
                .spans
                .range(..=key)
                .next_back()
                .is_some_and(|(_, end)| end.is_none_or(|e| key < e))
    }
}

fn later_end<'a>(a: Option<&'a [u8]>, b: Option<&'a [u8]>) -> Option<&'a [u8]> {
    Some(a?.max(b?))
}

/// What a branch writes, for the level above: the keys it puts and what it
/// deletes.
type Written<'a> = (BTreeSet<&'a [u8]>, Deleted<'a>);

/// Checks the duplicate-key rule for one branch of a transaction (see the
/// module docs); the error names the first offending key in the order of
/// the walk.
pub(crate) fn check_branch_keys(ops: &[RequestOp]) -> Result<(), KvError> {
    if clearly_distinct(ops) {
        return Ok(());
    }
    branch_keys(ops).map(|_| ())
}

/// Whether every key `ops` puts (anywhere in it) is put once and lies outside
/// every range it deletes (anywhere in it): then [`branch_keys`] finds nothing
/// to refuse (see the module docs). O(n log n), with no tree built.
fn clearly_distinct(ops: &[RequestOp]) -> bool {
    let mut puts: Vec<&[u8]> = Vec::new();
    // Deleted ranges as `[start, end)`, `None`: no end; a single key is `[k, k]`,
    // told apart by `single`.
    let mut dels: Vec<Span<'_>> = Vec::new();
    gather(ops, &mut puts, &mut dels);
    puts.sort_unstable();
    if puts.windows(2).any(|w| w[0] == w[1]) {
        return false;
    }
    dels.sort_unstable_by(|a, b| a.start.cmp(b.start));
    // Walk the puts in order beside the deleted ranges in order of start: the
    // ranges started at or before a put reach furthest to `reach`.
    let mut next = dels.iter().peekable();
    let mut reach: Option<Span<'_>> = None;
    for &key in &puts {
        while let Some(d) = next.next_if(|d| d.start <= key) {
            if reach.is_none_or(|r| d.reaches_past(&r)) {
                reach = Some(*d);
            }
        }
        if reach.is_some_and(|r| r.covers(key)) {
            return false;
        }
    }
    true
}

/// A deleted range, in the form [`clearly_distinct`] sorts.
#[derive(Clone, Copy)]
struct Span<'a> {
    start: &'a [u8],
    /// Exclusive end; `None`: no end.
    end: Option<&'a [u8]>,
    /// Only `start` itself (an empty `range_end`).
    single: bool,
}

impl Span<'_> {
    fn covers(&self, key: &[u8]) -> bool {
        if self.single {
            return key == self.start;
        }
        key >= self.start && self.end.is_none_or(|e| key < e)
    }

    /// Whether this range covers some key above everything `other` covers
    /// (both start at or before the key being checked).
    fn reaches_past(&self, other: &Span<'_>) -> bool {
        match (self.single, self.end, other.single, other.end) {
            (_, _, false, None) => false,
            (false, None, _, _) => true,
            // Singles reach their key; spans reach below their end.
            (true, _, true, _) => self.start > other.start,
            (true, _, false, Some(oe)) => self.start >= oe,
            (false, Some(e), true, _) => e > other.start,
            (false, Some(e), false, Some(oe)) => e > oe,
        }
    }
}

/// The keys `ops` puts and the ranges it deletes, nested transactions included.
fn gather<'a>(ops: &'a [RequestOp], puts: &mut Vec<&'a [u8]>, dels: &mut Vec<Span<'a>>) {
    for op in ops {
        match op {
            RequestOp::Put(r) => puts.push(&r.key),
            RequestOp::DeleteRange(r) => match &r.range_end[..] {
                [] => dels.push(Span { start: &r.key, end: None, single: true }),
                [0] => dels.push(Span { start: &r.key, end: None, single: false }),
                end if end > &r.key[..] => {
                    dels.push(Span { start: &r.key, end: Some(end), single: false })
                }
                _ => {} // Empty: etcd deletes nothing.
            },
            RequestOp::Txn(t) => {
                gather(&t.success, puts, dels);
                gather(&t.failure, puts, dels);
            }
            RequestOp::Range(_) => {}
        }
    }
}

fn branch_keys(ops: &[RequestOp]) -> Result<Written<'_>, KvError> {
    let duplicate = |k: &[u8]| Err(KvError::DuplicateKeyInTxn { key: k.to_vec() });
    // This level's deletes come first: a nested put inside one is refused.
    let mut dels = Deleted::default();
    for op in ops {
        if let RequestOp::DeleteRange(r) = op {
            dels.add_request(r);
        }
    }
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(n) = op else { continue };
        let (puts_then, dels_then) = branch_keys(&n.success)?;
        let (puts_else, dels_else) = branch_keys(&n.failure)?;
        if puts.is_empty() {
            // Nothing before this nested txn put anything: only the deletes
            // can conflict, and its set of keys becomes this level's.
            for &k in puts_then.iter().chain(&puts_else) {
                if dels.contains(k) {
                    return duplicate(k);
                }
            }
            puts = puts_then;
            puts.extend(puts_else);
        } else {
            // `insert` answers whether the key was new: one search per key.
            for &k in &puts_then {
                if dels.contains(k) || !puts.insert(k) {
                    return duplicate(k);
                }
            }
            for &k in &puts_else {
                // A key of both branches is fine: only one of them runs.
                if dels.contains(k) || (!puts.insert(k) && !puts_then.contains(k)) {
                    return duplicate(k);
                }
            }
        }
        // Only now: a nested delete does not conflict with an earlier sibling's put.
        dels.add_all(dels_then);
        dels.add_all(dels_else);
    }
    for op in ops {
        let RequestOp::Put(r) = op else { continue };
        if dels.contains(&r.key) || !puts.insert(&r.key) {
            return duplicate(&r.key);
        }
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::KeyRange;
    use crate::types::{PutRequest, TxnRequest};

    type Interval<'a> = (&'a [u8], &'a [u8]);

    fn in_any(dels: &[Interval<'_>], key: &[u8]) -> bool {
        dels.iter().any(|&(start, end)| KeyRange::new(start, end).contains(key))
    }

    /// The first version, O(puts × deletes): the reference the fast check
    /// must agree with, error key included.
    fn naive_branch_keys<'a>(
        ops: &'a [RequestOp],
    ) -> Result<(BTreeSet<&'a [u8]>, Vec<Interval<'a>>), KvError> {
        let duplicate = |k: &[u8]| Err(KvError::DuplicateKeyInTxn { key: k.to_vec() });
        let mut dels: Vec<Interval<'a>> = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::DeleteRange(r) => Some((&r.key[..], &r.range_end[..])),
                _ => None,
            })
            .collect();
        let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
        for op in ops {
            let RequestOp::Txn(n) = op else { continue };
            let (puts_then, dels_then) = naive_branch_keys(&n.success)?;
            let (puts_else, dels_else) = naive_branch_keys(&n.failure)?;
            for &k in &puts_then {
                if puts.contains(k) || in_any(&dels, k) {
                    return duplicate(k);
                }
                puts.insert(k);
            }
            for &k in &puts_else {
                if (puts.contains(k) && !puts_then.contains(k)) || in_any(&dels, k) {
                    return duplicate(k);
                }
                puts.insert(k);
            }
            dels.extend(dels_then);
            dels.extend(dels_else);
        }
        for op in ops {
            let RequestOp::Put(r) = op else { continue };
            if puts.contains(&r.key[..]) || in_any(&dels, &r.key) {
                return duplicate(&r.key);
            }
            puts.insert(&r.key);
        }
        Ok((puts, dels))
    }

    /// splitmix64, so a failing case replays from its seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }
    }

    /// Keys from a small alphabet so that puts and ranges often meet; range
    /// ends are sometimes empty (one key), `[0]` (no end), or below the start.
    fn random_key(rng: &mut Rng) -> Vec<u8> {
        let len = 1 + rng.below(3) as usize;
        (0..len).map(|_| b'a' + rng.below(4) as u8).collect()
    }

    fn random_ops(rng: &mut Rng, depth: u32, keys_per_op: u64) -> Vec<RequestOp> {
        let n = rng.below(keys_per_op);
        (0..n)
            .map(|_| match rng.below(10) {
                0..=4 => RequestOp::Put(PutRequest { key: random_key(rng), ..Default::default() }),
                5 | 6 => {
                    let range_end = match rng.below(5) {
                        0 | 1 => Vec::new(),
                        2 => vec![0],
                        _ => random_key(rng),
                    };
                    let key = random_key(rng);
                    RequestOp::DeleteRange(DeleteRangeRequest { key, range_end, prev_kv: false })
                }
                _ if depth < 3 => RequestOp::Txn(TxnRequest {
                    compare: Vec::new(),
                    success: random_ops(rng, depth + 1, keys_per_op),
                    failure: random_ops(rng, depth + 1, keys_per_op),
                }),
                _ => RequestOp::Put(PutRequest { key: random_key(rng), ..Default::default() }),
            })
            .collect()
    }

    #[test]
    fn fast_check_agrees_with_the_naive_check_on_random_txns() {
        let (mut accepted, mut refused) = (0, 0);
        for seed in 0..20_000 {
            let mut rng = Rng(seed);
            let keys_per_op = 2 + rng.below(6);
            let ops = random_ops(&mut rng, 0, keys_per_op);
            let fast = check_branch_keys(&ops);
            let naive = naive_branch_keys(&ops).map(|_| ());
            assert_eq!(fast, naive, "seed {seed}: {ops:?}");
            if fast.is_ok() {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both verdicts are common, so the comparison covers both.
        assert!(accepted > 2_000 && refused > 2_000, "accepted {accepted}, refused {refused}");
    }

    /// Every put key and every deleted range of `ops`, at any depth, both branches.
    fn naive_gather<'a>(
        ops: &'a [RequestOp],
        puts: &mut Vec<&'a [u8]>,
        dels: &mut Vec<Interval<'a>>,
    ) {
        for op in ops {
            match op {
                RequestOp::Put(r) => puts.push(&r.key),
                RequestOp::DeleteRange(r) => dels.push((&r.key, &r.range_end)),
                RequestOp::Txn(t) => {
                    naive_gather(&t.success, puts, dels);
                    naive_gather(&t.failure, puts, dels);
                }
                RequestOp::Range(_) => {}
            }
        }
    }

    /// The shortcut in front of the walk must say "clearly distinct" exactly when
    /// the puts are distinct and outside every deleted range (checked pairwise
    /// here), and a branch it passes must pass the naive check too.
    #[test]
    fn the_shortcut_passes_exactly_the_branches_of_distinct_undeleted_puts() {
        let mut passed = 0;
        for seed in 0..20_000 {
            let mut rng = Rng(seed);
            let keys_per_op = 2 + rng.below(6);
            let ops = random_ops(&mut rng, 0, keys_per_op);
            let (mut puts, mut dels) = (Vec::new(), Vec::new());
            naive_gather(&ops, &mut puts, &mut dels);
            let distinct = puts.iter().enumerate().all(|(i, k)| !puts[..i].contains(k));
            let reference = distinct && puts.iter().all(|k| !in_any(&dels, k));
            assert_eq!(clearly_distinct(&ops), reference, "seed {seed}: {ops:?}");
            if reference {
                passed += 1;
                assert_eq!(naive_branch_keys(&ops).map(|_| ()), Ok(()), "seed {seed}: {ops:?}");
            }
        }
        // Both answers are common, so the comparison covers both.
        assert!(passed > 2_000 && passed < 18_000, "passed {passed}");
    }

    #[test]
    fn deleted_spans_merge_and_answer_membership_like_the_ranges() {
        let ranges: [(&[u8], &[u8]); 7] = [
            (b"c", b"e"),
            (b"a", b"b"),
            (b"b", b"c"),
            (b"x", b"w"),
            (b"g", b""),
            (b"m", b"\0"),
            (b"d", b"f"),
        ];
        let reqs: Vec<DeleteRangeRequest> = ranges
            .iter()
            .map(|(k, e)| DeleteRangeRequest {
                key: k.to_vec(),
                range_end: e.to_vec(),
                prev_kv: false,
            })
            .collect();
        let mut d = Deleted::default();
        for r in &reqs {
            d.add_request(r);
        }
        // [a, f) from four touching or overlapping spans, and [m, ∞).
        let spans: Vec<_> = d.spans.iter().map(|(s, e)| (*s, *e)).collect();
        assert_eq!(spans, vec![(&b"a"[..], Some(&b"f"[..])), (&b"m"[..], None)]);
        for key in [&b"a"[..], b"ez", b"f", b"g", b"ga", b"l", b"m", b"zz", b"x", b""] {
            let reference = ranges.iter().any(|(s, e)| KeyRange::new(s, e).contains(key));
            assert_eq!(d.contains(key), reference, "key {key:?}");
        }
    }
}
