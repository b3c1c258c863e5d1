//! The trace of a run: every event becomes one canonical text line. The lines are hashed
//! with FNV-1a 64 so that two runs of one seed compare by a single number (on any machine:
//! the text contains only simulated time and protocol data), and the most recent lines are
//! kept for failure reports.

use raft::{Message, MessageBody};
use std::collections::VecDeque;
use std::fmt;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64-bit: tiny, stable across platforms and versions, good enough to fingerprint a
/// trace (not for adversarial input).
#[derive(Clone, Copy, Debug)]
pub struct Fnv64 {
    state: u64,
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv64 {
    /// A hasher at the FNV offset basis.
    pub const fn new() -> Self {
        Fnv64 { state: FNV_OFFSET_BASIS }
    }

    /// Mixes `bytes` in.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state ^= u64::from(b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// Mixes a little-endian `u64` in.
    pub fn write_u64(&mut self, value: u64) {
        self.write(&value.to_le_bytes());
    }

    /// The hash of everything written so far.
    pub fn finish(&self) -> u64 {
        self.state
    }
}

/// FNV-1a 64 of one byte string.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.write(bytes);
    h.finish()
}

/// Collects the event lines of one run.
pub(crate) struct Trace {
    enabled: bool,
    verbose: bool,
    hasher: Fnv64,
    line: String,
    recent: VecDeque<String>,
    recent_max: usize,
}

impl Trace {
    /// `enabled` off skips formatting entirely (benchmarks); `verbose` prints each line.
    pub(crate) fn new(enabled: bool, verbose: bool, recent_max: usize) -> Trace {
        Trace {
            enabled,
            verbose,
            hasher: Fnv64::new(),
            line: String::with_capacity(256),
            recent: VecDeque::with_capacity(recent_max),
            recent_max,
        }
    }

    /// Starts a line stamped with the simulated time, or `None` when tracing is off. Finish
    /// it with [`Trace::end`].
    pub(crate) fn line(&mut self, now_us: u64) -> Option<&mut String> {
        if !self.enabled {
            return None;
        }
        self.line.clear();
        push_time(&mut self.line, now_us);
        Some(&mut self.line)
    }

    /// Hashes the current line, prints it when verbose and keeps it among the recent ones.
    pub(crate) fn end(&mut self) {
        self.hasher.write(self.line.as_bytes());
        self.hasher.write(b"\n");
        if self.verbose {
            println!("{}", self.line);
        }
        if self.recent_max == 0 {
            return;
        }
        // The line moves into the ring and the oldest line's allocation becomes the next
        // line's buffer (no copy: this runs for every event).
        let mut slot = if self.recent.len() == self.recent_max {
            self.recent.pop_front().unwrap_or_default()
        } else {
            String::with_capacity(self.line.capacity())
        };
        std::mem::swap(&mut slot, &mut self.line);
        self.recent.push_back(slot);
    }

    /// Starts or stops printing each line.
    pub(crate) fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    /// The FNV-1a 64 hash of every line so far.
    pub(crate) fn hash(&self) -> u64 {
        self.hasher.finish()
    }

    /// The most recent lines, oldest first.
    pub(crate) fn recent(&self) -> Vec<String> {
        self.recent.iter().cloned().collect()
    }
}

/// Appends the simulated time as `format!("{:>7}.{:03}ms ", us / 1000, us % 1000)` would,
/// by hand: it starts every event line, and `core::fmt` padding cost a tenth of a run.
fn push_time(line: &mut String, now_us: u64) {
    let (mut ms, frac) = (now_us / 1000, now_us % 1000);
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (ms % 10) as u8;
        n += 1;
        ms /= 10;
        if ms == 0 {
            break;
        }
    }
    for _ in n..7 {
        line.push(' ');
    }
    line.extend(digits[..n].iter().rev().map(|&d| char::from(d)));
    line.push('.');
    for d in [frac / 100, frac / 10 % 10, frac % 10] {
        line.push(char::from(b'0' + d as u8));
    }
    line.push_str("ms ");
}

/// Canonical one-line rendering of a message for traces (entry payloads are summarised by
/// range and term, never printed).
pub(crate) struct MsgFmt<'a>(pub &'a Message);

impl fmt::Display for MsgFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{} t{}", m.kind_name(), m.term)?;
        match &m.body {
            MessageBody::PreVote { last_index, last_term }
            | MessageBody::Vote { last_index, last_term, transfer: false } => {
                write!(f, " last({last_index},{last_term})")
            }
            MessageBody::Vote { last_index, last_term, transfer: true } => {
                write!(f, " last({last_index},{last_term}) transfer")
            }
            MessageBody::PreVoteResp { reject } | MessageBody::VoteResp { reject } => {
                write!(f, " {}", if *reject { "reject" } else { "grant" })
            }
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                write!(f, " prev({prev_index},{prev_term}) c{commit}")?;
                match (entries.first(), entries.last()) {
                    (Some(a), Some(b)) => {
                        write!(f, " ents[{}..={}]t{}-{}", a.index, b.index, a.term, b.term)
                    }
                    _ => write!(f, " ents[]"),
                }
            }
            MessageBody::AppendResp { index, reject: None } => write!(f, " ok i{index}"),
            MessageBody::AppendResp { index, reject: Some(h) } => write!(
                f,
                " reject i{index} hint(t{},i{},len{})",
                h.conflict_term, h.conflict_first_index, h.log_len
            ),
            MessageBody::Heartbeat { commit, read_round } => write!(f, " c{commit} r{read_round}"),
            MessageBody::HeartbeatResp { read_round } => write!(f, " r{read_round}"),
            MessageBody::Snapshot { meta, offset, total_bytes, chunk, done } => write!(
                f,
                " snap({},{}) off{offset}+{}/{total_bytes}{}",
                meta.index,
                meta.term,
                chunk.len(),
                if *done { " done" } else { "" }
            ),
            MessageBody::SnapshotResp { snapshot_index, next_offset, done, last_index } => write!(
                f,
                " snap{snapshot_index} next{next_offset} last{last_index}{}",
                if *done { " done" } else { "" }
            ),
            MessageBody::ReadIndex { ctx } => write!(f, " ctx{ctx}"),
            MessageBody::ReadIndexResp { ctx, index } => write!(f, " ctx{ctx} i{index}"),
            MessageBody::TimeoutNow => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_prefix_matches_the_format_it_replaces() {
        for us in [0, 7, 999, 1_000, 1_234_567, 9_999_999_999, 10_000_000_000, u64::MAX] {
            let mut line = String::new();
            push_time(&mut line, us);
            assert_eq!(line, format!("{:>7}.{:03}ms ", us / 1000, us % 1000), "at {us} us");
        }
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
