//! Simulated watchers, served the way the server serves them, and their checker.
//!
//! **The member side** does what `server::watch` does: a watch stream remembers the
//! next revision it owes its watcher, and whenever the member's applied revision
//! reaches it (checked after every `poll`), it reads the events of the watcher's range
//! from that revision on with [`kv::StateMachine::events`] — the member's MVCC history,
//! in batches of a bounded number of changes — and sends each non-empty batch. A
//! history already compacted ends the stream with a "compacted" notice, as etcd does.
//! A stream is a connection: its messages arrive in order, none is lost or doubled; a
//! cut link or a crash breaks it, and the watcher notices after a short while.
//!
//! **The watcher** behaves as an etcd client: it opens a watch on some member with a
//! start revision (0: from the member's next revision), remembers the revision after
//! the last event it received, and when its stream breaks — or now and then of its own
//! accord — reopens it on another member from there. Told that its history was
//! compacted, it starts again after the compact revision (an application re-reads the
//! state and watches on; etcd's client hands it `ErrCompacted` first).
//!
//! **The check**, on every event received: it must be the next event of the watcher's
//! range in the [`Reference`](super::reference::Reference) — the committed history —
//! from the watcher's start revision on: same revision, key, kind, value, versions,
//! lease, and previous key-value when asked for. So no gap, no duplicate, no reordering,
//! no invented value; a compacted notice is checked to be true (the start revision
//! really is compacted, and no further than the log compacted). At the end every
//! watcher must have received its range's whole history ([`KvCluster::watchers_caught_up`]).

use super::cluster::{kv_trace, KvCluster, KvEvent};
use super::reference::in_range;
use crate::checker::Violation;
use kv::{Event, EventKind, EventLimits, KvError};
use raft::NodeId;
use std::fmt::Write;

/// What a watcher asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// First key.
    pub key: Vec<u8>,
    /// End of the range in etcd's conventions (empty: the key alone; `[0]`: every key
    /// from `key` on).
    pub range_end: Vec<u8>,
    /// First revision wanted; 0 means the serving member's next revision.
    pub start_revision: u64,
    /// Ask for each event's previous key-value.
    pub prev_kv: bool,
}

/// A message on a watch stream, member to watcher.
pub(crate) enum WatchMsg {
    /// The watch exists and starts at this revision.
    Created { start_revision: u64 },
    /// Events of whole revisions, in order, and the serving member's compact
    /// revision when it read them (events at or below it are limited as etcd's).
    Events { events: Vec<Event>, compact_revision: u64 },
    /// The history from the requested revision on is compacted; the stream ends.
    Compacted { compact_revision: u64 },
    /// The connection broke (the watcher notices a while after the cause).
    Broken,
}

/// One member-side watch stream.
pub(crate) struct WatchStream {
    /// The watcher's connection number it serves.
    pub(crate) conn: u64,
    /// The first revision not yet sent.
    next_revision: u64,
    /// When its last message arrives: later ones arrive after it.
    last_arrival_us: u64,
}

/// One simulated watcher.
pub(crate) struct Watcher {
    /// `None` until a random watcher starts and draws what it watches.
    spec: Option<WatchSpec>,
    /// The client whose network confinement it shares, if there are clients.
    slot: Option<usize>,
    /// Member index it is connected (or connecting) to.
    member: usize,
    /// Connection number; messages of older connections are stale.
    conn: u64,
    /// The current connection's watch was created.
    created: bool,
    /// The revision to resume from: after the last event received, or the start (0
    /// until the first watch is created when the start was "now").
    next_revision: u64,
    /// Reference events below this revision are not owed (before the start, or lost
    /// to a compaction the watcher was told about).
    floor: u64,
    /// Position in the reference events of the next one to compare.
    cursor: usize,
    timer_token: u64,
}

impl Watcher {
    pub(crate) fn new(spec: Option<WatchSpec>, slot: Option<usize>, member: usize) -> Watcher {
        Watcher {
            spec,
            slot,
            member,
            conn: 0,
            created: false,
            next_revision: 0,
            floor: 0,
            cursor: 0,
            timer_token: 0,
        }
    }
}

fn show(k: &[u8]) -> String {
    String::from_utf8_lossy(k).escape_debug().to_string()
}

fn describe_event(e: &Event, prev_kv: bool) -> String {
    let kind = match e.kind {
        EventKind::Put => "put",
        EventKind::Delete => "delete",
    };
    let mut s = format!(
        "(rev {}, {kind} {} = {:?}, created {}, version {}, lease {})",
        e.kv.mod_revision,
        show(&e.kv.key),
        show(&e.kv.value),
        e.kv.create_revision,
        e.kv.version,
        e.kv.lease
    );
    if prev_kv {
        let prev = e.prev_kv.as_ref().map(|p| (p.mod_revision, show(&p.value)));
        let _ = write!(s, " prev {prev:?}");
    }
    s
}

