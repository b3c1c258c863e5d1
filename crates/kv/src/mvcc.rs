//! The multi-version key space: one persistent ordered map from
//! `(key, revision, sub-revision)` to what that change wrote to the key.
//!
//! As in etcd, a revision is a pair `(main, sub)`: `main` is the store revision
//! a write transaction makes, `sub` the position of a change within it (0, 1, …
//! in the order the transaction's operations made them; a delete of a range
//! counts its keys in key order). Events are delivered in `(main, sub)` order,
//! so a watcher sees a transaction's changes in the order of its operations.
//! Sub-revisions are internal: every public revision is a `main`.
//!
//! A put writes a [`Record::Put`], a delete a [`Record::Tombstone`]; the state
//! of a key at revision `r` is its entry with the greatest `(main, sub)` whose
//! `main <= r`.
//! Keys and values are `Arc<[u8]>`, so when a snapshot view shares the map's
//! nodes, the copy-on-write of a node on the next write copies pointers, not
//! bytes.
//!
//! Two indices derived from the history live beside it, in persistent maps
//! too, so snapshot views and transaction rollback copy them in O(1):
//! `changes`, every `(main, sub, key)` of `entries` in revision order (what
//! a watch reads to list the events of a span of revisions without scanning
//! every key; packed densely by [`RevIndex`], as it only grows at its end), and `leases`, each lease's granted TTL and the keys whose
//! current version is attached to it. Both are kept in step by [`Mvcc::write_over`]
//! and [`Mvcc::prune_step`], and rebuilt from the history on restore, so they
//! never disagree with it.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use equivalent::{Comparable, Equivalent};
use imbl::{OrdMap, OrdSet};

use crate::quota::{entry_bytes, LEASE_OVERHEAD_BYTES};
use crate::rev_index::RevIndex;
use crate::types::{Event, EventKind, EventLimits, KeyValue};

/// Versions of one key a range scan steps through before it seeks past the
/// key instead (see [`Mvcc::scan_at`]).
const SCAN_VERSIONS_WALKED_MAX: u64 = 16;

/// Map key: a user key and the revision `(rev, sub)` of the change that wrote it,
/// ordered by key, then `rev`, then `sub`.
///
/// It also carries the key's first [`PREFIX_BYTES`] bytes as a number, so most
/// comparisons in a tree seek never read the key's bytes: those live in their own
/// allocation, anywhere in the heap, and at a million keys following that pointer
/// missed the cache at every step of a seek (measured with `perf` on the kv bench
/// `hot_paths`, largest txn on 1M keys: key comparisons were about 45% of its apply).
#[derive(Clone, Debug)]
pub(crate) struct MvccKey {
    pub(crate) key: Arc<[u8]>,
    /// The main revision: the store revision of the write.
    pub(crate) rev: u64,
    /// The change's position within its main revision.
    pub(crate) sub: u64,
    /// [`key_prefix`] of `key`.
    prefix: u64,
}

/// Key bytes held inline in [`MvccKey`] and [`MvccKeyRef`].
const PREFIX_BYTES: usize = 8;

/// The first [`PREFIX_BYTES`] bytes of `key`, big-endian, zero-padded: keys in
/// order have prefixes in (non-strict) order, so unequal prefixes order their keys.
fn key_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; PREFIX_BYTES];
    let n = key.len().min(PREFIX_BYTES);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// Orders two keys whose prefixes are `(pa, pb)`, reading their bytes only when
/// the prefixes tie and one key is longer than the prefix: two keys within the
/// prefix with equal prefixes differ only by trailing zeros, so the shorter is first.
fn cmp_keys(pa: u64, a: &[u8], pb: u64, b: &[u8]) -> Ordering {
    pa.cmp(&pb).then_with(|| {
        if a.len() <= PREFIX_BYTES && b.len() <= PREFIX_BYTES {
            a.len().cmp(&b.len())
        } else {
            a.cmp(b)
        }
    })
}

impl MvccKey {
    /// The map key of the change of `key` at revision `(rev, sub)`.
    pub(crate) fn new(key: Arc<[u8]>, rev: u64, sub: u64) -> Self {
        let prefix = key_prefix(&key);
        MvccKey { key, rev, sub, prefix }
    }
}

impl Ord for MvccKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_keys(self.prefix, &self.key, other.prefix, &other.key)
            .then_with(|| self.rev.cmp(&other.rev))
            .then_with(|| self.sub.cmp(&other.sub))
    }
}

