//! A map from byte-string keys to byte-string values: the object raftkv serves.
//!
//! Keys are independent, so the key is the partition. Keys and values are bytes;
//! text is shown as quoted strings in explanations.

use std::borrow::Cow;

use crate::Model;

/// A key/value operation. Build with the helpers ([`KvOp::get`], ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read the value of `key`.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Append `value` to the value of `key` (to nothing if it is absent).
    Append {
        /// The key.
        key: Vec<u8>,
        /// The bytes to append.
        value: Vec<u8>,
    },
    /// Remove `key`: it becomes absent.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Set `key` to `new` if its value is `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The value it must have; `None` means the key must be absent.
        expected: Option<Vec<u8>>,
        /// The value it then takes.
        new: Vec<u8>,
    },
}

impl KvOp {
    /// `get key`.
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Self::Get { key: key.into() }
    }

    /// `put key value`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put { key: key.into(), value: value.into() }
    }

    /// `append key value`.
    pub fn append(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Append { key: key.into(), value: value.into() }
    }

    /// `delete key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// `cas key expected new`; `expected: None` requires the key to be absent.
    pub fn cas(
        key: impl Into<Vec<u8>>,
        expected: Option<impl Into<Vec<u8>>>,
        new: impl Into<Vec<u8>>,
    ) -> Self {
        Self::Cas { key: key.into(), expected: expected.map(Into::into), new: new.into() }
    }

    /// The key this operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Get { key }
            | Self::Put { key, .. }
            | Self::Append { key, .. }
            | Self::Delete { key }
            | Self::Cas { key, .. } => key,
        }
    }
}

/// What a key/value operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// A get saw this value (`None`: the key is absent).
    Value(Option<Vec<u8>>),
    /// A put, append or delete was applied.
    Done,
    /// A cas was applied and compared: `swapped` tells whether the value matched
    /// and was replaced. (A cas that was never applied is [`crate::Outcome::Fail`].)
    Cas {
        /// The expected value matched and the new one was stored.
        swapped: bool,
    },
}

impl KvResult {
    /// A get that saw `value`.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Self::Value(Some(value.into()))
    }
}

/// The key/value map model.
///
/// [`KvModel::strict`] keeps an absent key apart from an empty value, as
/// raftkv's own API does. [`KvModel::empty_is_absent`] follows the convention of
/// the recorded `kv/` histories, where a never-written key reads as `""`: there
/// an absent key and an empty value are the same state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvModel {
    empty_is_absent: bool,
}

impl KvModel {
    /// Absent and empty are different: a get of a missing key returns `None`.
    pub fn strict() -> Self {
        Self { empty_is_absent: false }
    }

    /// Absent and empty are the same: a missing key reads as `""`.
    pub fn empty_is_absent() -> Self {
        Self { empty_is_absent: true }
    }

    /// The canonical form of a value, so equal states compare equal.
    fn canonical(&self, value: Option<&[u8]>) -> Option<Vec<u8>> {
        match value {
            Some(v) if self.empty_is_absent && v.is_empty() => None,
            other => other.map(<[u8]>::to_vec),
        }
    }

    fn show_value(&self, value: Option<&[u8]>) -> String {
        match value {
            Some(v) => show_bytes(v),
            None if self.empty_is_absent => "\"\"".to_string(),
            None => "absent".to_string(),
        }
    }
}

/// Text as a quoted, escaped string; other bytes as hex.
fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("{text:?}"),
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

impl Model for KvModel {
    type Input = KvOp;
    type Output = KvResult;
    type State = Option<Vec<u8>>;
    type Partition = Vec<u8>;

    fn init(&self) -> Self::State {
        None
    }

    fn partition(&self, input: &KvOp) -> Vec<u8> {
        input.key().to_vec()
    }