/// The same event as the watcher asked for it (prev_kv only if requested). An event
/// at or below the serving member's compact revision `compact` has no previous
/// key-value: that revision's predecessor is compacted (etcd's behaviour).
fn same_event(expected: &Event, got: &Event, prev_kv: bool, compact: u64) -> bool {
    let prev_ok = if got.kv.mod_revision <= compact {
        got.prev_kv.is_none()
    } else {
        expected.prev_kv == got.prev_kv
    };
    expected.kind == got.kind && expected.kv == got.kv && (!prev_kv || prev_ok)
}

/// Whether the committed event `events[i]` is still visible to a watch once history
/// is compacted at `compact`: events above it are; of those at or below it, only a
/// put that is its key's last change in its revision (compaction keeps each key's last
/// version at or below the compact revision, and no deletes; as etcd's).
fn survives_compaction(events: &[Event], i: usize, compact: u64) -> bool {
    let e = &events[i];
    if e.kv.mod_revision > compact {
        return true;
    }
    e.kind == EventKind::Put
        && !events[i + 1..]
            .iter()
            .take_while(|later| later.kv.mod_revision == e.kv.mod_revision)
            .any(|later| later.kv.key == e.kv.key)
}

impl KvCluster {
    /// Opens a watch on member `member` now; returns the watcher's number. It reconnects
    /// elsewhere when its stream breaks, and is checked like the random watchers.
    pub fn watch(&mut self, member: NodeId, spec: WatchSpec) -> usize {
        let w = self.watchers.len();
        let slot = (!self.clients.is_empty()).then(|| w % self.clients.len());
        self.watchers.push(Watcher::new(Some(spec.clone()), slot, member as usize - 1));
        self.watch_begin(w, spec);
        w
    }

    /// True when every watcher has received every committed event of its range from
    /// its start on.
    pub fn watchers_caught_up(&self) -> bool {
        (0..self.watchers.len()).all(|w| self.watch_owed(w).is_none())
    }

    /// Which watchers still miss events, and the first they miss.
    pub(crate) fn watch_lag_report(&self) -> String {
        let mut out = String::new();
        for w in 0..self.watchers.len() {
            match self.watch_owed(w) {
                None => {}
                Some(Err(why)) => {
                    let _ = write!(out, "w{w}: {why}; ");
                }
                Some(Ok(e)) => {
                    let wt = &self.watchers[w];
                    let _ = write!(
                        out,
                        "w{w} on n{} (created: {}) misses {}; ",
                        wt.member + 1,
                        wt.created,
                        describe_event(e, false)
                    );
                }
            }
        }
        out
    }

