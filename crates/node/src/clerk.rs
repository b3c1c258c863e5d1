//! The clerk: the client-side half of exactly-once, leader-following requests, sans-IO so
//! the simulator's clients and the real client library share it.
//!
//! A clerk remembers which member led last time and sends there first; on "not leader"
//! it follows the hint if there is one and otherwise tries the next member; on a timeout
//! it tries the next member. Writes carry the clerk's session id and a sequence number
//! that grows by one per new command and stays the same across retries, so the state
//! machine executes a retried write once and returns its original answer.

use crate::node::RequestError;
use kv::{Command, Op, RequestId};
use raft::NodeId;

/// Client-side request routing and session numbering. See the module docs.
#[derive(Clone, Debug)]
pub struct Clerk {
    servers: Vec<NodeId>,
    target: usize,
    client_id: Option<u64>,
    seq: u64,
}

impl Clerk {
    /// A clerk for a cluster of `servers`, trying `servers[first % len]` first.
    ///
    /// # Panics
    /// If `servers` is empty (a programming error: a client needs a cluster).
    pub fn new(servers: Vec<NodeId>, first: usize) -> Clerk {
        assert!(!servers.is_empty(), "a clerk needs at least one server");
        let target = first % servers.len();
        Clerk { servers, target, client_id: None, seq: 0 }
    }

    /// The member to send the current request to.
    pub fn target(&self) -> NodeId {
        self.servers[self.target]
    }

    /// The session id, once registered.
    pub fn session(&self) -> Option<u64> {
        self.client_id
    }

    /// The command that opens a session (send it before the first write).
    pub fn register_command(&self) -> Command {
        Command::new(Op::RegisterSession)
    }

    /// Records the session id the cluster handed out; sequence numbers restart at 1.
    pub fn on_registered(&mut self, client_id: u64) {
        self.client_id = Some(client_id);
        self.seq = 0;
    }

    /// Forgets the session (after `SessionExpired`): register again.
    pub fn reset_session(&mut self) {
        self.client_id = None;
        self.seq = 0;
    }

    /// The session tag of a new command: the session id and the next sequence number
    /// (`None` without a session). Reuse it for retries of that command.
    pub fn next_request_id(&mut self) -> Option<RequestId> {
        let client_id = self.client_id?;
        self.seq += 1;
        Some(RequestId { client_id, seq: self.seq })
    }

    /// Wraps a new operation as a command with the next sequence number. Keep the
    /// returned command for retries: it must be resent unchanged.
    pub fn new_command(&mut self, op: Op) -> Command {
        Command { request_id: self.next_request_id(), auth: None, op }
    }

    /// `from` answered: it is the member to try first next time.
    pub fn on_success(&mut self, from: NodeId) {
        if let Some(k) = self.servers.iter().position(|s| *s == from) {
            self.target = k;
        }
    }

    /// The current request failed at `from` with `err`: pick where to retry.
    pub fn on_error(&mut self, from: NodeId, err: &RequestError) {
        match err {
            RequestError::NotLeader { leader: Some(l) } if *l != from => {
                match self.servers.iter().position(|s| s == l) {
                    Some(k) => self.target = k,
                    None => self.rotate(),
                }
            }
            _ => self.rotate(),
        }
    }

    /// No answer came in time: try the next member.
    pub fn on_no_answer(&mut self) {
        self.rotate();
    }

    fn rotate(&mut self) {
        self.target = (self.target + 1) % self.servers.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_leader_hint_then_rotates() {
        let mut c = Clerk::new(vec![1, 2, 3], 0);
        assert_eq!(c.target(), 1);
        c.on_error(1, &RequestError::NotLeader { leader: Some(3) });
        assert_eq!(c.target(), 3);
        c.on_no_answer();
        assert_eq!(c.target(), 1);
        c.on_error(1, &RequestError::NotLeader { leader: None });
        assert_eq!(c.target(), 2);
        c.on_success(3);
        assert_eq!(c.target(), 3);
    }

    #[test]
    fn sequence_numbers_grow_per_command_not_per_retry() {
        let mut c = Clerk::new(vec![1], 0);
        let unsessioned = c.new_command(Op::Get { key: b"k".to_vec() });
        assert!(unsessioned.request_id.is_none());
        c.on_registered(77);
        let a = c.new_command(Op::Get { key: b"a".to_vec() });
        let b = c.new_command(Op::Get { key: b"b".to_vec() });
        let (a, b) = (a.request_id.unwrap(), b.request_id.unwrap());
        assert_eq!((a.client_id, a.seq), (77, 1));
        assert_eq!((b.client_id, b.seq), (77, 2));
    }
}
