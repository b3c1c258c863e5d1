//! # node: the driver of one raftkv member
//!
//! `node` joins the pieces that each know one thing — the consensus core (`raft`), the
//! durable log ([`LogStore`], implemented over the `storage` crate), the replicated state
//! machine (`kv`) — and adds what only the driver can know: which client request waits
//! for which log index or read, when to snapshot, and what to answer.
//!
//! Like the core, the node is sans-IO apart from its [`LogStore`]: time comes in as
//! [`Node::tick`], peer messages as [`Node::step`], client requests as [`Node::submit`];
//! messages to send and replies to clients come out of [`Node::poll`]. The tokio server
//! and the deterministic simulator drive exactly this code, with a real disk and a
//! simulated one.
//!
//! ## Guarantees
//! - A write is answered only after its entry has been applied, with the state machine's
//!   own response. If a different entry (another leader's) is applied at its index, the
//!   answer is [`RequestError::NotLeader`]: retry, never a wrong result.
//! - A linearizable read is answered from the state machine only once it has applied the
//!   read's ReadIndex. A serializable read is answered from the local state at once and may
//!   be stale. With [`NodeConfig::hand_out_reads`] the node says when a read may be served
//!   ([`ReadyRead`]) and the driver answers it from a view of the state (O(1) to take)
//!   on another thread, so a long read never holds the thread that heartbeats.
//! - With [`NodeConfig::apply_apart`] the state machine lives in an [`Applier`] the
//!   driver runs elsewhere (the server: its own thread; the simulator: after a seeded
//!   delay): the node hands out committed entries and leader snapshots in bounded
//!   [`ApplyBatch`]es and acts on each [`Applied`] report in [`Node::on_applied`]; every
//!   guarantee above then counts from the report, so a slow apply never delays ticks,
//!   votes, appends or syncs.
//! - Nothing is sent that depends on state not yet durable: `poll` hands out a Ready's
//!   send-now messages, persists its state with one sync, and only then tells the core,
//!   which releases the answers that depended on it.
//! - Restart = load the newest snapshot into the state machine, then replay the committed
//!   log after it; nothing is applied twice.

mod clerk;
mod mem;
mod members;
mod node;

pub use crate::clerk::Clerk;
pub use crate::mem::MemStore;
pub use crate::members::{
    Member, MemberChange, MemberChanged, MemberFailure, LEARNERS_MAX, LEARNER_READY_PERCENT,
};
pub use crate::node::{
    answer_read, Applied, Applier, ApplyBatch, EncodedWrite, LeaseClock, LogStore, MemberIdHook,
    Node, NodeConfig, NodeError, NodeEvent, Output, ReadQuery, ReadyRead, Request, RequestError,
    RequestId, SnapshotJob, TransferFailure, APPLY_BATCHES_IN_FLIGHT_MAX, APPLY_BATCH_BYTES_MAX,
    APPLY_BATCH_ENTRIES_MAX, APPLY_GAP_ENTRIES_MAX,
};
