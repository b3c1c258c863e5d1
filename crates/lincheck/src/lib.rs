//! lincheck: records what clients of raftkv saw and decides whether it was
//! linearizable.
//!
//! # Why
//!
//! raftkv promises linearizability: every operation appears to take effect at
//! one instant between its invoke and its response, in an order consistent with
//! a single copy of the data. The deterministic simulator records each client's
//! requests into a [`History`] and asks [`check`] whether some such order
//! exists. A "no" comes with a [`Violation`] a person can read: the key, the
//! longest linearizable prefix found, the state it leaves, and the operations
//! none of which can come next.
//!
//! # What it guarantees
//!
//! - **Sound and complete** for the model given: [`Verdict::Linearizable`] only
//!   if a linearization exists, [`Verdict::NotLinearizable`] only if none does.
//!   The search is the Wing & Gong / Lowe algorithm with memoization of (set of
//!   linearized operations, model state), as in Porcupine, run per partition
//!   (a history is linearizable iff every key's sub-history is: Herlihy & Wing's
//!   locality).
//! - **Never a guess**: when the [`CheckOptions`] budget (time or steps) runs
//!   out, the verdict is [`Verdict::Unknown`] with the reason.
//! - **Deterministic**: the same history gives the same verdict and the same
//!   explanation (partitions take turns in key order, with step-counted
//!   slices), unless a wall-clock timeout is what ends the search.
//!
//! # Contract with callers
//!
//! - Record events in the order they happen: [`History::invoke`] when a request
//!   is sent, [`History::complete`] when its outcome is known. Events with equal
//!   times are ordered by recording order, so a coarse simulated clock is fine.
//! - Say what is known and no more: [`Outcome::Ok`] with the result when the
//!   client saw it, [`Outcome::Fail`] only when the operation *definitely* did
//!   not take effect, [`Outcome::Unknown`] otherwise (timeouts, lost replies).
//!   An unknown operation may take effect at any time after its invoke, even
//!   after its recorded completion, or never. An operation never completed
//!   counts as unknown.
//! - Recording misuse (completing twice, two open operations for one client) is
//!   a bug in the caller and panics. Malformed history *files* are operating
//!   errors: the parsers return a [`ParseError`] naming the line.
//!
//! # Use from the simulator
//!
//! ```
//! use lincheck::{check, CheckOptions, History, KvModel, KvOp, KvResult, Outcome};
//!
//! let mut history = History::new();
//! let put = history.invoke(1, 10, KvOp::put("k", "v"));
//! let get = history.invoke(2, 11, KvOp::get("k"));
//! history.complete(put, 12, Outcome::Ok(KvResult::Done));
//! history.complete(get, 13, Outcome::Ok(KvResult::value("v")));
//! let verdict = check(&KvModel::strict(), &history, &CheckOptions::default());
//! assert!(verdict.is_linearizable(), "{verdict:?}");
//! ```

mod checker;
mod history;
mod kv;
mod model;
mod parse;
mod register;

pub use checker::{check, Candidate, CheckOptions, OpSummary, Verdict, Violation};
pub use history::{Completion, History, OpId, Operation, Outcome};
pub use kv::{KvModel, KvOp, KvResult};
pub use model::Model;
pub use parse::{parse_jepsen_register_history, parse_kv_history, ParseError};
pub use register::{RegisterModel, RegisterOp, RegisterResult};
