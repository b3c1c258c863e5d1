//! Prometheus metrics, kept as atomics the node thread and the gRPC handlers update and
//! `GET /metrics` renders in the text exposition format.
//!
//! Besides raftkv's own `raftkv_*` series, the series etcd 3.4 exports that its
//! operators' dashboards and the etcd mixin's alerts read are rendered with etcd's names,
//! label names, types and buckets (see [`ETCD_MIXIN_ALERT_SERIES`]), so those alerts work
//! unchanged against a raftkv cluster.

use raft::NodeId;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A histogram with fixed bucket bounds in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Bucket bounds for latencies: 50 µs to 5 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

impl Histogram {
    /// An empty histogram over `bounds` (ascending, in seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The histogram's lines without HELP and TYPE, each with `labels` (`a="x",b="y"`,
    /// or empty) besides the bucket's `le`.
    pub fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let (sep, braced) =
            if labels.is_empty() { ("", String::new()) } else { (",", format!("{{{labels}}}")) };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let n = c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braced} {sum}\n{name}_count{braced} {count}");
    }
}

/// etcd's bucket bounds for its disk latencies (`etcd_disk_wal_fsync_duration_seconds`):
/// 1 ms doubling to 8.192 s, so dashboards and alert thresholds read the same buckets.
pub const ETCD_DISK_BOUNDS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// etcd's bucket bounds for `etcd_network_peer_round_trip_time_seconds`
/// (`prometheus.ExponentialBuckets(0.0001, 2, 16)`): 0.1 ms doubling to 3.2768 s.
pub const ETCD_PEER_RTT_BOUNDS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// Most peers with series of their own: far more members than any cluster has (etcd
/// advises at most 7), so that a member table grown without bound cannot grow a scrape
/// without bound; peers past it (by id) are counted only in the unlabelled series.
pub const PEER_SERIES_MAX: usize = 1024;

/// One peer's series, etcd's `{To="<member id in hex>"}`.
#[derive(Debug)]
pub struct PeerSeries {
    sent_failures: AtomicU64,
    round_trip_seconds: Histogram,
}

impl Default for PeerSeries {
    fn default() -> Self {
        PeerSeries {
            sent_failures: AtomicU64::new(0),
            round_trip_seconds: Histogram::new(ETCD_PEER_RTT_BOUNDS),
        }
    }
}

impl PeerSeries {
    /// Records `messages` Raft messages to this peer that were not sent: dropped because
    /// its queue was full or no stream to it was open, or lost in a write that failed
    /// (`etcd_network_peer_sent_failures_total`, which etcd counts per message too).
    pub fn failed(&self, messages: u64) {
        self.sent_failures.fetch_add(messages, Ordering::Relaxed);
    }

    /// Records one round trip to this peer that took `took`.
    pub fn observe_round_trip(&self, took: Duration) {
        self.round_trip_seconds.observe(took.as_secs_f64());
    }

    /// Messages counted by [`PeerSeries::failed`] so far.
    pub fn sent_failures(&self) -> u64 {
        self.sent_failures.load(Ordering::Relaxed)
    }

    /// Round trips observed so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trip_seconds.count()
    }
}

/// The per-peer series: one [`PeerSeries`] per peer of the member table, created when
/// the transport learns a member and dropped (its series gone from the scrape) when the
/// member is removed, so a removed member leaves no stale `To` series behind (etcd 3.4
/// keeps them until it restarts).
#[derive(Debug, Default)]
pub struct PeerMetrics {
    peers: Mutex<BTreeMap<NodeId, Arc<PeerSeries>>>,
}

impl PeerMetrics {
    /// Makes the peer set `peers` (this member left out by the caller): keeps the series
    /// of peers still listed, adds empty ones for new peers (at most
    /// [`PEER_SERIES_MAX`], lowest ids first), drops the others.
    pub fn set_peers(&self, peers: impl IntoIterator<Item = NodeId>) {
        let mut wanted: Vec<NodeId> = peers.into_iter().collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted.truncate(PEER_SERIES_MAX);
        let mut map = self.peers.lock().expect("peer metrics lock");
        map.retain(|id, _| wanted.binary_search(id).is_ok());
        for id in wanted {
            map.entry(id).or_default();
        }
        assert!(map.len() <= PEER_SERIES_MAX, "peer series are bounded");
    }

