//! Peer streams being dialled: how a removed member that never speaks learns that it was
//! removed.
//!
//! The server dials a stream to every peer of its member table as soon as it starts
//! (`server::peer`), and redials a peer whose stream broke (the peer restarted), with a
//! backoff from 50 ms to 2 s while the peer cannot be reached. Each stream opens with a
//! Hello, and a peer that has applied the caller's removal answers etcd's "the member has
//! been permanently removed from the cluster"; the caller stops for good.
//!
//! The Raft messages alone do not tell such a member: a learner or a joiner that missed
//! its removal never campaigns, the leader no longer sends it anything, so it would stay
//! up, stale, for ever, and a watch opened on it would wait for revisions it never
//! applies (kv seeds 1271 and 8302 of `--membership always`, once the watchers stopped
//! moving when the clients stopped). Only the answer to a Hello is modelled here: a
//! welcome changes nothing in the simulation, so a run where no removed member dials has
//! the same trace as without this module.

use super::cluster::{KvCluster, KvEvent};
use raft::NodeId;

/// The server's first reconnect backoff (`server::peer::PEER_RECONNECT_BACKOFF_MIN`).
const DIAL_BACKOFF_MIN_US: u64 = 50_000;
/// The server's longest reconnect backoff (`server::peer::PEER_RECONNECT_BACKOFF_MAX`).
const DIAL_BACKOFF_MAX_US: u64 = 2_000_000;

impl KvCluster {
    /// Member `idx` just started: it dials every peer of its member table (the founders
    /// while a joiner has none yet), and every live member redials it (their streams to
    /// its previous incarnation broke).
    pub(crate) fn dial_peers_at_start(&mut self, idx: usize) {
        let Some(node) = self.members[idx].node.as_ref() else { return };
        let me = self.members[idx].id;
        let mut peers: Vec<NodeId> = node.members().iter().map(|m| m.id).collect();
        if peers.is_empty() {
            peers = (1..=self.cfg.members as NodeId).collect();
        }
        let slots = self.members.len();
        for peer in peers.into_iter().filter(|&p| p != me && p as usize <= slots) {
            self.dial(idx, peer as usize - 1, DIAL_BACKOFF_MIN_US);
        }
        for other in 0..self.members.len() {
            if other != idx && self.members[other].node.is_some() {
                self.dial(other, idx, DIAL_BACKOFF_MIN_US);
            }
        }
    }

    /// Member `idx` (as it runs now) sends a Hello to `peer`; `backoff_us`: how long it
    /// waits before dialling again if the Hello does not get through.
    fn dial(&mut self, idx: usize, peer: usize, backoff_us: u64) {
        // One dial at a time per peer: the one pending gets through as soon as this
        // would, so the retries stay bounded by the members times their peers.
        if !self.members[idx].dialing.insert(peer) {
            return;
        }
        let incarnation = self.members[idx].incarnation;
        let delay = self.net.cfg.sample_delay_us(&mut self.rng_dial, false);
        let hello = KvEvent::PeerHello { member: idx, incarnation, peer, backoff_us };
        self.queue.push(self.now_us + delay, hello);
    }

    /// A Hello from member `idx` reaches `peer` (or does not: the link is cut or the
    /// peer down, and `idx` dials again after `backoff_us`, doubled up to the maximum).
    pub(crate) fn on_peer_hello(
        &mut self,
        (idx, incarnation): (usize, u64),
        peer: usize,
        backoff_us: u64,
    ) {
        let m = &self.members[idx];
        if m.incarnation != incarnation || m.node.is_none() {
            return; // the dialling incarnation stopped
        }
        let (from, to) = (m.id, self.members[peer].id);
        match self.members[peer].node.as_ref() {
            Some(node) if self.net.link_up(from, to) => {
                let removed = node.is_removed_member(from);
                self.members[idx].dialing.remove(&peer);
                if removed {
                    self.retire(idx, to);
                }
                // Welcomed: the stream stays open; a later batch on it is checked as
                // every peer message is (`on_peer`).
            }
            _ if self.members[peer].retired => {
                self.members[idx].dialing.remove(&peer); // a removed peer is dialled no more
            }
            _ => {
                let next = (backoff_us * 2).min(DIAL_BACKOFF_MAX_US);
                let again = KvEvent::PeerDial { member: idx, incarnation, peer, backoff_us: next };
                self.queue.push(self.now_us + backoff_us, again);
            }
        }
    }

    /// Member `idx` dials `peer` again after a backoff.
    pub(crate) fn on_peer_dial(
        &mut self,
        (idx, incarnation): (usize, u64),
        peer: usize,
        backoff_us: u64,
    ) {
        let m = &self.members[idx];
        if m.incarnation == incarnation && m.node.is_some() {
            self.members[idx].dialing.remove(&peer);
            self.dial(idx, peer, backoff_us);
        }
    }
}
