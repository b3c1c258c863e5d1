//! Recording what clients saw: one [`Operation`] per request, from invoke to
//! outcome.
//!
//! A [`History`] is filled in the order events happen. That order matters: two
//! events that carry the same time are taken to have happened in the order they
//! were recorded, so a simulator whose clock ticks coarsely still gets the
//! strongest real-time order it observed.

use std::collections::BTreeMap;
use std::fmt;

/// Names one operation in a [`History`]; returned by [`History::invoke`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(usize);

impl OpId {
    pub(crate) fn from_index(index: usize) -> Self {
        Self(index)
    }

    /// Position of the operation in [`History::operations`] (order of invoke).
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the client learned about an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The operation took effect exactly once, between invoke and completion,
    /// and returned this result.
    Ok(O),
    /// The operation definitely did not take effect (e.g. the server rejected it
    /// before applying it). The checker drops it.
    Fail,
    /// The client gave up (timeout, lost connection): the operation may have
    /// taken effect at any time after its invoke — even after the recorded
    /// completion time — or never.
    Unknown,
}

/// When and how an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion<O> {
    /// Time the client saw the outcome.
    pub time: u64,
    /// The outcome itself.
    pub outcome: Outcome<O>,
    /// Recording order, which breaks ties between equal times.
    seq: u64,
}

/// One client request as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued it. A client has at most one operation open.
    pub process: u64,
    /// What was asked.
    pub input: I,
    /// Time the request was issued.
    pub invoke_time: u64,
    /// `None` while the operation is still open; the checker treats an operation
    /// that never completed as [`Outcome::Unknown`].
    pub completion: Option<Completion<O>>,
    /// Recording order, which breaks ties between equal times.
    invoke_seq: u64,
}

impl<I, O> Operation<I, O> {
    /// Real-time position of the invoke: time first, recording order second.
    pub(crate) fn invoke_position(&self) -> (u64, u64) {
        (self.invoke_time, self.invoke_seq)
    }

    /// Real-time position of a definite completion; `None` means "never
    /// returned", i.e. +infinity.
    pub(crate) fn return_position(&self) -> Option<(u64, u64)> {
        self.completion.as_ref().map(|c| (c.time, c.seq))
    }

    /// The outcome, counting a never-completed operation as unknown.
    pub fn outcome(&self) -> &Outcome<O> {
        match &self.completion {
            Some(c) => &c.outcome,
            None => &Outcome::Unknown,
        }
    }
}

