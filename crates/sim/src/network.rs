//! The simulated network: per-message delay (so messages reorder), loss and duplication,
//! and a matrix of one-way links that partitions cut and heal.

use raft::{Message, MessageBody, NodeId, Rng};
use std::collections::BTreeMap;

/// How the network treats each message. Probabilities are in `0.0..=1.0`.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Chance that a message is lost.
    pub loss: f64,
    /// Chance that a message is delivered twice (each copy with its own delay).
    pub duplicate: f64,
    /// Shortest one-way delay.
    pub delay_min_us: u64,
    /// Longest ordinary one-way delay.
    pub delay_max_us: u64,
    /// Chance that a message is held back much longer (so it overtakes nothing but is
    /// overtaken by many).
    pub long_delay: f64,
    /// Longest such delay.
    pub long_delay_max_us: u64,
    /// Chance that a reply (a Raft response, a server's answer to a client, a watch
    /// stream's message) is held back `reply_delay_min_us..=reply_delay_max_us`: the
    /// long-delay network, where answers arrive long after newer requests went out.
    /// 0 turns it off (and draws nothing, so other runs keep their traces).
    pub reply_delay: f64,
    /// Shortest held-back reply.
    pub reply_delay_min_us: u64,
    /// Longest held-back reply.
    pub reply_delay_max_us: u64,
}

impl NetConfig {
    /// A LAN that loses nothing: 0.2–2 ms delays.
    pub fn reliable() -> NetConfig {
        NetConfig {
            loss: 0.0,
            duplicate: 0.0,
            delay_min_us: 200,
            delay_max_us: 2_000,
            long_delay: 0.0,
            long_delay_max_us: 0,
            reply_delay: 0.0,
            reply_delay_min_us: 0,
            reply_delay_max_us: 0,
        }
    }

    /// The MIT 6.824 "unreliable" network: 10% loss, some duplicates, delays up to 27 ms
    /// and occasional long delays that reorder.
    pub fn unreliable() -> NetConfig {
        NetConfig {
            loss: 0.1,
            duplicate: 0.02,
            delay_min_us: 200,
            delay_max_us: 27_000,
            long_delay: 0.05,
            long_delay_max_us: 200_000,
            reply_delay: 0.0,
            reply_delay_min_us: 0,
            reply_delay_max_us: 0,
        }
    }

    /// The long-delay network: nothing lost, but `share` of all replies (the default
    /// [`LONG_DELAY_REPLY_SHARE`]: most of them) arrive 0.2-2 s late, long after the
    /// requests sent after them (long reordering; several election timeouts).
    pub fn long_delay(share: f64) -> NetConfig {
        NetConfig {
            reply_delay: share,
            reply_delay_min_us: 200_000,
            reply_delay_max_us: 2_000_000,
            ..NetConfig::reliable()
        }
    }

    /// How many times the liveness bounds stretch on this network: Raft promises
    /// progress only while a round trip is well under the election timeout, and the
    /// long-delay network breaks that for most replies, so an election there needs
    /// several tries (each must gather a quorum's answers within 200-400 ms).
    pub fn patience(&self) -> u64 {
        if self.is_long_delay() {
            LONG_DELAY_PATIENCE
        } else {
            1
        }
    }

    /// True for the long-delay network (replies held back).
    pub fn is_long_delay(&self) -> bool {
        self.reply_delay > 0.0
    }

    /// One line on the held-back replies, for parameter listings (empty when off).
    pub fn describe_long_delay(&self) -> String {
        if !self.is_long_delay() {
            return String::new();
        }
        format!(
            "\n  long-delay network: {:.2} of replies held back {}..{} ms",
            self.reply_delay,
            self.reply_delay_min_us / 1000,
            self.reply_delay_max_us / 1000
        )
    }

    /// Draws one message's delay; `reply` says whether it answers a request.
    pub(crate) fn sample_delay_us(&self, rng: &mut Rng, reply: bool) -> u64 {
        if reply && self.reply_delay > 0.0 && rng.chance(self.reply_delay) {
            return rng.range(self.reply_delay_min_us, self.reply_delay_max_us + 1);
        }
        if self.long_delay > 0.0 && rng.chance(self.long_delay) {
            return rng.range(self.delay_max_us, self.long_delay_max_us.max(self.delay_max_us) + 1);
        }
        rng.range(self.delay_min_us, self.delay_max_us + 1)
    }
}

/// Share of replies the long-delay network holds back in named scenarios.
pub const LONG_DELAY_REPLY_SHARE: f64 = 0.6;

/// Factor on the liveness bounds of seeds on the long-delay network.
pub const LONG_DELAY_PATIENCE: u64 = 4;

/// True for Raft messages that answer another one.
pub(crate) fn is_reply(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::PreVoteResp { .. }
            | MessageBody::VoteResp { .. }
            | MessageBody::AppendResp { .. }
            | MessageBody::HeartbeatResp { .. }
            | MessageBody::SnapshotResp { .. }
            | MessageBody::ReadIndexResp { .. }
    )
}

/// Which links are up. A link is up when it is not cut and neither end is disconnected.
pub(crate) struct Network {
    nodes: usize,
    /// `cut[from * nodes + to]` (0-based): the one-way link is down.
    cut: Vec<bool>,
    disconnected: Vec<bool>,
    pub(crate) cfg: NetConfig,
}