    /// `peer`'s series, if it is a peer now.
    pub fn get(&self, peer: NodeId) -> Option<Arc<PeerSeries>> {
        self.peers.lock().expect("peer metrics lock").get(&peer).cloned()
    }

    /// etcd's two per-peer series, with etcd's help texts; nothing without peers, as
    /// etcd shows no vector without children. Unlike etcd's, a peer's failure counter is
    /// shown from 0 before its first failure, so `rate()` sees the first one.
    fn render(&self, out: &mut String) {
        let peers = self.peers.lock().expect("peer metrics lock").clone();
        if peers.is_empty() {
            return;
        }
        let failures = "etcd_network_peer_sent_failures_total";
        let _ = writeln!(
            out,
            "# HELP {failures} The total number of send failures from peers.\n# TYPE {failures} counter"
        );
        for (id, series) in &peers {
            let _ = writeln!(out, "{failures}{{To=\"{id:x}\"}} {}", series.sent_failures());
        }
        let rtt = "etcd_network_peer_round_trip_time_seconds";
        let _ = writeln!(
            out,
            "# HELP {rtt} Round-Trip-Time histogram between peers\n# TYPE {rtt} histogram"
        );
        for (id, series) in &peers {
            series.round_trip_seconds.render_series(out, rtt, &format!("To=\"{id:x}\""));
        }
    }
}

/// The series the etcd mixin's alerts read (etcd-io/etcd `contrib/mixin/alerts/
/// alerts.libsonnet`, read at commit c34dc7ee, August 2026; a histogram by its `_bucket`
/// series, as the alerts name it). Prometheus's own `up` is left out: the scraper makes
/// it, not the target. Each is rendered by [`Metrics::render`] or listed in the README's
/// table of series not exported, with the reason (a test checks it).
pub const ETCD_MIXIN_ALERT_SERIES: &[&str] = &[
    "etcd_network_peer_sent_failures_total",
    "etcd_server_has_leader",
    "etcd_server_leader_changes_seen_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "etcd_network_peer_round_trip_time_seconds_bucket",
    "etcd_server_proposals_failed_total",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_server_quota_backend_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
];

