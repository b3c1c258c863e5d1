//! The multi-version key space: one persistent ordered map from
//! `(key, revision)` to what that revision wrote to the key.
//!
//! A put writes a [`Record::Put`], a delete a [`Record::Tombstone`]; the state
//! of a key at revision `r` is its entry with the greatest revision `<= r`.
//! Keys and values are `Arc<[u8]>`, so when a snapshot view shares the map's
//! nodes, the copy-on-write of a node on the next write copies pointers, not
//! bytes.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use equivalent::{Comparable, Equivalent};
use imbl::OrdMap;

use crate::types::KeyValue;

/// Map key: a user key and the revision that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MvccKey {
    pub(crate) key: Arc<[u8]>,
    pub(crate) rev: u64,
}

/// Borrowed form of [`MvccKey`] for lookups without allocating.
#[derive(Clone, Copy)]
pub(crate) struct MvccKeyRef<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) rev: u64,
}

impl Equivalent<MvccKey> for MvccKeyRef<'_> {
    fn equivalent(&self, other: &MvccKey) -> bool {
        self.rev == other.rev && self.key == &*other.key
    }
}

impl Comparable<MvccKey> for MvccKeyRef<'_> {
    fn compare(&self, other: &MvccKey) -> Ordering {
        self.key.cmp(&other.key).then_with(|| self.rev.cmp(&other.rev))
    }
}

/// What one revision wrote to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Put { value: Arc<[u8]>, create_revision: u64, version: u64, lease: i64 },
    Tombstone,
}

/// A live key as read at some revision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KvRef<'a> {
    pub(crate) key: &'a Arc<[u8]>,
    pub(crate) mod_revision: u64,
    pub(crate) value: &'a Arc<[u8]>,
    pub(crate) create_revision: u64,
    pub(crate) version: u64,
    pub(crate) lease: i64,
}

impl KvRef<'_> {
    pub(crate) fn to_key_value(self, with_value: bool) -> KeyValue {
        KeyValue {
            key: self.key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: if with_value { self.value.to_vec() } else { Vec::new() },
            lease: self.lease,
        }
    }
}

fn live<'a>(k: &'a MvccKey, r: &'a Record) -> Option<KvRef<'a>> {
    match r {
        Record::Tombstone => None,
        Record::Put { value, create_revision, version, lease } => Some(KvRef {
            key: &k.key,
            mod_revision: k.rev,
            value,
            create_revision: *create_revision,
            version: *version,
            lease: *lease,
        }),
    }
}

/// A key range in etcd's conventions, already decoded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyRange<'a> {
    /// Exactly one key (empty `range_end`).
    Single(&'a [u8]),
    /// `[start, end)`; `end == None` means no upper bound (`range_end == [0]`).
    Span { start: &'a [u8], end: Option<&'a [u8]> },
}

impl<'a> KeyRange<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::Span { start: key, end: None },
            end => KeyRange::Span { start: key, end: Some(end) },
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::Span { start, end } => k >= start && !matches!(end, Some(e) if k >= e),
        }
    }
}

/// The key space with its revision counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mvcc {
    pub(crate) entries: OrdMap<MvccKey, Record>,
    /// Revision of the last write transaction that changed something.
    pub(crate) revision: u64,
    /// Reads below this revision fail with `Compacted`.
    pub(crate) compact_revision: u64,
    /// Where background pruning of compacted history resumes; `None` when
    /// every entry below `compact_revision` that no read can reach is gone.
    pub(crate) prune_cursor: Option<Arc<[u8]>>,
}

impl Mvcc {
    /// The entry in force for `key` at `rev` (tombstone included).
    fn entry_at(&self, key: &[u8], rev: u64) -> Option<(&MvccKey, &Record)> {
        let (k, r) = self.entries.get_prev(&MvccKeyRef { key, rev })?;
        (&*k.key == key).then_some((k, r))
    }

