//! Client sessions: the per-client memory that makes retried writes run once.
//!
//! Kept in persistent maps like the key space, so a snapshot view shares them
//! at no cost. `by_last_index` orders sessions by their last activity so
//! expiry takes the least recently used one in O(log n).
//!
//! Sessions are replicated state, so their memory is bounded, without
//! letting one client undo another's exactly-once guarantee:
//!
//! * At most [`Config::sessions_max`](crate::Config::sessions_max) are open.
//!   A registration beyond it is refused with [`KvError::TooManySessions`]
//!   instead of evicting the least recently used session, as the first
//!   version did: that let any client, by registering in a loop, evict every
//!   other client's live session (whose next retry then failed with
//!   `SessionExpired`). Sessions still leave only by idling past
//!   `session_idle_entries_max` log entries, which frees the slots of a client
//!   that registered many and went quiet.
//! * A session keeps its last response only up to
//!   [`SESSION_RESPONSE_BYTES_MAX`] encoded bytes. A larger one (a
//!   session-tagged txn with a large range, a put with a large `prev_kv`) is
//!   replaced by [`KvError::ResponseNotKept`], naming the revision right after
//!   the write: a retry is not run again (exactly-once holds) and learns that
//!   the write took effect and where to read what it would have returned.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};

use crate::types::{KvError, RequestId, Response};

/// Largest response (encoded) a session keeps for a retry; a larger one is
/// replaced by [`KvError::ResponseNotKept`]. With
/// [`Config::sessions_max`](crate::Config::sessions_max) it bounds the
/// replicated memory sessions take: 10,000 × 4 KiB = 40 MiB at the defaults.
pub const SESSION_RESPONSE_BYTES_MAX: usize = 4096;

/// What the state machine remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientSession {
    /// Highest sequence number executed; 0 right after registration.
    pub(crate) last_seq: u64,
    /// Log index of the last command that touched the session.
    pub(crate) last_index: u64,
    /// Response to `last_seq`, replayed to a retry; `None` until the first
    /// command.
    pub(crate) response: Option<Arc<Response>>,
}

/// What to do with a command that carries a [`RequestId`].
pub(crate) enum SessionCheck {
    /// New sequence number: run it and record the response.
    Execute,
    /// A retry of the last command: return its saved response.
    Replay(Arc<Response>),
    /// Refuse without running.
    Reject(KvError),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sessions {
    pub(crate) by_client: OrdMap<u64, ClientSession>,
    /// `(last_index, client_id)` of every session.
    by_last_index: OrdSet<(u64, u64)>,
}

impl Sessions {
    /// Drops every session idle for more than `idle_max` log entries as of
    /// log index `index`.
    pub(crate) fn expire(&mut self, index: u64, idle_max: u64) {
        while let Some(&(last_index, client_id)) = self.by_last_index.get_min() {
            if index - last_index <= idle_max {
                break;
            }
            self.remove(last_index, client_id);
        }
    }

    fn remove(&mut self, last_index: u64, client_id: u64) {
        let removed = self.by_last_index.remove(&(last_index, client_id));
        let session = self.by_client.remove(&client_id);
        assert!(removed.is_some() && session.is_some_and(|s| s.last_index == last_index));
    }

    /// Opens a session whose id is `index`, unless `sessions_max` are open:
    /// a live session is never evicted to make room (see the module docs).
    pub(crate) fn register(&mut self, index: u64, sessions_max: u64) -> Result<u64, KvError> {
        if self.by_client.len() as u64 >= sessions_max {
            return Err(KvError::TooManySessions { max: sessions_max });
        }
        self.insert(index, ClientSession { last_seq: 0, last_index: index, response: None });
        Ok(index)
    }

    /// Adds a session (registration or snapshot restore).
    pub(crate) fn insert(&mut self, client_id: u64, session: ClientSession) {
        self.by_last_index.insert((session.last_index, client_id));
        let old = self.by_client.insert(client_id, session);
        assert!(old.is_none(), "session {client_id} registered twice");
    }

    pub(crate) fn check(&self, id: RequestId) -> SessionCheck {
        let Some(session) = self.by_client.get(&id.client_id) else {
            return SessionCheck::Reject(KvError::SessionExpired { client_id: id.client_id });
        };
        if id.seq > session.last_seq {
            return SessionCheck::Execute;
        }
        match &session.response {
            Some(response) if id.seq == session.last_seq => SessionCheck::Replay(response.clone()),
            _ => SessionCheck::Reject(KvError::StaleSequence {
                client_id: id.client_id,
                seq: id.seq,
                last_seq: session.last_seq,
            }),
        }
    }

    /// Marks the session active at `index`, and if `executed` is given
    /// records `(seq, response)` as its last command; `response` should be
    /// what [`kept_response`] makes of it.
    pub(crate) fn touch(&mut self, client_id: u64, index: u64, executed: Option<(u64, Response)>) {
        let session = self.by_client.get_mut(&client_id).expect("touched session exists");
        assert!(index > session.last_index);
        let old_index = std::mem::replace(&mut session.last_index, index);
        if let Some((seq, response)) = executed {
            assert!(seq > session.last_seq);
            session.last_seq = seq;
            session.response = Some(Arc::new(response));
        }
        self.by_last_index.remove(&(old_index, client_id));
        self.by_last_index.insert((index, client_id));
    }

    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }
}

/// What a session keeps of the response to its last write: the response, or if
/// its encoding is over [`SESSION_RESPONSE_BYTES_MAX`], an error that tells a
/// retry the write took effect at `revision`.
pub(crate) fn kept_response(id: RequestId, response: &Response, revision: u64) -> Response {
    if response.encode().len() <= SESSION_RESPONSE_BYTES_MAX {
        return response.clone();
    }
    Response::Error(KvError::ResponseNotKept { client_id: id.client_id, seq: id.seq, revision })
}