    /// The first event watcher `w` is owed, or why it cannot be told (`Err`: not
    /// watching yet).
    fn watch_owed(&self, w: usize) -> Option<Result<&Event, &'static str>> {
        let wt = &self.watchers[w];
        let Some(spec) = &wt.spec else { return Some(Err("not started")) };
        if wt.next_revision == 0 {
            return Some(Err("no watch created yet"));
        }
        let events = &self.reference.events;
        let compact = self.reference.state().compact_revision();
        (wt.cursor.min(events.len())..events.len())
            .find(|&i| {
                let e = &events[i];
                e.kv.mod_revision >= wt.floor
                    && in_range(&spec.key, &spec.range_end, &e.kv.key)
                    && survives_compaction(events, i, compact)
            })
            .map(|i| Ok(&events[i]))
    }

    /// A random watcher starts: it draws its range, start and options.
    pub(crate) fn on_watch_start(&mut self, w: usize) {
        let r = &mut self.rng_watch;
        let key_no =
            |r: &mut raft::Rng, n: usize| format!("k{}", r.range(0, n as u64)).into_bytes();
        let (key, range_end) = match r.range(0, 4) {
            0 => (key_no(r, self.cfg.keys), Vec::new()),
            1 => (b"k".to_vec(), b"l".to_vec()),
            2 => (vec![0], vec![0]),
            _ => (b"k1".to_vec(), b"k4".to_vec()),
        };
        let revision = self.reference.state().revision();
        let start_revision = match r.range(0, 5) {
            0 | 1 => 0,
            2 => 1,
            _ => revision.saturating_sub(r.range(0, 100)).max(1),
        };
        let prev_kv = r.chance(0.5);
        let spec = WatchSpec { key, range_end, start_revision, prev_kv };
        self.watchers[w].spec = Some(spec.clone());
        self.watch_begin(w, spec);
    }

    fn watch_begin(&mut self, w: usize, spec: WatchSpec) {
        kv_trace!(
            self,
            "w{w} watches {}..{} from rev {}{}",
            show(&spec.key),
            show(&spec.range_end),
            spec.start_revision,
            if spec.prev_kv { " with prev_kv" } else { "" }
        );
        if spec.start_revision > 0 {
            self.watch_set_floor(w, spec.start_revision);
        }
        let member = self.watchers[w].member;
        self.watch_connect(w, member);
    }

    fn watch_set_floor(&mut self, w: usize, revision: u64) {
        let cursor = self.reference.first_event_from(revision);
        let wt = &mut self.watchers[w];
        wt.next_revision = revision;
        wt.floor = revision;
        wt.cursor = cursor;
    }

    fn watch_link_up(&self, w: usize, member: usize) -> bool {
        let id = member as NodeId + 1;
        match self.watchers[w].slot {
            Some(c) => self.client_link_up(c, id),
            None => self.net.is_connected(id),
        }
    }

    fn arm_watch_timer(&mut self, w: usize, after_us: u64) {
        let wt = &mut self.watchers[w];
        wt.timer_token += 1;
        let token = wt.timer_token;
        self.queue.push(self.now_us + after_us, KvEvent::WatchTimer { watcher: w, token });
    }

    /// Opens (or reopens) watcher `w`'s stream on `member` from its resume revision.
    fn watch_connect(&mut self, w: usize, member: usize) {
        self.watch_close(w);
        let broken = self.cfg.broken_watch_resume;
        let wt = &mut self.watchers[w];
        if broken && wt.conn > 0 && wt.next_revision > 0 {
            wt.next_revision += 1; // the bug the checker must catch
        }
        wt.conn += 1;
        wt.created = false;
        wt.member = member;
        let (conn, start_revision) = (wt.conn, wt.next_revision);
        let up = self.watch_link_up(w, member);
        let incarnation = self.members[member].incarnation;
        let delay = self.net.cfg.sample_delay_us(&mut self.rng_watch, false);
        kv_trace!(
            self,
            "w{w} -> n{} watch from rev {start_revision} (conn {conn}){}",
            member + 1,
            if up { "" } else { " cut" }
        );
        if up {
            let ev = KvEvent::WatchCreate { member, incarnation, watcher: w, conn, start_revision };
            self.queue.push(self.now_us + delay, ev);
        }
        let timeout = self.cfg.client_timeout_us;
        self.arm_watch_timer(w, timeout);
    }

    /// The watcher hangs up: its member forgets the stream.
    fn watch_close(&mut self, w: usize) {
        let (member, conn) = (self.watchers[w].member, self.watchers[w].conn);
        let streams = &mut self.members[member].watch_streams;
        if streams.get(&w).is_some_and(|s| s.conn == conn) {
            streams.remove(&w);
        }
    }

    /// A member receives a watch request.
    pub(crate) fn on_watch_create(
        &mut self,
        (member, incarnation): (usize, u64),
        w: usize,
        conn: u64,
        start_revision: u64,
    ) {
        let up = self.watch_link_up(w, member);
        let m = &mut self.members[member];
        let live = m.incarnation == incarnation && m.node.is_some();
        if !up || !live || self.watchers[w].conn != conn {
            return;
        }
        let revision = m.node.as_ref().expect("live").state().revision();
        let start = if start_revision == 0 { revision + 1 } else { start_revision };
        let stream = WatchStream { conn, next_revision: start, last_arrival_us: self.now_us };
        m.watch_streams.insert(w, stream);
        if self.watch_send(member, w, WatchMsg::Created { start_revision: start }) {
            self.serve_watch(member, w);
        }
    }

    /// Serves every stream of member `idx` (after it applied something).
    pub(crate) fn serve_watches(&mut self, idx: usize) {
        let ws: Vec<usize> = self.members[idx].watch_streams.keys().copied().collect();
        for w in ws {
            self.serve_watch(idx, w);
        }
    }

    /// Sends watcher `w` every event its stream on member `idx` owes, batch by batch, as
    /// the server's catch-up does.
    fn serve_watch(&mut self, idx: usize, w: usize) {
        loop {
            let m = &self.members[idx];
            let (Some(node), Some(stream)) = (m.node.as_ref(), m.watch_streams.get(&w)) else {
                return;
            };
            let state = node.state();
            let compact_revision = state.compact_revision();
            let from = stream.next_revision;
            if from > state.revision() {
                return;
            }
            let spec = self.watchers[w].spec.as_ref().expect("a watching watcher has a spec");
            let limits = EventLimits {
                changes: self.cfg.watch_batch_changes,
                bytes: self.cfg.watch_batch_bytes,
            };
            let batch = state.events_within(
                &spec.key,
                &spec.range_end,
                from,
                u64::MAX,
                spec.prev_kv,
                limits,
            );
            let batch = match batch {
                Ok(batch) => batch,
                Err(KvError::Compacted { compact_revision, .. }) => {
                    self.watch_send(idx, w, WatchMsg::Compacted { compact_revision });
                    self.members[idx].watch_streams.remove(&w);
                    return;
                }
                Err(e) => {
                    let details = format!("n{} cannot serve w{w} from rev {from}: {e}", idx + 1);
                    return self.record(Violation::new("Watch", details));
                }
            };
            if batch.next_revision <= from {
                let details = format!(
                    "n{}'s events from rev {from} end at {}: no progress",
                    idx + 1,
                    batch.next_revision
                );
                return self.record(Violation::new("Watch", details));
            }
            let stream = self.members[idx].watch_streams.get_mut(&w).expect("serving");
            stream.next_revision = batch.next_revision;
            if !batch.events.is_empty()
                && !self.watch_send(
                    idx,
                    w,
                    WatchMsg::Events { events: batch.events, compact_revision },
                )
            {
                return;
            }
            if batch.next_revision > batch.revision {
                return;
            }
        }
    }

    /// Sends one stream message, in order after the previous ones; false if the
    /// connection broke instead (the watcher hears of it a little later).
    fn watch_send(&mut self, idx: usize, w: usize, msg: WatchMsg) -> bool {
        let conn = self.members[idx].watch_streams[&w].conn;
        if !self.watch_link_up(w, idx) {
            self.members[idx].watch_streams.remove(&w);
            self.watch_broken_later(w, conn);
            return false;
        }
        self.stats.watch_messages += 1;
        let delay = self.net.cfg.sample_delay_us(&mut self.rng_watch, true);
        let stream = self.members[idx].watch_streams.get_mut(&w).expect("serving");
        let at = (self.now_us + delay).max(stream.last_arrival_us);
        stream.last_arrival_us = at;
        self.queue.push(at, KvEvent::WatchDeliver { watcher: w, conn, msg });
        true
    }

    /// Watcher `w` learns, after a detection delay, that connection `conn` broke.
    fn watch_broken_later(&mut self, w: usize, conn: u64) {
        let after = self.rng_watch.range(50_000, 500_001);
        let msg = WatchMsg::Broken;
        self.queue.push(self.now_us + after, KvEvent::WatchDeliver { watcher: w, conn, msg });
    }

    /// Member `idx` lost power: its streams break.
    pub(crate) fn break_watch_streams(&mut self, idx: usize) {
        let streams = std::mem::take(&mut self.members[idx].watch_streams);
        for (w, s) in streams {
            self.watch_broken_later(w, s.conn);
        }
    }

    pub(crate) fn on_watch_timer(&mut self, w: usize, token: u64) {
        let wt = &self.watchers[w];
        if token != wt.timer_token {
            return;
        }
        if wt.spec.is_none() {
            return self.on_watch_start(w);
        }
        if wt.created && !self.clients_active {
            // Clients stopped: watchers stop moving too, or a move every half second
            // against replies held back up to 2 s could keep one behind for good (kv
            // seed 1642). A stream that breaks or a create that times out still retries.
            return;
        }
        let n = self.members.len() as u64;
        let next = (wt.member as u64 + 1 + self.rng_watch.range(0, n.max(2) - 1)) % n;
        if wt.created {
            kv_trace!(self, "w{w} moves to n{}", next + 1);
        } else {
            self.stats.watch_reconnects += 1;
        }
        self.watch_connect(w, next as usize);
    }

    pub(crate) fn on_watch_deliver(&mut self, w: usize, conn: u64, msg: WatchMsg) {
        let wt = &self.watchers[w];
        let member = wt.member;
        if conn != wt.conn {
            return;
        }
        if matches!(msg, WatchMsg::Broken) || !self.watch_link_up(w, member) {
            kv_trace!(self, "w{w} stream to n{} broken", member + 1);
            self.watch_close(w);
            let wt = &mut self.watchers[w];
            wt.conn += 1;
            wt.created = false;
            let after = self.rng_watch.range(10_000, 100_001);
            return self.arm_watch_timer(w, after);
        }
        match msg {
            WatchMsg::Created { start_revision } => self.on_watch_created(w, start_revision),
            WatchMsg::Events { events, compact_revision } => {
                self.on_watch_events(w, events, compact_revision)
            }
            WatchMsg::Compacted { compact_revision } => {
                self.on_watch_compacted(w, compact_revision)
            }
            WatchMsg::Broken => unreachable!("handled above"),
        }
    }

    fn on_watch_created(&mut self, w: usize, start_revision: u64) {
        let wt = &self.watchers[w];
        let (member, asked) = (wt.member, wt.next_revision);
        kv_trace!(self, "w{w} <- n{} created from rev {start_revision}", member + 1);
        if asked != 0 && asked != start_revision {
            let details =
                format!("w{w} asked n{} for rev {asked} but got rev {start_revision}", member + 1);
            return self.record(Violation::new("Watch", details));
        }
        if asked == 0 {
            self.watch_set_floor(w, start_revision);
        }
        self.watchers[w].created = true;
        match self.cfg.watch_move_mean_us.filter(|_| self.clients_active) {
            Some(mean) => {
                let after = self.rng_watch.range(1, 2 * mean.max(1) + 1);
                self.arm_watch_timer(w, after);
            }
            None => self.watchers[w].timer_token += 1, // cancels the connect timeout
        }
    }

    /// Each event must be the next one the reference owes this watcher.
    fn on_watch_events(&mut self, w: usize, events: Vec<Event>, compact: u64) {
        let member = self.watchers[w].member;
        let (first, last) = (events[0].kv.mod_revision, events[events.len() - 1].kv.mod_revision);
        kv_trace!(self, "w{w} <- n{} {} events revs {first}..{last}", member + 1, events.len());
        for got in &events {
            if let Err(details) = self.watch_check_event(w, got, compact) {
                return self.record(Violation::new("Watch (committed history)", details));
            }
            self.stats.watch_events += 1;
        }
    }

    /// `compact`: the serving member's compact revision (events at it that compaction
    /// does not keep are skipped, as etcd's watch skips them).
    fn watch_check_event(&mut self, w: usize, got: &Event, compact: u64) -> Result<(), String> {
        let wt = &self.watchers[w];
        let spec = wt.spec.as_ref().expect("watching");
        let events = &self.reference.events;
        let mut cursor = wt.cursor;
        while cursor < events.len() {
            let e = &events[cursor];
            if e.kv.mod_revision >= wt.floor
                && in_range(&spec.key, &spec.range_end, &e.kv.key)
                && survives_compaction(events, cursor, compact)
            {
                break;
            }
            cursor += 1;
        }
        let member = wt.member + 1;
        let Some(expected) = events.get(cursor) else {
            return Err(format!(
                "w{w} got {} from n{member}, but the committed history has no further event in its range (reference revision {})",
                describe_event(got, spec.prev_kv),
                self.reference.state().revision()
            ));
        };
        if !same_event(expected, got, spec.prev_kv, compact) {
            let what = match got.kv.mod_revision.cmp(&expected.kv.mod_revision) {
                std::cmp::Ordering::Greater => "a gap: it skipped",
                std::cmp::Ordering::Less => "a duplicate or reordered event instead of",
                std::cmp::Ordering::Equal => "a different event than",
            };
            return Err(format!(
                "w{w} (range {}..{}, from rev {}) got {} from n{member}: {what} {}",
                show(&spec.key),
                show(&spec.range_end),
                wt.floor,
                describe_event(got, spec.prev_kv),
                describe_event(expected, spec.prev_kv)
            ));
        }
        let wt = &mut self.watchers[w];
        wt.cursor = cursor + 1;
        wt.next_revision = got.kv.mod_revision + 1;
        Ok(())
    }

    /// A compacted notice must be true; then the watcher starts over after it.
    fn on_watch_compacted(&mut self, w: usize, compact_revision: u64) {
        let wt = &self.watchers[w];
        let (member, asked) = (wt.member, wt.next_revision);
        let log_compact = self.reference.state().compact_revision();
        kv_trace!(self, "w{w} <- n{} compacted at rev {compact_revision}", member + 1);
        // kv refuses only a start below the compact revision (etcd's rule).
        if compact_revision <= asked || compact_revision > log_compact {
            let details = format!(
                "n{} told w{w} (resuming at rev {asked}) that history is compacted up to rev {compact_revision}; the log compacted up to {log_compact}",
                member + 1
            );
            return self.record(Violation::new("Watch (compaction)", details));
        }
        self.stats.watch_compacted += 1;
        self.watch_set_floor(w, compact_revision + 1);
        let wt = &mut self.watchers[w];
        wt.conn += 1;
        wt.created = false;
        self.arm_watch_timer(w, 0);
    }
}
