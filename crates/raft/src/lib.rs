//! # raft: the consensus core of raftkv, sans-IO
//!
//! This crate is Raft (Ongaro & Ousterhout, "In Search of an Understandable Consensus
//! Algorithm", Figures 2, 8 and 13, and the Raft thesis) as a pure, deterministic state
//! machine. It owns no thread, socket, file, clock or global random generator: time is
//! [`Raft::tick`], the network is [`Raft::step`] in and [`Ready::messages`] out, the disk
//! is [`Ready`]'s persist part and [`Raft::on_persisted`], randomness is a seed in
//! [`Config`]. The same input sequence always gives the same output sequence, which is
//! what lets the simulator replay any run from its seed.
//!
//! ## The contract with the driver
//! Drive the core in a loop:
//! 1. Feed it inputs: [`Raft::tick`] at a steady pace, [`Raft::step`] for each message
//!    received, [`Raft::propose`] and [`Raft::read_index`] for clients.
//! 2. When [`Raft::has_ready`], take [`Raft::ready`] (numbered 1, 2, 3, …) and:
//!    - send [`Ready::messages`] now (a leader's appends go out *while* it writes its own
//!      log: Raft thesis §10.2.1);
//!    - make [`Ready::snapshot`], [`Ready::entries`] and [`Ready::hard_state`] durable (in
//!      that order, or all at once: the hard state's commit index vouches for entries,
//!      so it must never survive a crash without the entries written with it; entries
//!      whose index is already stored replace the stored suffix from
//!      there on), then call [`Raft::on_persisted`] with the Ready's number. Persists must
//!      complete in Ready order;
//!    - if [`Ready::snapshot`] is set, restore the state machine from it, then apply
//!      [`Ready::committed_entries`] in order;
//!    - serve each [`ReadState`] once the state machine has applied its index.
//!
//! Answers that depend on durable state (votes granted, appends acknowledged, snapshots
//! acknowledged) are never in a Ready's `messages`: the core holds them back and releases
//! them in a later Ready only after [`Raft::on_persisted`] has confirmed the Ready that
//! carried the state they depend on. A driver therefore cannot break the
//! persist-before-reply rule by sending too early; it can only break it by calling
//! `on_persisted` before the data is actually durable.
//!
//! Membership changes ([`Raft::propose_conf_change`], joint consensus in etcd's
//! ConfChangeV2 shape, see [`ConfChange`]) take effect when appended; a driver learns of
//! them by applying committed [`EntryKind::ConfChange`] entries (decode with
//! [`ConfChange::decode`]) and can read the configuration in force with
//! [`Raft::conf_state`]. A snapshot taken at index `i` must carry [`Raft::conf_at`]`(i)`.
//! Leadership moves with [`Raft::transfer_leader`].
//!
//! The log lives in memory from the last snapshot on; indices are absolute from the first
//! entry ever written, so discarding a prefix ([`Raft::compact`]) renumbers nothing.

mod confchange;
mod core;
mod log;
mod message;
mod progress;
mod quorum;
mod rng;
mod types;
pub mod validate;

pub use crate::confchange::{
    ConfChange, ConfChangeError, ConfChangeKind, ConfChangeSingle, CONF_CHANGE_BYTES_MAX,
    CONF_CHANGE_CONTEXT_BYTES_MAX,
};
pub use crate::core::{CompactError, Restored, SnapshotSource, TransferError};
pub use crate::core::{Config, ConfigError, ProposeError, Raft, ReadError, ReadState, Ready, Role};
pub use crate::message::{Message, MessageBody, RejectHint};
pub use crate::progress::{Progress, ProgressState};
pub use crate::rng::Rng;
pub use crate::types::{
    ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term,
};
pub use crate::validate::{Invalid, PeerLimits};
