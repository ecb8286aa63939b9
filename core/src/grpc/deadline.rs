//! Call deadlines, earliest first, shared by the server and the client.
//! (Tested in `core/tests/loopback.rs`: an `Instant` needs a clock.)
//!
//! Entries are not removed when a call ends early (that would need a
//! search); they are skipped when they come due for a call that is gone or
//! has another deadline, and swept out once they outnumber live calls.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::h2::StreamId;

#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, StreamId)>>,
}

impl Deadlines {
    pub fn push(&mut self, at: Instant, call: StreamId) {
        self.heap.push(Reverse((at, call)));
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline, possibly of a call that has ended.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Take the next entry due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, StreamId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Drop stale entries once they dominate: `live(call, at)` says whether
    /// an entry still belongs to a call in progress.
    pub fn sweep(&mut self, live_calls: usize, live: impl Fn(StreamId, Instant) -> bool) {
        if self.heap.len() > 64 && self.heap.len() > 2 * live_calls {
            self.heap.retain(|Reverse((at, call))| live(*call, *at));
        }
    }
}

/// The earlier of two optional times.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