/// A recorded client history, generic over operation inputs `I` and results `O`
/// (for example [`crate::KvOp`] and [`crate::KvResult`]).
///
/// Contract: call [`History::invoke`] when a client sends a request and
/// [`History::complete`] when it learns the outcome, in the order these events
/// happen. Misuse (completing twice, a client with two open operations, a
/// completion before its invoke) is a bug in the caller and panics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    operations: Vec<Operation<I, O>>,
    /// Clients with an operation in flight, and which one.
    open_by_process: BTreeMap<u64, OpId>,
    next_seq: u64,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self { operations: Vec::new(), open_by_process: BTreeMap::new(), next_seq: 0 }
    }

    /// Records that `process` issued `input` at `time`.
    ///
    /// Panics if `process` still has an operation open (a client issues one
    /// request at a time; one whose request ended [`Outcome::Unknown`] is free
    /// again).
    pub fn invoke(&mut self, process: u64, time: u64, input: I) -> OpId {
        let id = OpId(self.operations.len());
        let previous = self.open_by_process.insert(process, id);
        assert!(
            previous.is_none(),
            "process {process} invoked {id} while {} is still open",
            previous.map_or_else(String::new, |p| p.to_string())
        );
        let invoke_seq = self.take_seq();
        self.operations.push(Operation {
            process,
            input,
            invoke_time: time,
            completion: None,
            invoke_seq,
        });
        id
    }

    /// Records the outcome of operation `id`, seen by its client at `time`.
    ///
    /// Panics if `id` is not open or `time` is before its invoke.
    pub fn complete(&mut self, id: OpId, time: u64, outcome: Outcome<O>) {
        let seq = self.take_seq();
        let op =
            self.operations.get_mut(id.0).unwrap_or_else(|| panic!("complete: no operation {id}"));
        assert!(op.completion.is_none(), "complete: {id} completed twice");
        assert!(
            time >= op.invoke_time,
            "complete: {id} completes at {time}, before its invoke at {}",
            op.invoke_time
        );
        let removed = self.open_by_process.remove(&op.process);
        assert_eq!(removed, Some(id), "complete: {id} is not its client's open operation");
        op.completion = Some(Completion { time, outcome, seq });
    }

    /// Turns operation `id`, completed [`Outcome::Unknown`], into [`Outcome::Fail`], for
    /// a caller that learned later, from outside its client, that it never took effect
    /// (a simulator that sees the whole log).
    ///
    /// Panics if `id` did not complete with [`Outcome::Unknown`].
    pub fn settle_failed(&mut self, id: OpId) {
        let op =
            self.operations.get_mut(id.0).unwrap_or_else(|| panic!("settle: no operation {id}"));
        let c = op.completion.as_mut().unwrap_or_else(|| panic!("settle: {id} is open"));
        assert!(matches!(c.outcome, Outcome::Unknown), "settle: {id} did not end unknown");
        c.outcome = Outcome::Fail;
    }

    /// The operation `id` is open: invoked and not yet completed.
    pub fn is_open(&self, id: OpId) -> bool {
        self.operations.get(id.0).is_some_and(|op| op.completion.is_none())
    }

    /// The open operation of `process`, if any.
    pub fn open_operation(&self, process: u64) -> Option<OpId> {
        self.open_by_process.get(&process).copied()
    }

    /// All operations, in invoke order; `OpId::index` indexes this slice.
    pub fn operations(&self) -> &[Operation<I, O>] {
        &self.operations
    }

    /// The operation named by `id`.
    pub fn operation(&self, id: OpId) -> &Operation<I, O> {
        &self.operations[id.0]
    }

    /// Number of operations recorded.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// No operation recorded yet.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_frees_the_client_for_its_next_request() {
        let mut h: History<&str, u8> = History::new();
        let a = h.invoke(1, 10, "a");
        assert!(h.is_open(a));
        assert_eq!(h.open_operation(1), Some(a));
        h.complete(a, 12, Outcome::Unknown);
        assert!(!h.is_open(a));
        assert_eq!(h.open_operation(1), None);
        let b = h.invoke(1, 12, "b");
        assert_eq!(b.index(), 1);
        assert_eq!(h.operation(b).outcome(), &Outcome::Unknown, "open counts as unknown");
    }

    #[test]
    fn equal_times_are_ordered_by_recording() {
        let mut h: History<&str, u8> = History::new();
        let a = h.invoke(1, 5, "a");
        h.complete(a, 5, Outcome::Ok(0));
        let b = h.invoke(2, 5, "b");
        let ret_a = h.operation(a).return_position().unwrap();
        assert!(ret_a < h.operation(b).invoke_position());
    }

    #[test]
    #[should_panic(expected = "still open")]
    fn a_client_has_one_open_operation() {
        let mut h: History<&str, u8> = History::new();
        h.invoke(1, 0, "a");
        h.invoke(1, 1, "b");
    }

    #[test]
    fn an_unknown_outcome_settles_as_failed() {
        let mut h: History<&str, u8> = History::new();
        let a = h.invoke(1, 0, "a");
        h.complete(a, 3, Outcome::Unknown);
        h.settle_failed(a);
        assert_eq!(h.operation(a).outcome(), &Outcome::Fail);
    }

    #[test]
    #[should_panic(expected = "did not end unknown")]
    fn only_an_unknown_outcome_settles() {
        let mut h: History<&str, u8> = History::new();
        let a = h.invoke(1, 0, "a");
        h.complete(a, 3, Outcome::Ok(1));
        h.settle_failed(a);
    }

    #[test]
    #[should_panic(expected = "completed twice")]
    fn completing_twice_is_a_bug() {
        let mut h: History<&str, u8> = History::new();
        let a = h.invoke(1, 0, "a");
        h.complete(a, 1, Outcome::Fail);
        h.complete(a, 2, Outcome::Fail);
    }
}