impl Network {
    pub(crate) fn new(nodes: usize, cfg: NetConfig) -> Network {
        Network { nodes, cut: vec![false; nodes * nodes], disconnected: vec![false; nodes], cfg }
    }

    fn slot(&self, from: NodeId, to: NodeId) -> usize {
        (from as usize - 1) * self.nodes + (to as usize - 1)
    }

    pub(crate) fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        !self.disconnected[from as usize - 1]
            && !self.disconnected[to as usize - 1]
            && !self.cut[self.slot(from, to)]
    }

    pub(crate) fn set_link(&mut self, from: NodeId, to: NodeId, up: bool) {
        let slot = self.slot(from, to);
        self.cut[slot] = !up;
    }

    pub(crate) fn set_connected(&mut self, id: NodeId, connected: bool) {
        self.disconnected[id as usize - 1] = !connected;
    }

    pub(crate) fn is_connected(&self, id: NodeId) -> bool {
        !self.disconnected[id as usize - 1]
    }

    /// Every link up, every node connected.
    pub(crate) fn heal(&mut self) {
        self.cut.fill(false);
        self.disconnected.fill(false);
    }

    /// The links that are down, for traces: `1>2` is the one-way link from 1 to 2,
    /// `x3` a disconnected node.
    pub(crate) fn describe(&self) -> String {
        let mut out = String::new();
        for id in 1..=self.nodes as NodeId {
            if !self.is_connected(id) {
                out.push_str(&format!(" x{id}"));
            }
        }
        for from in 1..=self.nodes as NodeId {
            for to in 1..=self.nodes as NodeId {
                if from != to && self.cut[self.slot(from, to)] {
                    out.push_str(&format!(" {from}>{to}"));
                }
            }
        }
        if out.is_empty() {
            out.push_str(" whole");
        }
        out
    }
}

/// Message counters, for RPC-count tests and reports.
#[derive(Clone, Debug, Default)]
pub struct MessageStats {
    /// Messages handed to the network, by kind.
    pub sent: BTreeMap<&'static str, u64>,
    /// Messages that reached a live receiver, by kind.
    pub delivered: BTreeMap<&'static str, u64>,
    /// Messages sent, by (receiver, kind).
    pub sent_to: BTreeMap<(NodeId, &'static str), u64>,
    /// Entries carried by all `Append` messages sent.
    pub entries_sent: u64,
    /// Rejected `AppendResp` messages sent, by the rejecting node.
    pub append_rejects_by: BTreeMap<NodeId, u64>,
    /// Messages lost, cut off by a partition or addressed to a node that crashed.
    pub dropped: u64,
}

impl MessageStats {
    pub(crate) fn on_send(&mut self, m: &Message) {
        let kind = m.kind_name();
        *self.sent.entry(kind).or_default() += 1;
        *self.sent_to.entry((m.to, kind)).or_default() += 1;
        match &m.body {
            MessageBody::Append { entries, .. } => self.entries_sent += entries.len() as u64,
            MessageBody::AppendResp { reject: Some(_), .. } => {
                *self.append_rejects_by.entry(m.from).or_default() += 1
            }
            _ => {}
        }
    }

    pub(crate) fn on_deliver(&mut self, m: &Message) {
        *self.delivered.entry(m.kind_name()).or_default() += 1;
    }

    /// Messages of `kind` sent (see [`raft::Message::kind_name`]).
    pub fn sent(&self, kind: &str) -> u64 {
        self.sent.get(kind).copied().unwrap_or(0)
    }

    /// Messages of `kind` sent to `to`.
    pub fn sent_to(&self, to: NodeId, kind: &'static str) -> u64 {
        self.sent_to.get(&(to, kind)).copied().unwrap_or(0)
    }

    /// Rejected appends sent by `from`.
    pub fn append_rejects_by(&self, from: NodeId) -> u64 {
        self.append_rejects_by.get(&from).copied().unwrap_or(0)
    }

    /// All messages sent.
    pub fn total_sent(&self) -> u64 {
        self.sent.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{Message, MessageBody};

    #[test]
    fn the_long_delay_network_holds_back_that_share_of_replies_only() {
        let net = NetConfig::long_delay(0.6);
        let mut rng = Rng::new(7);
        let (n, mut held) = (10_000, 0);
        for _ in 0..n {
            let d = net.sample_delay_us(&mut rng, true);
            assert!(d <= 2_000_000);
            held += u32::from(d >= 200_000);
            assert!(net.sample_delay_us(&mut rng, false) <= net.delay_max_us);
        }
        assert!((5_700..=6_300).contains(&held), "{held} of {n} replies held back");
        let reliable = NetConfig::reliable();
        assert!((0..1_000).all(|_| reliable.sample_delay_us(&mut rng, true) <= 2_000));
    }

    #[test]
    fn responses_are_replies_and_requests_are_not() {
        let msg = |body| Message { from: 1, to: 2, term: 1, body };
        assert!(is_reply(&msg(MessageBody::HeartbeatResp { read_round: 0 })));
        assert!(!is_reply(&msg(MessageBody::TimeoutNow)));
    }
}