    /// The live value of `key` at `rev`.
    pub(crate) fn get_at(&self, key: &[u8], rev: u64) -> Option<KvRef<'_>> {
        self.entry_at(key, rev).and_then(|(k, r)| live(k, r))
    }

    /// Calls `visit` with every key live at `rev` in `range`, in key order,
    /// until it returns false. Each key costs two tree seeks, however long
    /// its history.
    pub(crate) fn scan_at<'a>(
        &'a self,
        range: KeyRange<'_>,
        rev: u64,
        mut visit: impl FnMut(KvRef<'a>) -> bool,
    ) {
        let (start, end) = match range {
            KeyRange::Single(key) => {
                if let Some(kv) = self.get_at(key, rev) {
                    visit(kv);
                }
                return;
            }
            KeyRange::Span { start, end } => (start, end),
        };
        if end.is_some_and(|e| e <= start) {
            return;
        }
        let mut next = self
            .entries
            .range((Bound::Included(MvccKeyRef { key: start, rev: 0 }), Bound::Unbounded))
            .next();
        while let Some((k, _)) = next {
            if end.is_some_and(|e| &*k.key >= e) {
                return;
            }
            if let Some(kv) = self.get_at(&k.key, rev) {
                if !visit(kv) {
                    return;
                }
            }
            let after_key = MvccKeyRef { key: &k.key, rev: u64::MAX };
            next = self.entries.range((Bound::Excluded(after_key), Bound::Unbounded)).next();
        }
    }

    /// Writes `record` for `key` at revision `rev` (the pending revision of
    /// the current write transaction).
    pub(crate) fn write(&mut self, key: Arc<[u8]>, rev: u64, record: Record) {
        assert!(rev > self.revision, "write at revision {rev} not above current {}", self.revision);
        self.entries.insert(MvccKey { key, rev }, record);
    }

    /// Starts pruning history below the new `compact_revision`.
    pub(crate) fn compact(&mut self, revision: u64) {
        assert!(revision > self.compact_revision && revision <= self.revision);
        self.compact_revision = revision;
        // Restart from the first key: keys before an old cursor were pruned
        // only up to the previous compact revision.
        self.prune_cursor = Some(Arc::from(&[][..]));
    }

    /// Removes unreachable history for keys from the prune cursor on,
    /// visiting about `budget` entries (always whole keys, so one key with a
    /// long history may overshoot). Unreachable: every entry below
    /// `compact_revision` except the newest one at or below it, and that one
    /// too if it is a tombstone. Runs a bounded step per applied command so a
    /// compaction never stalls apply for a whole-map sweep.
    pub(crate) fn prune_step(&mut self, budget: u64) {
        let Some(cursor) = self.prune_cursor.take() else {
            return;
        };
        let compact = self.compact_revision;
        let mut dead: Vec<MvccKey> = Vec::new();
        let mut current: Option<&Arc<[u8]>> = None;
        // Newest entry at or below `compact` of the current key, and whether
        // it is a tombstone.
        let mut newest_le: Option<(&MvccKey, bool)> = None;
        let from = MvccKeyRef { key: &cursor, rev: 0 };
        let mut resume = None;
        let entries = self.entries.range((Bound::Included(from), Bound::Unbounded));
        for (visited, (k, r)) in (0u64..).zip(entries) {
            if current != Some(&k.key) {
                if let Some((nk, true)) = newest_le.take() {
                    dead.push(nk.clone());
                }
                if visited >= budget {
                    resume = Some(k.key.clone());
                    break;
                }
                current = Some(&k.key);
            }
            if k.rev <= compact {
                let is_tombstone = matches!(r, Record::Tombstone);
                if let Some((older, _)) = newest_le.replace((k, is_tombstone)) {
                    dead.push(older.clone());
                }
            }
        }
        if resume.is_none() {
            if let Some((nk, true)) = newest_le.take() {
                dead.push(nk.clone());
            }
        }
        for k in &dead {
            self.entries.remove(k);
        }
        self.prune_cursor = resume;
    }
}
