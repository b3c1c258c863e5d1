//! The sequential specification a history is checked against.

use std::borrow::Cow;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential object: the behaviour a linearizable system must look like.
///
/// The checker splits a history into independent partitions
/// ([`Model::partition`]) and checks each against its own copy of the object,
/// starting from [`Model::init`]. That is sound only if operations in different
/// partitions never affect each other (P-compositionality, Herlihy & Wing 1990):
/// for a key/value map, the key is the partition.
///
/// The model must be deterministic: `step` sees only its arguments.
pub trait Model {
    /// What a client asks for.
    type Input: Clone + Debug;
    /// What a client is told.
    type Output: Clone + Debug;
    /// State of one partition. Equal states must behave the same (the search
    /// memoizes on them), so keep it canonical.
    type State: Clone + Eq + Hash + Debug;
    /// Names a partition. `()` if the object cannot be split.
    type Partition: Ord + Clone + Debug;

    /// State of every partition before any operation.
    fn init(&self) -> Self::State;

    /// The partition `input` reads or writes.
    fn partition(&self, input: &Self::Input) -> Self::Partition;

    /// Applies `input` to `state`.
    ///
    /// With `Some(output)` (the client saw this result), returns the new state
    /// if the operation can return `output` in `state`, and `None` if not. With
    /// `None` (the outcome is unknown), returns the state the operation would
    /// leave, whatever it returned; `None` then means it cannot take effect here.
    ///
    /// Return `Cow::Borrowed(state)` when the state is unchanged (reads, a cas
    /// that did not match): the checker then shares it instead of copying.
    fn step<'s>(
        &self,
        state: &'s Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Cow<'s, Self::State>>;

    /// The operation never changes the state. Such operations whose outcome is
    /// unknown constrain nothing, and the checker drops them.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// The partition, for people (e.g. `key "4"`).
    fn describe_partition(&self, partition: &Self::Partition) -> String;

    /// The operation and, if known, its result, for people (e.g.
    /// `get "4" -> "x 1 0 y"`).
    fn describe_operation(&self, input: &Self::Input, output: Option<&Self::Output>) -> String;

    /// A partition's state, for people.
    fn describe_state(&self, state: &Self::State) -> String;
}
