//! The simulator's event queue: a binary heap of `(time, seq, event)` popped earliest first,
//! with `seq` (insertion order) breaking ties so that runs are deterministic.
//!
//! It owns only ordering; what an event does is decided in `sim.rs` and `link.rs`. Host timers
//! are not in the heap: the loop asks the hosts' `poll_timeout` each step instead, because a
//! host may move its deadline at any call.

use core::cmp::Ordering;
use std::collections::BinaryHeap;

use braid_core::Instant;

use crate::link::Direction;
use crate::sim::Side;

/// What happens at a scheduled instant.
#[derive(Debug)]
pub(crate) enum EventKind {
    /// The transmitter of `link`/`dir` finished the packet on the wire (void if `epoch` is
    /// stale because the link went down since).
    TxDone {
        link: usize,
        dir: Direction,
        epoch: u64,
    },
    /// `packet` reaches the receiver of `link`/`dir` (void if `epoch` is stale).
    Arrive {
        link: usize,
        dir: Direction,
        epoch: u64,
        packet: Vec<u8>,
    },
    /// The `index`th configured event of `link` is due.
    Link { link: usize, index: usize },
    /// Poll `side` again: its previous poll hit the transmit budget.
    Poll { side: Side },
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed so that `BinaryHeap` (a max-heap) pops the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Pending events, earliest first, FIFO among equal times.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    heap: BinaryHeap<Scheduled>,
    next_seq: u64,
}

impl EventQueue {
    pub(crate) fn push(&mut self, at: Instant, kind: EventKind) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Scheduled { at, seq, kind });
    }

    /// Time of the earliest pending event.
    pub(crate) fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|s| s.at)
    }

    /// Removes the earliest event.
    pub(crate) fn pop(&mut self) -> Option<(Instant, EventKind)> {
        self.heap.pop().map(|s| (s.at, s.kind))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_insertion_order() {
        let mut q = EventQueue::default();
        for (t, side) in [(5, Side::A), (1, Side::B), (5, Side::B), (1, Side::A)] {
            q.push(Instant::from_nanos(t), EventKind::Poll { side });
        }
        let order: Vec<(u64, Side)> = std::iter::from_fn(|| q.pop())
            .map(|(t, k)| match k {
                EventKind::Poll { side } => (t.as_nanos(), side),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            order,
            [(1, Side::B), (1, Side::A), (5, Side::A), (5, Side::B)]
        );
    }
}
