//! A single integer register, initially nil: the object of Jepsen's etcd tests.

use std::borrow::Cow;

use crate::Model;

/// A register operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// Read the value.
    Read,
    /// Set the value.
    Write(i64),
    /// Set the value to `to` if it is `from`.
    Cas {
        /// Value the register must hold.
        from: i64,
        /// Value it then takes.
        to: i64,
    },
}

/// What a register operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterResult {
    /// A read saw this value (`None`: nil, never written).
    Read(Option<i64>),
    /// A write was applied, or a cas matched and swapped.
    Done,
}

/// A single register holding `Option<i64>`, initially `None` (nil). A failed
/// cas is recorded as [`crate::Outcome::Fail`]: it did not take effect.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

fn show(value: Option<i64>) -> String {
    value.map_or_else(|| "nil".to_string(), |v| v.to_string())
}

impl Model for RegisterModel {
    type Input = RegisterOp;
    type Output = RegisterResult;
    type State = Option<i64>;
    type Partition = ();

    fn init(&self) -> Option<i64> {
        None
    }

    fn partition(&self, _input: &RegisterOp) {}

    fn step<'s>(
        &self,
        state: &'s Option<i64>,
        input: &RegisterOp,
        output: Option<&RegisterResult>,
    ) -> Option<Cow<'s, Option<i64>>> {
        match (input, output) {
            (RegisterOp::Read, None) => Some(Cow::Borrowed(state)),
            (RegisterOp::Read, Some(RegisterResult::Read(seen))) => {
                (seen == state).then_some(Cow::Borrowed(state))
            }
            (RegisterOp::Write(v), None | Some(RegisterResult::Done)) => Some(Cow::Owned(Some(*v))),
            (RegisterOp::Cas { from, to }, None) => Some(if *state == Some(*from) {
                Cow::Owned(Some(*to))
            } else {
                Cow::Borrowed(state)
            }),
            (RegisterOp::Cas { from, to }, Some(RegisterResult::Done)) => {
                (*state == Some(*from)).then_some(Cow::Owned(Some(*to)))
            }
            // A result of the wrong shape can never be explained.
            (RegisterOp::Read, Some(RegisterResult::Done))
            | (RegisterOp::Write(_) | RegisterOp::Cas { .. }, Some(RegisterResult::Read(_))) => {
                None
            }
        }
    }

    fn is_read_only(&self, input: &RegisterOp) -> bool {
        matches!(input, RegisterOp::Read)
    }

    fn describe_partition(&self, _partition: &()) -> String {
        "the register".to_string()
    }

    fn describe_operation(&self, input: &RegisterOp, output: Option<&RegisterResult>) -> String {
        let op = match input {
            RegisterOp::Read => "read".to_string(),
            RegisterOp::Write(v) => format!("write {v}"),
            RegisterOp::Cas { from, to } => format!("cas {from} -> {to}"),
        };
        match output {
            None => format!("{op} (outcome unknown)"),
            Some(RegisterResult::Read(v)) => format!("{op} -> {}", show(*v)),
            Some(RegisterResult::Done) => format!("{op} -> ok"),
        }
    }

    fn describe_state(&self, state: &Option<i64>) -> String {
        show(*state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `step` with the new state owned, for comparisons.
    fn step(
        state: Option<i64>,
        input: &RegisterOp,
        output: Option<&RegisterResult>,
    ) -> Option<Option<i64>> {
        RegisterModel.step(&state, input, output).map(Cow::into_owned)
    }

    #[test]
    fn cas_swaps_only_on_match() {
        let cas = RegisterOp::Cas { from: 1, to: 2 };
        let done = RegisterResult::Done;
        assert_eq!(step(Some(1), &cas, Some(&done)), Some(Some(2)));
        assert_eq!(step(Some(3), &cas, Some(&done)), None);
        assert_eq!(step(None, &cas, Some(&done)), None);
        // Unknown outcome: takes effect if it matches, else leaves the value.
        assert_eq!(step(Some(1), &cas, None), Some(Some(2)));
        assert_eq!(step(Some(3), &cas, None), Some(Some(3)));
    }

    #[test]
    fn read_must_see_the_value() {
        let read = RegisterOp::Read;
        assert_eq!(step(None, &read, Some(&RegisterResult::Read(None))), Some(None));
        assert_eq!(step(Some(4), &read, Some(&RegisterResult::Read(Some(4)))), Some(Some(4)));
        assert_eq!(step(Some(4), &read, Some(&RegisterResult::Read(None))), None);
    }
}
