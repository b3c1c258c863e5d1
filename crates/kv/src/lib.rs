//! The replicated key-value state machine of raftkv.
//!
//! Raft makes every replica agree on a log of opaque byte entries; this
//! crate gives those bytes meaning. It is etcd's v3 data model — byte keys
//! and values, a global `revision`, per-key `create_revision`,
//! `mod_revision` and `version`, MVCC reads at past revisions, Put / Range /
//! DeleteRange / Txn / Compact — plus a course-style `Get` and `Append` so
//! client histories of Get / Put / Append / Delete / CAS can be checked for
//! linearizability. Like the Raft core it is sans-IO: no clock, no threads,
//! no randomness.
//!
//! # Contract with the Raft node driver
//!
//! * Committed entries go in through one door,
//!   [`StateMachine::apply`]`(index, bytes)`, in log order, each exactly once
//!   (indices strictly increase; gaps are fine for entries that are not kv
//!   commands, such as leader no-ops and configuration changes, provided
//!   every replica skips the same ones). It returns the [`Response`] for
//!   the client that proposed the entry. Proposals are built with
//!   [`Command::encode`].
//! * Reads served outside the log (ReadIndex or lease reads, once the
//!   applied index has caught up) use [`StateMachine::range`] and
//!   [`StateMachine::get`]; a read can also go through the log as
//!   [`Op::Range`] or [`Op::Get`].
//! * Snapshots: [`StateMachine::snapshot_view`] freezes the state in O(1);
//!   the driver moves the [`SnapshotView`] to another thread and streams it
//!   with [`SnapshotView::write_to`] while `apply` goes on. A follower
//!   installs one with [`StateMachine::restore`], then continues applying
//!   from `applied_index() + 1`.
//! * All replicas must be built with the same [`Config`] (a snapshot carries
//!   it, so a restored replica adopts the cluster's).
//!
//! # Guarantees
//!
//! * **Deterministic.** The state after applying the same entries is
//!   identical on every replica, down to the snapshot bytes: all maps are
//!   ordered, nothing reads a clock, and everything time-like (session
//!   expiry, pruning of compacted history) is driven by log indices.
//! * **etcd revision semantics.** A write (Put, Append, a DeleteRange that
//!   deletes something, a Txn that writes anything) bumps the revision by
//!   exactly one however many keys it touches; reads and no-op deletes do
//!   not. A delete resets a key's version; the next put starts a new
//!   generation at version 1 with a new create revision. A fresh store is
//!   at revision 1, as in etcd. Reading below the compact revision gives
//!   [`KvError::Compacted`], above the current one
//!   [`KvError::FutureRevision`].
//! * **Atomic commands.** A command either applies fully or returns
//!   [`Response::Error`] and changes nothing. Operating errors are values
//!   ([`KvError`], whose messages say what to do); only a broken caller
//!   contract (an index applied twice or out of order) panics.
//! * **Apply never stalls for a snapshot or a compaction.** Keys, history and
//!   sessions live in persistent B-trees ([`imbl::OrdMap`]), so a snapshot
//!   view is a pointer copy and the live state copies only the nodes it
//!   writes while a view is alive — what `fork()` gives a C server.
//!   Compaction marks the new compact revision at once (reads below it fail
//!   immediately) and prunes the dead history in bounded steps, a few per
//!   applied entry ([`Config::prune_entries_per_apply`]).
//!
//! # Client sessions (exactly-once writes)
//!
//! Following the Raft dissertation (§6.3), a client first commits
//! [`Op::RegisterSession`]; its session id is the log index of that entry,
//! unique for the life of the cluster. Each command then carries a
//! [`RequestId`] `(client_id, seq)`, with `seq` counting up from 1 and kept
//! the same on retries. The state machine keeps, per session, the last seq
//! and its response, in the replicated state and in snapshots:
//!
//! * `seq > last`: run the command, remember `(seq, response)`;
//! * `seq == last`: do not run it again; return the saved response;
//! * `seq < last`: [`KvError::StaleSequence`] (the client has moved on);
//! * unknown session: [`KvError::SessionExpired`], without running it.
//!
//! Sessions expire by log content only: applying index `i` drops every
//! session whose last command was at an index `< i - session_idle_entries_max`.
//! Registering a session beyond `sessions_max` is refused
//! ([`KvError::TooManySessions`]), never evicting a live one. Refusing
//! unknown sessions is what keeps expiry safe:
//! a retry that arrives after its session is gone is never run a second
//! time; instead the client learns that the outcome of its pending command
//! is unknown and must register anew and re-read before deciding whether to
//! retry. A client silent for longer than the idle limit therefore sees
//! `SessionExpired`, never a duplicate execution. One saved response per
//! session means a client has one write in flight at a time (open several
//! sessions for more). A saved response is kept only up to
//! [`SESSION_RESPONSE_BYTES_MAX`] encoded bytes; a retry of a write with a
//! larger one gets [`KvError::ResponseNotKept`], naming the revision the
//! write took effect at.
//!
//! # Command encoding
//!
//! Commands and responses use a hand-written fixed-width little-endian
//! binary encoding (see [`codec`]) rather than protobuf: the log format
//! is then exactly what this crate documents and tests, with no schema
//! compiler and no dependency beyond two small crates, and the decoder bounds every
//! length and the nesting depth before it allocates or recurses, so a
//! malformed entry is a [`DecodeError`], never a panic. The etcd gRPC layer
//! will translate its protobuf messages to these types at the edge.
//!
//! # Leases
//!
//! [`Op::LeaseGrant`] records a lease and its granted TTL; a put naming a
//! lease requires it to exist; [`Op::LeaseRevoke`] deletes the lease and every
//! key attached to it at one revision. There is no clock here: the leader's
//! node tracks deadlines and proposes the revoke of an expired lease through
//! the log, so every replica deletes the same keys at the same revision.
//!
//! # Watches
//!
//! [`StateMachine::events`] lists the puts and deletes of a key range over a
//! span of revisions from the history, through an index by revision; a watch
//! is served by calling it as the revision moves, so resuming after a
//! reconnect or on another member is the same call. As in etcd, each change of
//! a revision has a sub-revision, its position in the transaction that made
//! it, and events come in that order: a transaction's in the order of its
//! operations. A watch may start at the compact revision itself, and sees the
//! puts that compaction keeps of it.
//!
//! # Space quota and alarms
//!
//! [`StateMachine::size_bytes`] is a deterministic estimate of the bytes the state
//! holds, kept in O(1) per change; the member that proposes a write compares it with
//! the quota ([`space_cost`]). Alarms ([`Op::Alarm`], etcd's NOSPACE and CORRUPT) are
//! replicated state, in snapshots too; while one is raised, apply refuses what etcd's
//! "capped" and "corrupt" appliers refuse, on every replica alike (see `quota.rs`).
//!
//! # Auth
//!
//! etcd 3.4's users, roles and key permissions are replicated state too
//! ([`Op::Auth`], kept in snapshots); see [`auth`] for the model and for how a
//! command's [`AuthStamp`] is checked again at apply.
//!
//! # Not yet here
//!
//! The etcd "physical" compaction wait flag is left out.

pub mod auth;
pub mod codec;
mod history;
mod machine;
pub mod members;
mod mvcc;
mod quota;
mod rev_index;
mod session;
pub mod snapshot;
mod txn_check;
mod types;

pub use auth::{
    AuthError, AuthOp, AuthResponse, AuthStamp, AuthState, Permission, PermissionType, User,
};
pub use codec::{DecodeError, DecodeErrorKind, WIRE_FORMAT_VERSION};
pub use history::{Import, StoredChange};
pub use machine::{Config, StateMachine, INITIAL_REVISION};
pub use members::{Member, MemberOp, Members};
pub use quota::{space_cost, ENTRY_OVERHEAD_BYTES, LEASE_OVERHEAD_BYTES, STATE_BASE_BYTES};
pub use session::SESSION_RESPONSE_BYTES_MAX;
pub use snapshot::{SnapshotError, SnapshotView, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC};
pub use types::*;
