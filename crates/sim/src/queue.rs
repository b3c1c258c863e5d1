//! The event queue. Events are ordered by (time, sequence number): two events due at the
//! same microsecond run in the order they were scheduled, so ties never depend on the heap's
//! internals and a seed replays exactly.

use crate::checker::Violation;
use raft::Message;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Something that happens at a simulated instant.
pub(crate) enum Event {
    /// Node (by index) advances its logical clock by one tick.
    Tick {
        /// Index of the node in the cluster.
        node: usize,
        /// The node's incarnation when the tick was scheduled; stale after a crash.
        incarnation: u64,
    },
    /// A message arrives at `msg.to`.
    Deliver {
        /// The message.
        msg: Message,
        /// The receiver's incarnation at send time: a crash in between loses the message.
        incarnation: u64,
    },
    /// Power loss on a node while a write is in flight.
    PowerLoss {
        /// Index of the node in the cluster.
        node: usize,
        /// The node's incarnation when the write was issued; stale after a crash.
        incarnation: u64,
    },
    /// A node that lost power comes back.
    Restart {
        /// Index of the node in the cluster.
        node: usize,
        /// The node's (crashed) incarnation; void if something else restarted it.
        incarnation: u64,
    },
    /// The oldest pending write of a node's disk becomes durable.
    DiskSync {
        /// Index of the node in the cluster.
        node: usize,
        /// The node's incarnation when the write was issued; stale after a crash.
        incarnation: u64,
    },
}

struct Queued<E> {
    time_us: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time_us, self.seq) == (other.time_us, other.seq)
    }
}

impl<E> Eq for Queued<E> {}

impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Queued<E> {
    // Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time_us, other.seq).cmp(&(self.time_us, self.seq))
    }
}

/// A min-queue of events by (time, insertion order). Generic over the event type so the
/// raft workload ([`Event`]) and the kv workload share it.
/// More queued events than this is a message storm (see [`EventQueue::storm`]).
pub(crate) const STORM_EVENTS_MAX: usize = 1_000_000;

pub(crate) struct EventQueue<E = Event> {
    heap: BinaryHeap<Queued<E>>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue { heap: BinaryHeap::new(), next_seq: 0 }
    }
}

impl<E> EventQueue<E> {
    pub(crate) fn push(&mut self, time_us: u64, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Queued { time_us, seq, event });
    }

    /// Number of events waiting.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// When the next event is due.
    pub(crate) fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|q| q.time_us)
    }

    /// Removes the next event.
    pub(crate) fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|q| (q.time_us, q.event))
    }

    /// Removes the next event if it is due at or before `until_us`.
    pub(crate) fn pop_due(&mut self, until_us: u64) -> Option<(u64, E)> {
        match self.peek_time() {
            Some(t) if t <= until_us => self.pop(),
            _ => None,
        }
    }

    /// A healthy cluster keeps a few thousand events in flight; a queue longer than
    /// [`STORM_EVENTS_MAX`] is a message storm (e.g. duplicated answers each starting a
    /// new exchange), which a real cluster would die of. A storm is a failure, not a
    /// slow pass.
    pub(crate) fn storm(&self) -> Option<Violation> {
        let len = self.len();
        (len > STORM_EVENTS_MAX)
            .then(|| Violation::new("Message storm", format!("{len} events queued")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_due_together_come_out_in_scheduling_order() {
        let mut q: EventQueue = EventQueue::default();
        for node in [3, 1, 2] {
            q.push(10, Event::Tick { node, incarnation: 0 });
        }
        q.push(5, Event::Tick { node: 9, incarnation: 0 });
        let order: Vec<usize> = std::iter::from_fn(|| q.pop())
            .map(|(_, e)| match e {
                Event::Tick { node, .. } => node,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, vec![9, 3, 1, 2]);
    }
}