/// Everything `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    /// Current Raft term.
    pub term: AtomicU64,
    /// The state machine's size estimate in bytes (what the space quota counts).
    pub db_size_bytes: AtomicU64,
    /// Known leader's member id (0: none).
    pub leader: AtomicU64,
    /// 1 if this member leads.
    pub is_leader: AtomicU64,
    /// Commit index.
    pub commit_index: AtomicU64,
    /// Applied index.
    pub applied_index: AtomicU64,
    /// Writes answered with a result.
    pub proposals_committed: AtomicU64,
    /// Writes answered with an error (not leader, timeout, too large, busy).
    pub proposals_failed: AtomicU64,
    /// Leadership changes seen.
    pub leader_changes: AtomicU64,
    /// Peer messages dropped because a peer's queue was full or it was unreachable.
    pub peer_messages_dropped: AtomicU64,
    /// Snapshot writes that failed (each is retried after a back-off).
    pub snapshot_failures: AtomicU64,
    /// Peer messages dropped on arrival: malformed, out of bounds, or in the name of a
    /// member other than the stream's (see `peer_guard`).
    pub peer_messages_invalid: AtomicU64,
    /// Failed accepts on the peer, client and metrics listeners (each followed by a pause).
    pub accept_errors: AtomicU64,
    /// Duration of each WAL sync.
    pub fsync_seconds: Histogram,
    /// The same, in etcd's buckets ([`ETCD_DISK_BOUNDS`]).
    pub etcd_fsync_seconds: Histogram,
    /// Duration of applying a batch of committed entries.
    pub apply_seconds: Histogram,
    /// Round trip of peer message batches (send to acknowledgement).
    pub peer_rtt_seconds: Histogram,
    /// A write this member forwarded to the leader: from queueing it to the leader's
    /// answer (the batch's wait to be sent included).
    pub forward_seconds: Histogram,
    /// A forwarded write the leader answered: the wait until this member has applied
    /// the leader's applied index too, before the client is answered.
    pub forward_apply_wait_seconds: Histogram,
    /// Client requests refused with "too many requests" because the node thread's input
    /// or the read workers' queue was full.
    pub too_many_requests: AtomicU64,
    /// Time the node thread spends on one batch (inputs, tick, poll, sync, answers):
    /// how long a heartbeat can wait behind other work.
    pub node_loop_seconds: Histogram,
    /// The longest batch so far, in microseconds.
    pub node_loop_longest_micros: AtomicU64,
    /// The longest apply of one batch so far (on the applier thread), in microseconds.
    pub apply_longest_micros: AtomicU64,
    /// Batches of writes this member forwarded to a leader: on the peer frame stream
    /// (`[0]`) and as gRPC calls (`[1]`: a leader of an earlier version, or no stream).
    pub forwarded_batches: [AtomicU64; 2],
    /// Writes proposed on this member and not yet applied (etcd's `proposals_pending`).
    pub proposals_pending: AtomicU64,
    /// `--quota-backend-bytes` (0: no quota).
    pub quota_bytes: AtomicU64,
    /// The client gRPC calls, by method and code.
    pub grpc: std::sync::Arc<crate::grpc_metrics::GrpcMetrics>,
    /// etcd's per-peer series (`To`), fed by the peer transport.
    pub peers: PeerMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            term: AtomicU64::new(0),
            db_size_bytes: AtomicU64::new(0),
            leader: AtomicU64::new(0),
            is_leader: AtomicU64::new(0),
            commit_index: AtomicU64::new(0),
            applied_index: AtomicU64::new(0),
            proposals_committed: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            peer_messages_dropped: AtomicU64::new(0),
            snapshot_failures: AtomicU64::new(0),
            peer_messages_invalid: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            fsync_seconds: Histogram::new(LATENCY_BOUNDS),
            etcd_fsync_seconds: Histogram::new(ETCD_DISK_BOUNDS),
            apply_seconds: Histogram::new(LATENCY_BOUNDS),
            peer_rtt_seconds: Histogram::new(LATENCY_BOUNDS),
            forward_seconds: Histogram::new(LATENCY_BOUNDS),
            forward_apply_wait_seconds: Histogram::new(LATENCY_BOUNDS),
            too_many_requests: AtomicU64::new(0),
            node_loop_seconds: Histogram::new(LATENCY_BOUNDS),
            node_loop_longest_micros: AtomicU64::new(0),
            apply_longest_micros: AtomicU64::new(0),
            forwarded_batches: Default::default(),
            proposals_pending: AtomicU64::new(0),
            quota_bytes: AtomicU64::new(0),
            grpc: Default::default(),
            peers: PeerMetrics::default(),
        }
    }
}

