//! # The kv workload: the real member code under the simulator's faults
//!
//! The raft workload ([`crate::cluster`]) checks the consensus core with a stand-in
//! driver, disk and state machine. This workload runs what a raftkv server runs:
//! [`node::Node`] over [`storage::Storage`]`<`[`storage::SimDisk`]`>` with the `kv` state
//! machine, driven through the same `tick` / `step` / `submit` / `poll` / `sync` calls, and
//! clients that talk to it through [`node::Clerk`] exactly as the client library does.
//! What the clients saw is recorded in a [`lincheck::History`] and checked for
//! linearizability at the end of the run.
//!
//! ## The model
//! - **Members** tick on drifting clocks, step peer messages, accept client requests and
//!   `poll`. `poll` writes to the store without syncing; a "sync completes" event follows
//!   after a random disk latency, then `sync` and `poll` again (which releases the answers
//!   that waited for durability). Snapshots are taken every few dozen entries and WAL
//!   segments are a few KiB, so compaction, segment deletion and InstallSnapshot happen
//!   all the time.
//! - **A crash** takes the store out of the node, the disk out of the store, and cuts its
//!   power ([`storage::SimDisk::crash`]: unsynced bytes lost or torn, unsynced directory
//!   changes kept or lost). A restart is `Storage::open` + `Node::new` from what survived.
//! - **The network** is the raft workload's ([`crate::network`]): per-message delays,
//!   loss, duplication and partitions with one-way links. Clients are endpoints too: their
//!   requests and the replies are delayed, lost and duplicated, and a partition may
//!   confine a client to one side.
//! - **Clients** run one operation at a time over a few keys: get (a ReadIndex read),
//!   put, append, delete and compare-and-set (a `Txn`), each value unique. They register a
//!   session first, follow leader hints, resend the *same* command on a timeout, and give
//!   up after a deadline: a write that was given up on is recorded as unknown, a read as
//!   failed (it had no effect).
//!
//! - **Watchers** ([`watch`], in a share of swarm seeds) open watches on members with a
//!   start revision, are served from the member's MVCC history as the server serves
//!   them, and resume elsewhere from their last revision + 1 when a stream breaks.
//! - **Users** (`auth_check`, in the seeds that change the auth state): most clients act
//!   as `root`, `u0` or `u1`; the receiving member stamps their commands with its auth
//!   revision and apply checks them again, as on the server.
//! - **Leases** ([`lease`], in a share of swarm seeds): clients grant leases, attach
//!   keys, keep some alive and let others lapse; each member's lease clock runs on its
//!   own simulated clock, so the leader expires lapsed leases through the log.
//!
//! ## What is checked
//! After every event: no two members apply different entries at one index, each member
//! applies densely or jumps forward by a snapshot whose term matches, at most one leader
//! per term, no member error (storage or recovery failures are bugs here: the simulated
//! disk injects no I/O errors). At the end ([`swarm`]): a liveness phase that heals
//! everything and requires a leader, operations completing for every client and all
//! members converging to byte-identical state; then [`lincheck::check`] on the history.
//!
//! Against a reference — the committed log replayed once in index order into a state
//! machine of its own (`reference.rs`) — after every event: each member's revision,
//! compact revision and live leases at the index it has applied; each watch event
//! received (exactly the next committed event of the watcher's range); each lease revoke
//! (its keys deleted at its revision on every member; an expiry never before the TTL
//! since the last acknowledged keep-alive); each user's command served at an index only
//! with a stamp no older than the auth state there and with the permission it gives
//! (judged apart from `kv`'s checks). At the end, every lease expired once the
//! clients stop and every watcher holding its range's whole history.

mod auth_check;
mod client;
mod cluster;
mod dial;
pub mod lease;
mod reference;
pub mod swarm;
pub mod watch;

pub use client::OpMix;
pub use cluster::{
    raft_state_bytes_bound, sim_peer_url, KvCluster, KvConfig, KvStats, RAFT_STATE_ENTRY_BYTES_MAX,
    RAFT_STATE_SLACK_ENTRIES,
};
pub use swarm::{run_kv_seed, run_kv_seed_with, KvOutcome, KvParams};
pub use watch::WatchSpec;