impl PartialOrd for MvccKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MvccKey {
    fn eq(&self, other: &Self) -> bool {
        self.rev == other.rev
            && self.sub == other.sub
            && self.prefix == other.prefix
            && self.key == other.key
    }
}

impl Eq for MvccKey {}

/// Borrowed form of [`MvccKey`] for lookups without allocating.
#[derive(Clone, Copy)]
pub(crate) struct MvccKeyRef<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) rev: u64,
    pub(crate) sub: u64,
    prefix: u64,
}

impl<'a> MvccKeyRef<'a> {
    /// Before every change of `key` at main revision `rev`.
    fn first_at(key: &'a [u8], rev: u64) -> Self {
        MvccKeyRef { key, rev, sub: 0, prefix: key_prefix(key) }
    }

    /// After every change of `key` at main revision `rev`.
    fn last_at(key: &'a [u8], rev: u64) -> Self {
        MvccKeyRef { key, rev, sub: u64::MAX, prefix: key_prefix(key) }
    }
}

impl Equivalent<MvccKey> for MvccKeyRef<'_> {
    fn equivalent(&self, other: &MvccKey) -> bool {
        self.rev == other.rev
            && self.sub == other.sub
            && self.prefix == other.prefix
            && self.key == &*other.key
    }
}

impl Comparable<MvccKey> for MvccKeyRef<'_> {
    fn compare(&self, other: &MvccKey) -> Ordering {
        cmp_keys(self.prefix, self.key, other.prefix, &other.key)
            .then_with(|| self.rev.cmp(&other.rev))
            .then_with(|| self.sub.cmp(&other.sub))
    }
}

/// What one revision wrote to one key: one pointer wide, so a map entry is its
/// key and 8 bytes (see [`Version`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Put(Version),
    Tombstone,
}

/// What a put wrote besides the value: the key's generation and its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PutMeta {
    pub(crate) create_revision: u64,
    pub(crate) version: u64,
    pub(crate) lease: i64,
}

/// A put's value and [`PutMeta`] in one shared allocation behind one thin pointer.
///
/// The map's leaves hold 16 entries each and are copied whole on the first write
/// after a view shares them (a view is published after every applied batch), so
/// the entry's size is paid per version and again per copy. With the metadata
/// and a fat `Arc<[u8]>` inline an entry was 80 bytes (a leaf 1,312, a 1,536-byte
/// allocation); with this pointer it is 48 (a leaf 800, an 896-byte one). The
/// value's allocation gains the metadata (24 bytes) and the slice length and loses
/// the weak count, 24 bytes net, which its size class often absorbs (a 256-byte
/// value: 272 bytes before, 296 now, both in the 320 class).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version(triomphe::ThinArc<PutMeta, u8>);

// The layout the leaf sizes above assume.
const _: () = assert!(std::mem::size_of::<Record>() == 8);
const _: () = assert!(std::mem::size_of::<(MvccKey, Record)>() == 48);

impl Version {
    /// A version holding a copy of `value`.
    pub(crate) fn new(value: &[u8], meta: PutMeta) -> Self {
        Version(triomphe::ThinArc::from_header_and_slice(meta, value))
    }

    /// The version's metadata.
    pub(crate) fn meta(&self) -> &PutMeta {
        &self.0.header.header
    }

    /// The value.
    pub(crate) fn value(&self) -> &[u8] {
        &self.0.slice
    }
}

/// A live key as read at some revision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KvRef<'a> {
    pub(crate) key: &'a Arc<[u8]>,
    pub(crate) mod_revision: u64,
    pub(crate) value: &'a [u8],
    pub(crate) create_revision: u64,
    pub(crate) version: u64,
    pub(crate) lease: i64,
    /// The version these fields were read from.
    pub(crate) put: &'a Version,
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
        Record::Put(v) => Some(KvRef {
            key: &k.key,
            mod_revision: k.rev,
            value: v.value(),
            create_revision: v.meta().create_revision,
            version: v.meta().version,
            lease: v.meta().lease,
            put: v,
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

/// A lease as the state machine knows it: no deadline (that is the leader's
/// clock), only what was granted and what is attached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Granted TTL in seconds.
    pub(crate) ttl_secs: i64,
    /// Keys whose current version carries this lease.
    pub(crate) keys: OrdSet<Arc<[u8]>>,
}

/// The key space with its revision counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mvcc {
    pub(crate) entries: OrdMap<MvccKey, Record>,
    /// `(rev, sub, key)` of every entry: the watch index, in revision order.
    pub(crate) changes: RevIndex,
    /// Live leases by id.
    pub(crate) leases: OrdMap<i64, Lease>,
    /// Revision of the last write transaction that changed something.
    pub(crate) revision: u64,
    /// Reads below this revision fail with `Compacted`.
    pub(crate) compact_revision: u64,
    /// Where background pruning of compacted history resumes; `None` when
    /// every entry below `compact_revision` that no read can reach is gone.
    pub(crate) prune_cursor: Option<Arc<[u8]>>,
    /// Estimated bytes held by `entries` and `leases` (see [`crate::quota`]): kept in
    /// step by every change, recomputed by [`Mvcc::rebuild_indices`].
    pub(crate) size_bytes: u64,
}