impl Metrics {
    /// Records one node thread batch of `took`.
    pub fn observe_node_loop(&self, took: std::time::Duration) {
        self.node_loop_seconds.observe(took.as_secs_f64());
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.node_loop_longest_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// Records one WAL sync (the node thread's group commit) that took `took`.
    pub fn observe_fsync(&self, took: std::time::Duration) {
        self.fsync_seconds.observe(took.as_secs_f64());
        self.etcd_fsync_seconds.observe(took.as_secs_f64());
    }

    /// Records one applied batch that took `took`.
    pub fn observe_apply(&self, took: std::time::Duration) {
        self.apply_seconds.observe(took.as_secs_f64());
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.apply_longest_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauges: [(&str, &str, &AtomicU64); 15] = [
            ("raftkv_term", "current Raft term", &self.term),
            ("raftkv_leader_id", "member id of the known leader (0: none)", &self.leader),
            ("raftkv_is_leader", "1 if this member leads", &self.is_leader),
            ("raftkv_commit_index", "Raft commit index", &self.commit_index),
            ("raftkv_applied_index", "last applied log index", &self.applied_index),
            (
                "raftkv_proposals_committed_total",
                "writes answered with a result",
                &self.proposals_committed,
            ),
            (
                "raftkv_proposals_failed_total",
                "writes answered with an error",
                &self.proposals_failed,
            ),
            ("raftkv_leader_changes_total", "leadership changes seen", &self.leader_changes),
            (
                "raftkv_peer_messages_dropped_total",
                "peer messages dropped (queue full or peer unreachable)",
                &self.peer_messages_dropped,
            ),
            (
                "raftkv_peer_messages_invalid_total",
                "peer messages dropped on arrival (malformed, out of bounds, or another member's name)",
                &self.peer_messages_invalid,
            ),
            (
                "raftkv_too_many_requests_total",
                "client requests refused because the node input or read queue was full",
                &self.too_many_requests,
            ),
            (
                "raftkv_node_loop_longest_microseconds",
                "longest node thread batch so far",
                &self.node_loop_longest_micros,
            ),
            (
                "raftkv_apply_longest_microseconds",
                "longest apply of one batch so far (on the applier thread)",
                &self.apply_longest_micros,
            ),
            (
                "raftkv_snapshot_failures_total",
                "snapshot writes that failed (the WAL is kept; retried with back-off)",
                &self.snapshot_failures,
            ),
            (
                "raftkv_accept_errors_total",
                "failed accepts on the peer, client and metrics listeners (each followed by a pause)",
                &self.accept_errors,
            ),
        ];
        for (name, help, v) in gauges {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        let db_size = "raftkv_db_size_bytes";
        let _ = writeln!(
            out,
            "# HELP {db_size} estimated bytes of the state (what --quota-backend-bytes counts)\n# TYPE {db_size} gauge\n{db_size} {}",
            self.db_size_bytes.load(Ordering::Relaxed)
        );
        let forwarded = "raftkv_forwarded_batches_total";
        let _ = writeln!(
            out,
            "# HELP {forwarded} batches of writes forwarded to a leader, by transport\n# TYPE {forwarded} counter"
        );
        for (transport, n) in ["frame", "grpc"].iter().zip(&self.forwarded_batches) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{forwarded}{{transport=\"{transport}\"}} {n}");
        }
        self.fsync_seconds.render(&mut out, "raftkv_wal_fsync_seconds", "WAL sync latency");
        self.apply_seconds.render(&mut out, "raftkv_apply_seconds", "apply latency per batch");
        self.peer_rtt_seconds.render(&mut out, "raftkv_peer_rtt_seconds", "peer round-trip time");
        self.forward_seconds.render(
            &mut out,
            "raftkv_forward_seconds",
            "a write forwarded to the leader, until its answer",
        );
        self.forward_apply_wait_seconds.render(
            &mut out,
            "raftkv_forward_apply_wait_seconds",
            "a forwarded write's wait to be applied on this member too",
        );
        self.node_loop_seconds.render(
            &mut out,
            "raftkv_node_loop_seconds",
            "node thread time per batch of inputs",
        );
        self.render_etcd(&mut out);
        out
    }

    /// etcd 3.4's series that dashboards and alerts use most, with etcd's names, types
    /// and (absent) labels, from the same counters as the `raftkv_*` series.
    fn render_etcd(&self, out: &mut String) {
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let has_leader = u64::from(load(&self.leader) != 0);
        let series: [(&str, &str, &str, u64); 10] = [
            ("etcd_server_has_leader", "gauge", "1 if a leader exists", has_leader),
            ("etcd_server_is_leader", "gauge", "1 if this member leads", load(&self.is_leader)),
            (
                "etcd_server_leader_changes_seen_total",
                "counter",
                "leader changes seen",
                load(&self.leader_changes),
            ),
            (
                "etcd_server_proposals_committed_total",
                "gauge",
                "the Raft commit index (etcd's meaning)",
                load(&self.commit_index),
            ),
            (
                "etcd_server_proposals_applied_total",
                "gauge",
                "the applied index (etcd's meaning)",
                load(&self.applied_index),
            ),
            (
                "etcd_server_proposals_failed_total",
                "counter",
                "writes answered with an error",
                load(&self.proposals_failed),
            ),
            (
                "etcd_server_proposals_pending",
                "gauge",
                "writes proposed on this member and not yet applied",
                load(&self.proposals_pending),
            ),
            (
                "etcd_server_quota_backend_bytes",
                "gauge",
                "--quota-backend-bytes (0: no quota)",
                load(&self.quota_bytes),
            ),
            (
                "etcd_mvcc_db_total_size_in_bytes",
                "gauge",
                "raftkv's estimate of the state's bytes (what the quota counts)",
                load(&self.db_size_bytes),
            ),
            (
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "gauge",
                "the same estimate: raftkv's state has no free pages, all of it is in use",
                load(&self.db_size_bytes),
            ),
        ];
        for (name, kind, help, v) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        self.etcd_fsync_seconds.render(
            out,
            "etcd_disk_wal_fsync_duration_seconds",
            "WAL sync latency (the node thread's group commit)",
        );
        self.grpc.render(out);
        self.peers.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_cumulatively() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(0.0005);
        h.observe(0.005);
        h.observe(1.0);
        let mut s = String::new();
        h.render(&mut s, "x", "y");
        assert!(s.contains("x_bucket{le=\"0.001\"} 1"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.01\"} 2"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3"), "{s}");
        assert!(s.contains("x_count 3"), "{s}");
    }

    #[test]
    fn etcds_series_come_from_the_same_counters() {
        let m = Metrics::default();
        m.leader.store(7, Ordering::Relaxed);
        m.commit_index.store(12, Ordering::Relaxed);
        m.applied_index.store(11, Ordering::Relaxed);
        m.db_size_bytes.store(4096, Ordering::Relaxed);
        m.observe_fsync(std::time::Duration::from_millis(3));
        let s = m.render();
        for line in [
            "# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1",
            "# TYPE etcd_server_proposals_committed_total gauge\netcd_server_proposals_committed_total 12",
            "etcd_server_proposals_applied_total 11",
            "# TYPE etcd_mvcc_db_total_size_in_bytes gauge\netcd_mvcc_db_total_size_in_bytes 4096",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 0",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 1",
            "raftkv_commit_index 12",
        ] {
            assert!(s.contains(line), "{line} not in {s}");
        }
        m.leader.store(0, Ordering::Relaxed);
        assert!(m.render().contains("etcd_server_has_leader 0"));
    }

    /// The `le` labels etcd 3.4.23 renders for `etcd_network_peer_round_trip_time_seconds`
    /// (`curl /metrics` on a 3-member etcd), without `+Inf`.
    const ETCD_RTT_LE: [&str; 16] = [
        "0.0001", "0.0002", "0.0004", "0.0008", "0.0016", "0.0032", "0.0064", "0.0128", "0.0256",
        "0.0512", "0.1024", "0.2048", "0.4096", "0.8192", "1.6384", "3.2768",
    ];

    #[test]
    fn peer_round_trip_buckets_are_etcds_exponential_buckets() {
        // prometheus.ExponentialBuckets(0.0001, 2, 16): start, then each times the factor.
        let mut bound = 0.0001f64;
        for (k, b) in ETCD_PEER_RTT_BOUNDS.iter().enumerate() {
            assert_eq!(*b, bound, "bucket {k}");
            assert_eq!(b.to_string(), ETCD_RTT_LE[k], "rendered as etcd renders it");
            bound *= 2.0;
        }
        assert_eq!(ETCD_PEER_RTT_BOUNDS.len(), ETCD_RTT_LE.len());
    }

    #[test]
    fn peer_series_carry_etcds_names_and_to_label_and_leave_with_the_member() {
        let m = Metrics::default();
        m.peers.set_peers([0xa, 0x3760a4ec3b84f7fa]);
        let a = m.peers.get(0xa).expect("a peer");
        a.failed(3);
        a.observe_round_trip(Duration::from_micros(300));
        let s = m.render();
        for line in [
            "# HELP etcd_network_peer_sent_failures_total The total number of send failures from peers.\n# TYPE etcd_network_peer_sent_failures_total counter\n",
            "etcd_network_peer_sent_failures_total{To=\"a\"} 3\n",
            "etcd_network_peer_sent_failures_total{To=\"3760a4ec3b84f7fa\"} 0\n",
            "# HELP etcd_network_peer_round_trip_time_seconds Round-Trip-Time histogram between peers\n# TYPE etcd_network_peer_round_trip_time_seconds histogram\n",
            "etcd_network_peer_round_trip_time_seconds_bucket{To=\"a\",le=\"0.0002\"} 0\n",
            "etcd_network_peer_round_trip_time_seconds_bucket{To=\"a\",le=\"0.0004\"} 1\n",
            "etcd_network_peer_round_trip_time_seconds_bucket{To=\"a\",le=\"+Inf\"} 1\n",
            "etcd_network_peer_round_trip_time_seconds_sum{To=\"a\"} 0.0003\n",
            "etcd_network_peer_round_trip_time_seconds_count{To=\"a\"} 1\n",
            "etcd_network_peer_round_trip_time_seconds_count{To=\"3760a4ec3b84f7fa\"} 0\n",
            "# TYPE etcd_mvcc_db_total_size_in_use_in_bytes gauge\netcd_mvcc_db_total_size_in_use_in_bytes 0\n",
        ] {
            assert!(s.contains(line), "{line} not in {s}");
        }
        let buckets: Vec<&str> = s
            .lines()
            .filter_map(|l| {
                l.strip_prefix("etcd_network_peer_round_trip_time_seconds_bucket{To=\"a\",le=\"")
            })
            .filter_map(|l| l.split_once('"').map(|(le, _)| le))
            .collect();
        let mut expected = ETCD_RTT_LE.to_vec();
        expected.push("+Inf");
        assert_eq!(buckets, expected);

        // Member a removed: its series go, the other's stay with their counts.
        m.peers.get(0x3760a4ec3b84f7fa).expect("a peer").failed(1);
        m.peers.set_peers([0x3760a4ec3b84f7fa]);
        let s = m.render();
        assert!(!s.contains("To=\"a\""), "{s}");
        assert!(s.contains("etcd_network_peer_sent_failures_total{To=\"3760a4ec3b84f7fa\"} 1\n"));
        assert!(m.peers.get(0xa).is_none());

        // No peers (a single member): no per-peer series at all, as etcd's empty vectors.
        m.peers.set_peers([]);
        assert!(!m.render().contains("etcd_network_peer"), "{}", m.render());
    }

    #[test]
    fn peer_series_are_bounded() {
        let m = PeerMetrics::default();
        m.set_peers(1..=(PEER_SERIES_MAX as u64 + 10));
        assert_eq!(m.peers.lock().unwrap().len(), PEER_SERIES_MAX);
        assert!(m.get(1).is_some() && m.get(PEER_SERIES_MAX as u64 + 1).is_none());
    }

    /// The README's table of etcd mixin series raftkv does not export: `(name, reason)`
    /// for each row `| \`name\` | reason |` between the table's marker comments.
    fn readme_not_exported() -> Vec<(String, String)> {
        let readme = include_str!("../../../README.md");
        let start = "<!-- etcd mixin series not exported: start -->";
        let end = "<!-- etcd mixin series not exported: end -->";
        let (_, table) = readme.split_once(start).expect("the README's table start marker");
        let (table, _) = table.split_once(end).expect("the README's table end marker");
        table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once("` |"))
            .map(|(name, rest)| {
                (name.to_string(), rest.trim().trim_end_matches('|').trim().to_string())
            })
            .collect()
    }

    /// An operator brings the etcd mixin's alerts to a raftkv cluster: each series they
    /// read is on `/metrics` (a member with peers, so the `To` series show) or the README
    /// says it is not exported and why, and the README lists nothing that is exported.
    #[test]
    fn every_series_the_etcd_mixin_alerts_read_is_exported_or_explained() {
        let m = Metrics::default();
        m.peers.set_peers([2, 3]);
        m.observe_fsync(Duration::from_millis(1));
        m.grpc.observe("/etcdserverpb.KV/Put", 0, 0.001);
        let scrape = m.render();
        let rendered = |name: &str| {
            scrape.lines().any(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
        };
        let explained = readme_not_exported();
        for name in ETCD_MIXIN_ALERT_SERIES {
            let reason = explained.iter().find(|(n, _)| n == name).map(|(_, r)| r.as_str());
            match (rendered(name), reason) {
                (true, None) => {}
                (false, Some(reason)) => {
                    assert!(reason.len() > 10, "{name}: say why, not {reason:?}")
                }
                (true, Some(_)) => panic!("{name} is exported but the README says it is not"),
                (false, None) => {
                    panic!("{name} is neither on /metrics nor in the README's table:\n{scrape}")
                }
            }
        }
        for (name, _) in &explained {
            assert!(ETCD_MIXIN_ALERT_SERIES.contains(&name.as_str()), "{name}: not a mixin series");
        }
    }
}
