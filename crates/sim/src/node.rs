//! One simulated server: a Raft core, its disk and a tiny state machine.

use crate::conftrack::ConfTrack;
use crate::disk::SimDisk;
use raft::{HardState, Index, NodeId, Raft, Snapshot, Term};

/// The replicated state machine of the `raft` workload: it only remembers how far it got
/// and a running digest of everything it applied, which is all the safety checks need.
/// (The kv workload will replace it with the key/value store.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// Highest index applied (or restored from a snapshot).
    pub applied_index: Index,
    /// Digest of the applied sequence: `chain(i) = mix(chain(i - 1), i, hash(entry i))`.
    pub chain: u64,
    /// Commands (not no-ops) applied.
    pub commands: u64,
}

const SNAPSHOT_HEADER_BYTES: usize = 24;

impl StateMachine {
    /// Serializes the state into snapshot data: a 24-byte header (applied index, chain,
    /// commands; little-endian) then `padding_bytes` of a pattern derived from the index, so
    /// that multi-chunk snapshot transfers are exercised and checked byte for byte.
    pub(crate) fn encode(&self, padding_bytes: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + padding_bytes as usize);
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        out.extend_from_slice(&self.chain.to_le_bytes());
        out.extend_from_slice(&self.commands.to_le_bytes());
        out.extend((0..padding_bytes).map(|k| pad_byte(self.applied_index, k)));
        out
    }

    /// Inverse of [`StateMachine::encode`]; an error names what is damaged.
    pub(crate) fn decode(data: &[u8]) -> Result<StateMachine, String> {
        if data.len() < SNAPSHOT_HEADER_BYTES {
            return Err(format!("snapshot data is {} bytes, shorter than its header", data.len()));
        }
        let word =
            |k: usize| u64::from_le_bytes(data[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
        let sm = StateMachine { applied_index: word(0), chain: word(1), commands: word(2) };
        let padding = &data[SNAPSHOT_HEADER_BYTES..];
        if let Some(k) =
            (0..padding.len()).find(|&k| padding[k] != pad_byte(sm.applied_index, k as u64))
        {
            return Err(format!("snapshot data is corrupt at byte {}", SNAPSHOT_HEADER_BYTES + k));
        }
        Ok(sm)
    }

    /// The state a restarted node starts from: its durable snapshot, or nothing.
    pub(crate) fn from_snapshot(snapshot: Option<&Snapshot>) -> Result<StateMachine, String> {
        match snapshot {
            Some(s) => StateMachine::decode(&s.data),
            None => Ok(StateMachine::default()),
        }
    }
}

fn pad_byte(index: Index, k: u64) -> u8 {
    (index.wrapping_mul(31).wrapping_add(k.wrapping_mul(7)) % 251) as u8
}

/// A server. `raft` is `None` while the node is crashed.
pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) raft: Option<Raft>,
    pub(crate) disk: SimDisk,
    pub(crate) sm: StateMachine,
    /// Bumped at every crash and restart; events scheduled for an older incarnation are void.
    pub(crate) incarnation: u64,
    /// This node's tick period: nominal ± clock drift.
    pub(crate) tick_period_us: u64,
    /// Highest term observed while up (terms never decrease).
    pub(crate) seen_term: Term,
    /// Highest commit index observed while up (it never decreases while up).
    pub(crate) seen_commit: Index,
    /// The term in which this node was last seen becoming leader.
    pub(crate) leader_term_noted: Option<Term>,
    /// Number of the last Ready taken in this incarnation.
    pub(crate) last_ready_number: u64,
    /// The last hard state handed to the disk (or recovered from it).
    pub(crate) last_hard_state: HardState,
    /// The membership its log says, followed from outside the core.
    pub(crate) conf: ConfTrack,
}

impl Node {
    pub(crate) fn new(id: NodeId, tick_period_us: u64) -> Node {
        Node {
            id,
            raft: None,
            disk: SimDisk::default(),
            sm: StateMachine::default(),
            incarnation: 0,
            tick_period_us,
            seen_term: 0,
            seen_commit: 0,
            leader_term_noted: None,
            last_ready_number: 0,
            last_hard_state: HardState::default(),
            conf: ConfTrack::default(),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.raft.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_data_round_trips_and_detects_corruption() {
        let sm = StateMachine { applied_index: 42, chain: 0xdead_beef, commands: 40 };
        let mut data = sm.encode(100);
        assert_eq!(StateMachine::decode(&data), Ok(sm));
        data[70] ^= 1;
        assert!(StateMachine::decode(&data).is_err());
        assert!(StateMachine::decode(&data[..10]).is_err());
    }
}