impl Mvcc {
    /// The entry in force for `key` at `rev` (tombstone included): its last
    /// change at a main revision `<= rev`.
    fn entry_at(&self, key: &[u8], rev: u64) -> Option<(&MvccKey, &Record)> {
        let at = MvccKeyRef::last_at(key, rev);
        let (k, r) = self.entries.get_prev(&at)?;
        // By prefix and length when they decide, without reading `k`'s key bytes.
        cmp_keys(at.prefix, key, k.prefix, &k.key).is_eq().then_some((k, r))
    }

    /// The live value of `key` at `rev`.
    pub(crate) fn get_at(&self, key: &[u8], rev: u64) -> Option<KvRef<'_>> {
        self.entry_at(key, rev).and_then(|(k, r)| live(k, r))
    }

    /// Calls `visit` with every key live at `rev` in `range`, in key order,
    /// until it returns false. One walk through the range's entries: a key
    /// costs a step per version, up to [`SCAN_VERSIONS_WALKED_MAX`]; a key
    /// with a longer history costs two tree seeks instead, however long it is.
    /// (A seek per key, the first version, made a range over a million keys
    /// take a second: imbl builds a new iterator for each.)
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
        let from = MvccKeyRef::first_at(start, 0);
        let mut entries = self.entries.range((Bound::Included(from), Bound::Unbounded));
        // The key being walked, its entry in force at `rev` so far, and how
        // many of its versions were walked.
        let mut key: Option<&Arc<[u8]>> = None;
        let mut in_force: Option<(&MvccKey, &Record)> = None;
        let mut walked = 0u64;
        loop {
            let next = entries.next();
            let next_key = next.map(|(k, _)| &k.key);
            if next_key != key {
                if let Some(kv) = in_force.take().and_then(|(k, r)| live(k, r)) {
                    if !visit(kv) {
                        return;
                    }
                }
                walked = 0;
                key = next_key;
            }
            let Some((k, r)) = next else { return };
            if end.is_some_and(|e| &*k.key >= e) {
                return;
            }
            walked += 1;
            if walked < SCAN_VERSIONS_WALKED_MAX {
                if k.rev <= rev {
                    in_force = Some((k, r));
                }
                continue;
            }
            // A long history: seek to the entry in force and past the key.
            in_force = self.entry_at(&k.key, rev);
            let after_key = MvccKeyRef::last_at(&k.key, u64::MAX);
            entries = self.entries.range((Bound::Excluded(after_key), Bound::Unbounded));
        }
    }

    /// Writes `record` for `key` at revision `(rev, sub)`: the pending revision
    /// of the current write transaction and the change's position in it. The
    /// caller has just read the key's newest version (every write reads it:
    /// a put for its version, a delete to find the key): `newest_lease` is that
    /// version's lease, 0 when the key has none or is deleted. Looking it up
    /// here instead was a second tree seek per write (measured: 13.6% of a
    /// put's instructions).
    pub(crate) fn write_over(
        &mut self,
        key: Arc<[u8]>,
        rev: u64,
        sub: u64,
        record: Record,
        newest_lease: i64,
    ) {
        assert!(rev > self.revision, "write at revision {rev} not above current {}", self.revision);
        // Move the key's lease attachment from its newest version to this one.
        let old_lease = newest_lease;
        let new_lease = match &record {
            Record::Put(v) => v.meta().lease,
            Record::Tombstone => 0,
        };
        // A put that keeps the key's lease leaves the attachment as it is.
        if old_lease != 0 && old_lease != new_lease {
            if let Some(l) = self.leases.get_mut(&old_lease) {
                l.keys.remove(&key);
            }
        }
        if new_lease != 0 && new_lease != old_lease {
            if let Some(l) = self.leases.get_mut(&new_lease) {
                l.keys.insert(key.clone());
            }
        }
        self.changes.push((rev, sub, key.clone()));
        self.size_bytes += entry_bytes(&key, &record);
        let replaced = self.entries.insert(MvccKey::new(key, rev, sub), record);
        assert!(replaced.is_none(), "revision ({rev}, {sub}) written twice");
    }

    /// Whether the change `(k, r)` is still an event a watch can see. Compaction
    /// at revision `c` keeps, for each key, only its last change at or below
    /// `c`, and not even that if it is a delete (as etcd does); so of the
    /// changes at `c` itself, a watch from `c` sees the puts that are their
    /// key's last change. Pruning removes the others in steps; this hides them
    /// at once, so what a watch sees never depends on how far pruning got.
    pub(crate) fn survives_compaction(&self, k: &MvccKey, r: &Record) -> bool {
        if k.rev > self.compact_revision {
            return true;
        }
        matches!(r, Record::Put(_))
            && self.entry_at(&k.key, self.compact_revision).is_some_and(|(newest, _)| newest == k)
    }

    /// The event that the entry `(k, r)` records. Its previous key-value is
    /// the key at the revision before (the state before the transaction, as
    /// etcd reads it), and none when that revision is compacted.
    fn event(&self, k: &MvccKey, r: &Record, prev_kv: bool) -> Event {
        let (kind, kv) = match live(k, r) {
            Some(kv) => (EventKind::Put, kv.to_key_value(true)),
            // etcd's delete event: the key and the revision of the delete.
            None => (
                EventKind::Delete,
                KeyValue { key: k.key.to_vec(), mod_revision: k.rev, ..KeyValue::default() },
            ),
        };
        let prev_kv = if prev_kv && k.rev > self.compact_revision {
            self.get_at(&k.key, k.rev - 1).map(|p| p.to_key_value(true))
        } else {
            None
        };
        Event { kind, kv, prev_kv }
    }

    /// The events of one key at revisions `from..=to`: a walk of its own
    /// history, however busy the other keys are, within about `limits` of
    /// its changes and bytes (never splitting a revision, as [`Mvcc::events`]).
    /// Returns the events and the first revision not visited.
    fn key_events(
        &self,
        key: &[u8],
        from: u64,
        to: u64,
        prev_kv: bool,
        limits: EventLimits,
    ) -> (Vec<Event>, u64) {
        let mut events = Vec::new();
        if from > to {
            return (events, to + 1);
        }
        let lo = MvccKeyRef::first_at(key, from);
        let hi = MvccKeyRef::last_at(key, to);
        let mut last_rev = from.saturating_sub(1);
        let mut bytes = 0u64;
        let history = self.entries.range((Bound::Included(lo), Bound::Included(hi)));
        for (visited, (k, r)) in (0u64..).zip(history) {
            if k.rev != last_rev && limits.reached(visited, bytes) {
                return (events, k.rev);
            }
            last_rev = k.rev;
            if self.survives_compaction(k, r) {
                let event = self.event(k, r, prev_kv);
                bytes = bytes.saturating_add(event.payload_bytes());
                events.push(event);
            }
        }
        (events, to + 1)
    }

    /// Rebuilds `changes` and the lease attachments from `entries` (after a
    /// restore); `leases` must hold the leases with empty key sets.
    pub(crate) fn rebuild_indices(&mut self) {
        let mut changes = Vec::with_capacity(self.entries.len());
        let mut newest: Option<(&MvccKey, &Record)> = None;
        let attach = |newest: Option<(&MvccKey, &Record)>, leases: &mut OrdMap<i64, Lease>| {
            if let Some((k, Record::Put(v))) = newest {
                if let Some(l) = leases.get_mut(&v.meta().lease) {
                    l.keys.insert(k.key.clone());
                }
            }
        };
        let mut size_bytes = LEASE_OVERHEAD_BYTES * self.leases.len() as u64;
        for (k, r) in self.entries.iter() {
            size_bytes += entry_bytes(&k.key, r);
            changes.push((k.rev, k.sub, k.key.clone()));
            if newest.is_some_and(|(n, _)| n.key != k.key) {
                attach(newest, &mut self.leases);
            }
            newest = Some((k, r));
        }
        attach(newest, &mut self.leases);
        self.changes = RevIndex::from_unsorted(changes);
        self.size_bytes = size_bytes;
    }

    /// Records a new lease (its id must be free).
    pub(crate) fn grant_lease(&mut self, id: i64, lease: Lease) {
        let replaced = self.leases.insert(id, lease);
        assert!(replaced.is_none(), "lease {id} granted twice");
        self.size_bytes += LEASE_OVERHEAD_BYTES;
    }

    /// Removes a lease, if it exists (its keys stay: the caller deletes them).
    pub(crate) fn revoke_lease(&mut self, id: i64) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.size_bytes -= LEASE_OVERHEAD_BYTES;
        Some(lease)
    }

    /// The events of `range` at revisions `from..=to`, in `(main, sub)` order
    /// (a transaction's in the order of its operations), visiting at most
    /// about `limits.changes` changes of any key and gathering about
    /// `limits.bytes` of keys and values. Returns the events and the first
    /// revision not visited. The caller checks `from` against compaction
    /// (`from >= compact_revision`): every entry above the compact revision is
    /// still here, and of those at it, the ones a watch may see.
    pub(crate) fn events(
        &self,
        range: KeyRange<'_>,
        from: u64,
        to: u64,
        prev_kv: bool,
        limits: EventLimits,
    ) -> (Vec<Event>, u64) {
        if let KeyRange::Single(key) = range {
            return self.key_events(key, from, to, prev_kv, limits);
        }
        let mut events = Vec::new();
        let mut bytes = 0u64;
        let start = (from, 0, Arc::<[u8]>::from(&[][..]));
        let mut last_rev = from.saturating_sub(1);
        for (visited, (rev, sub, key)) in (0u64..).zip(self.changes.range_from(&start)) {
            let rev = *rev;
            if rev > to {
                break;
            }
            // Stop only between revisions: a revision is never split.
            if rev != last_rev && limits.reached(visited, bytes) {
                return (events, rev);
            }
            last_rev = rev;
            if !range.contains(key) {
                continue;
            }
            let mkey = MvccKey::new(key.clone(), rev, *sub);
            let record = self.entries.get(&mkey).expect("the change index mirrors the entries");
            if self.survives_compaction(&mkey, record) {
                let event = self.event(&mkey, record, prev_kv);
                bytes = bytes.saturating_add(event.payload_bytes());
                events.push(event);
            }
        }
        (events, to + 1)
    }

    /// A revision `(rev, sub)` that two entries share, if any: impossible in a
    /// state built by writes, so a restored snapshot holding one is corrupt.
    pub(crate) fn duplicate_revision(&self) -> Option<(u64, u64)> {
        let mut last = None;
        for (rev, sub, _) in self.changes.iter() {
            if last == Some((*rev, *sub)) {
                return last;
            }
            last = Some((*rev, *sub));
        }
        None
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
        let from = MvccKeyRef::first_at(&cursor, 0);
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
            if let Some(record) = self.entries.remove(k) {
                self.size_bytes -= entry_bytes(&k.key, &record);
            }
            self.changes.remove(&(k.rev, k.sub, k.key.clone()));
        }
        self.prune_cursor = resume;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys around the prefix length: trailing zeros, a shared prefix, 0xff bytes.
    fn keys() -> Vec<Vec<u8>> {
        let mut keys = vec![vec![], vec![0], vec![0, 0], vec![0xff; 9], b"a".to_vec()];
        for base in [b"abcdefgh".to_vec(), b"abcdefg".to_vec()] {
            for tail in [&[][..], &[0], &[0, 0], &[1], &[0xff], b"x\0"] {
                keys.push([&base[..], tail].concat());
            }
            keys.push(base[..base.len() - 1].to_vec());
        }
        keys
    }

    /// The prefix is a shortcut only: map keys order, and compare equal, exactly as
    /// `(key bytes, rev, sub)` do, both owned and borrowed.
    #[test]
    fn map_keys_order_as_key_bytes_then_revision() {
        let keys = keys();
        let revs = [(1, 0), (1, 1), (2, 0)];
        for a in &keys {
            for b in &keys {
                for &(ra, sa) in &revs {
                    for &(rb, sb) in &revs {
                        let want = (a, ra, sa).cmp(&(b, rb, sb));
                        let ka = MvccKey::new(Arc::from(&a[..]), ra, sa);
                        let kb = MvccKey::new(Arc::from(&b[..]), rb, sb);
                        assert_eq!(ka.cmp(&kb), want, "{a:?}@{ra}.{sa} vs {b:?}@{rb}.{sb}");
                        assert_eq!(ka == kb, want.is_eq());
                        let r = MvccKeyRef { key: a, rev: ra, sub: sa, prefix: key_prefix(a) };
                        assert_eq!(r.compare(&kb), want);
                        assert_eq!(r.equivalent(&kb), want.is_eq());
                    }
                }
            }
        }
    }
}
