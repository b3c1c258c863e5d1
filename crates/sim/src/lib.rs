//! # sim: a seeded, deterministic whole-cluster simulator for the raft core
//!
//! One `u64` seed decides an entire run of a simulated raftkv cluster — message delays,
//! losses and duplicates, partitions, disk latencies, crashes and torn writes, clock drift,
//! client load — so any failure replays exactly from its seed (the TigerBeetle approach).
//! There is no wall clock, no thread and no unseeded randomness inside a run: simulated
//! time is a `u64` of microseconds, events sit in a queue ordered by (time, sequence
//! number), and every map whose order can reach the output is a `BTreeMap`.
//!
//! ## The model
//! - **Nodes** run the sans-IO [`raft::Raft`] core with the same driver loop a server
//!   runs: tick on a local clock (10 ms nominal, each node a little fast or slow), step
//!   delivered messages, and drain Readies — send messages at once, hand the persist part
//!   to the disk, apply committed entries to a small state machine (a digest of the
//!   applied sequence; the kv store will replace it), compact the log past a threshold.
//! - **Disks** ([`disk`]) complete writes in order after a random latency; only then is
//!   `on_persisted` called. A crash keeps what was synced, maybe a prefix of the oldest
//!   unsynced write (torn), and nothing later. A restart rebuilds the core with
//!   `Raft::restore` from the durable state alone.
//! - **The network** ([`network`]) delays each message at random (so messages reorder),
//!   loses and duplicates some, and has one-way links that partitions cut: minority and
//!   majority sides, isolated leaders, asymmetric links, bridges, random cuts.
//!
//! ## What is checked, after every event
//! Election Safety, Log Matching, Leader Completeness and State Machine Safety (see
//! [`checker`]); one vote per term; terms and commit indices never going back while a node
//! is up, commit within the log; persist-before-reply (a vote grant or append ack leaves a
//! node only once its disk holds what it vouches for); a restarted node holding at least
//! its durable state; and the driver contract (Ready numbering, contiguous writes).
//!
//! ## How it is used
//! - [`swarm::run_seed`]: swarm testing. Each seed draws its own fault mix, runs a safety
//!   phase with faults and clients, then a liveness phase that heals everything and
//!   requires a leader and every new proposal applied everywhere within fixed bounds.
//! - [`Cluster`]'s scripted API ([`script`]): named scenario tests in `tests/`.
//! - The `sim` binary: many seeds on all cores, one seed with its trace, a benchmark.
//!
//! ## The kv workload
//! [`kv`] runs the real member code instead — `node::Node` over `storage::Storage` on a
//! crash-simulating `storage::SimDisk`, with the `kv` state machine — under the same
//! network and fault mixes, with clients going through `node::Clerk` and a history
//! checked by `lincheck` (`--workload kv`; scenarios in `tests/kv_scenarios.rs`). Some
//! seeds add watchers, served from members' MVCC history as the server serves them and
//! checked event by event against the committed history, and leases, expired by the
//! leader's lease clock on simulated time and checked to leave every member with the same
//! leases and keys at every index ([`kv::watch`], [`kv::lease`]; scenarios in
//! `tests/kv_watch_lease.rs`).
//!
//! Every run ends with a trace hash (FNV-1a 64 over the canonical text of every event):
//! the same seed gives the same hash on every run and machine.

pub mod bench;
pub mod checker;
pub mod cluster;
mod conftrack;
pub mod disk;
pub mod driver;
mod faults;
pub mod kv;
pub mod network;
pub mod node;
mod queue;
pub mod scenario;
pub mod script;
pub mod swarm;
pub mod trace;

pub use checker::Violation;
pub use cluster::{Cluster, ClusterConfig};
pub use disk::{DiskConfig, DurableState};
pub use faults::FaultParams;
pub use network::{MessageStats, NetConfig};
pub use node::StateMachine;
pub use swarm::{run_seed, Membership, SeedOutcome, SwarmParams};
pub use trace::{fnv1a64, Fnv64};