    fn step<'s>(
        &self,
        state: &'s Self::State,
        input: &KvOp,
        output: Option<&KvResult>,
    ) -> Option<Cow<'s, Self::State>> {
        match (input, output) {
            (KvOp::Get { .. }, None) => Some(Cow::Borrowed(state)),
            (KvOp::Get { .. }, Some(KvResult::Value(seen))) => {
                (self.canonical(seen.as_deref()) == *state).then_some(Cow::Borrowed(state))
            }
            (KvOp::Put { value, .. }, None | Some(KvResult::Done)) => {
                Some(Cow::Owned(self.canonical(Some(value))))
            }
            (KvOp::Append { value, .. }, None | Some(KvResult::Done)) => {
                let old = state.as_deref().unwrap_or_default();
                let mut joined = Vec::with_capacity(old.len() + value.len());
                joined.extend_from_slice(old);
                joined.extend_from_slice(value);
                Some(Cow::Owned(self.canonical(Some(&joined))))
            }
            (KvOp::Delete { .. }, None | Some(KvResult::Done)) => Some(Cow::Owned(None)),
            (KvOp::Cas { expected, new, .. }, output) => {
                let matches = self.canonical(expected.as_deref()) == *state;
                let swapped = match output {
                    None => matches,
                    Some(KvResult::Cas { swapped }) if *swapped == matches => matches,
                    Some(_) => return None,
                };
                Some(if swapped {
                    Cow::Owned(self.canonical(Some(new)))
                } else {
                    Cow::Borrowed(state)
                })
            }
            // A result of the wrong shape can never be explained.
            (KvOp::Get { .. }, Some(_))
            | (KvOp::Put { .. } | KvOp::Append { .. } | KvOp::Delete { .. }, Some(_)) => None,
        }
    }

    fn is_read_only(&self, input: &KvOp) -> bool {
        matches!(input, KvOp::Get { .. })
    }

    fn describe_partition(&self, key: &Vec<u8>) -> String {
        format!("key {}", show_bytes(key))
    }

    fn describe_operation(&self, input: &KvOp, output: Option<&KvResult>) -> String {
        let op = match input {
            KvOp::Get { key } => format!("get {}", show_bytes(key)),
            KvOp::Put { key, value } => format!("put {} {}", show_bytes(key), show_bytes(value)),
            KvOp::Append { key, value } => {
                format!("append {} {}", show_bytes(key), show_bytes(value))
            }
            KvOp::Delete { key } => format!("delete {}", show_bytes(key)),
            KvOp::Cas { key, expected, new } => format!(
                "cas {} from {} to {}",
                show_bytes(key),
                self.show_value(expected.as_deref()),
                show_bytes(new)
            ),
        };
        match output {
            None => format!("{op} (outcome unknown)"),
            Some(KvResult::Value(v)) => format!("{op} -> {}", self.show_value(v.as_deref())),
            Some(KvResult::Done) => format!("{op} -> ok"),
            Some(KvResult::Cas { swapped: true }) => format!("{op} -> swapped"),
            Some(KvResult::Cas { swapped: false }) => format!("{op} -> no match"),
        }
    }

    fn describe_state(&self, state: &Self::State) -> String {
        self.show_value(state.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `step` with the new state owned, for comparisons.
    trait StepOwned {
        fn step_owned(
            &self,
            state: &Option<Vec<u8>>,
            input: &KvOp,
            output: Option<&KvResult>,
        ) -> Option<Option<Vec<u8>>>;
    }

    impl StepOwned for KvModel {
        fn step_owned(
            &self,
            state: &Option<Vec<u8>>,
            input: &KvOp,
            output: Option<&KvResult>,
        ) -> Option<Option<Vec<u8>>> {
            self.step(state, input, output).map(Cow::into_owned)
        }
    }

    fn val(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn absent_and_empty_differ_only_in_strict_mode() {
        let get_empty = KvResult::value("");
        let get_absent = KvResult::Value(None);
        let strict = KvModel::strict();
        assert_eq!(strict.step_owned(&None, &KvOp::get("k"), Some(&get_absent)), Some(None));
        assert_eq!(strict.step_owned(&None, &KvOp::get("k"), Some(&get_empty)), None);
        let loose = KvModel::empty_is_absent();
        assert_eq!(loose.step_owned(&None, &KvOp::get("k"), Some(&get_empty)), Some(None));
        assert_eq!(loose.step_owned(&None, &KvOp::put("k", ""), Some(&KvResult::Done)), Some(None));
    }

    #[test]
    fn append_delete_and_cas_follow_the_map() {
        let m = KvModel::strict();
        let done = Some(&KvResult::Done);
        let s = m.step_owned(&None, &KvOp::append("k", "ab"), done).unwrap();
        let s = m.step_owned(&s, &KvOp::append("k", "c"), done).unwrap();
        assert_eq!(s, val("abc"));
        let swapped = KvResult::Cas { swapped: true };
        let no_match = KvResult::Cas { swapped: false };
        let cas = KvOp::cas("k", Some("abc"), "z");
        assert_eq!(m.step_owned(&s, &cas, Some(&swapped)), Some(val("z")));
        assert_eq!(m.step_owned(&s, &cas, Some(&no_match)), None);
        assert_eq!(m.step_owned(&val("q"), &cas, Some(&no_match)), Some(val("q")));
        assert_eq!(m.step_owned(&s, &KvOp::delete("k"), done), Some(None));
        let cas_absent = KvOp::cas("k", None::<&str>, "new");
        assert_eq!(m.step_owned(&None, &cas_absent, Some(&swapped)), Some(val("new")));
        assert_eq!(m.step_owned(&None, &cas_absent, None), Some(val("new")));
        assert_eq!(m.step_owned(&val("x"), &cas_absent, None), Some(val("x")));
    }

    #[test]
    fn descriptions_quote_text() {
        let m = KvModel::empty_is_absent();
        let text = m.describe_operation(&KvOp::get("4"), Some(&KvResult::value("x 1 0 y")));
        assert_eq!(text, "get \"4\" -> \"x 1 0 y\"");
        assert_eq!(m.describe_state(&None), "\"\"");
        assert_eq!(KvModel::strict().describe_state(&None), "absent");
        assert_eq!(show_bytes(&[0xff, 0x01]), "0xff01");
    }
}
