//! When a pull must stop: its caller cancelled the call, or the call's
//! deadline passed. A pull that several callers share goes on while one
//! of them still waits ([`Stop::all_of`]).
//!
//! Registry I/O blocks, so the pull's thread carries its [`Stop`] in a
//! thread-local ([`enter`]); the registry client's transport checks it
//! while it waits for bytes ([`current`]), so a stopped pull lets go of
//! its connection within a fraction of a second rather than at the
//! no-progress timeout.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crisp_core::grpc::Code;

/// A handle on whether some work is still wanted. Clones share state.
#[derive(Clone, Debug)]
pub struct Stop(Arc<Inner>);

#[derive(Debug)]
enum Inner {
    /// One caller: cancelled by the host, or past its deadline.
    Caller {
        cancelled: AtomicBool,
        deadline: Option<Instant>,
    },
    /// Shared work: stops once every member has stopped.
    AllOf(Mutex<Vec<Stop>>),
    /// Stops as soon as either does.
    AnyOf(Stop, Stop),
}

impl Stop {
    /// One caller's: `deadline` from the call's `grpc-timeout`.
    pub fn caller(deadline: Option<Instant>) -> Self {
        Self(Arc::new(Inner::Caller {
            cancelled: AtomicBool::new(false),
            deadline,
        }))
    }

    /// Work nobody can cancel (the command line, tests).
    pub fn never() -> Self {
        Self::caller(None)
    }

    /// The caller has gone (cancelled the call, or its connection
    /// closed). No effect on an [`Stop::all_of`].
    pub fn cancel(&self) {
        if let Inner::Caller { cancelled, .. } = &*self.0 {
            cancelled.store(true, Ordering::SeqCst);
        }
    }

    /// Work shared by `first` and those [`Stop::join`] adds later.
    pub(crate) fn all_of(first: Stop) -> Self {
        Self(Arc::new(Inner::AllOf(Mutex::new(vec![first]))))
    }

    /// Work that stops when `a` or `b` does (a pull's layers: the pull
    /// stops, or another layer failed).
    pub(crate) fn any_of(a: Stop, b: Stop) -> Self {
        Self(Arc::new(Inner::AnyOf(a, b)))
    }

    /// One more waiter on shared work.
    pub(crate) fn join(&self, other: Stop) {
        if let Inner::AllOf(members) = &*self.0 {
            members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(other);
        }
    }

    /// Why the work must stop now, if it must: `DeadlineExceeded` when a
    /// deadline passed, else `Cancelled`.
    pub fn reason(&self) -> Option<Code> {
        self.reason_at(Instant::now())
    }

    fn reason_at(&self, now: Instant) -> Option<Code> {
        match &*self.0 {
            Inner::Caller {
                cancelled,
                deadline,
            } => {
                if deadline.is_some_and(|d| d <= now) {
                    Some(Code::DeadlineExceeded)
                } else if cancelled.load(Ordering::SeqCst) {
                    Some(Code::Cancelled)
                } else {
                    None
                }
            }
            Inner::AllOf(members) => {
                let members = members.lock().unwrap_or_else(|p| p.into_inner());
                let mut reason = None;
                for m in members.iter() {
                    match m.reason_at(now) {
                        None => return None,
                        Some(Code::DeadlineExceeded) => reason = Some(Code::DeadlineExceeded),
                        Some(c) => reason = reason.or(Some(c)),
                    }
                }
                reason
            }
            Inner::AnyOf(a, b) => a.reason_at(now).or_else(|| b.reason_at(now)),
        }
    }

    /// The latest moment the work is still wanted: `None` when some
    /// waiter has no deadline.
    pub fn deadline(&self) -> Option<Instant> {
        match &*self.0 {
            Inner::Caller { deadline, .. } => *deadline,
            Inner::AllOf(members) => {
                let members = members.lock().unwrap_or_else(|p| p.into_inner());
                let mut latest = None;
                for m in members.iter() {
                    let d = m.deadline()?;
                    latest = Some(latest.map_or(d, |l: Instant| l.max(d)));
                }
                latest
            }
            Inner::AnyOf(a, b) => match (a.deadline(), b.deadline()) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Stop>> = const { RefCell::new(None) };
}

/// Restores the thread's previous [`Stop`] when dropped.
pub(crate) struct Entered {
    previous: Option<Stop>,
}

/// Make `stop` the one this thread's registry I/O obeys, until the guard
/// is dropped.
pub(crate) fn enter(stop: &Stop) -> Entered {
    let previous = CURRENT.with(|c| c.replace(Some(stop.clone())));
    Entered { previous }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Why this thread's current work must stop, if it must.
pub(crate) fn current() -> Option<Code> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(Stop::reason))
}

/// This thread's current [`Stop`], for threads it starts.
pub(crate) fn current_stop() -> Option<Stop> {
    CURRENT.with(|c| c.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_caller_stops_by_cancel_or_deadline() {
        let s = Stop::never();
        assert_eq!(s.reason(), None);
        s.cancel();
        assert_eq!(s.reason(), Some(Code::Cancelled));
        let now = Instant::now();
        let s = Stop::caller(Some(now + Duration::from_secs(5)));
        assert_eq!(s.reason_at(now), None);
        assert_eq!(
            s.reason_at(now + Duration::from_secs(5)),
            Some(Code::DeadlineExceeded)
        );
    }

    #[test]
    fn shared_work_stops_only_when_every_waiter_has_gone() {
        let now = Instant::now();
        let a = Stop::caller(Some(now + Duration::from_secs(1)));
        let b = Stop::never();
        let shared = Stop::all_of(a.clone());
        shared.join(b.clone());
        assert_eq!(shared.deadline(), None);
        assert_eq!(shared.reason_at(now + Duration::from_secs(2)), None);
        b.cancel();
        assert_eq!(
            shared.reason_at(now + Duration::from_secs(2)),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(shared.reason_at(now), None);
        // Nested: a layer shared by two pulls.
        let layer = Stop::all_of(shared.clone());
        assert_eq!(layer.reason_at(now), None);
        assert!(layer.reason_at(now + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn either_stops_work_that_stops_with_any() {
        let now = Instant::now();
        let pull = Stop::caller(Some(now + Duration::from_secs(1)));
        let failed = Stop::never();
        let layers = Stop::any_of(pull.clone(), failed.clone());
        assert_eq!(layers.reason_at(now), None);
        assert_eq!(layers.deadline(), pull.deadline());
        failed.cancel();
        assert_eq!(layers.reason_at(now), Some(Code::Cancelled));
        assert_eq!(
            Stop::any_of(pull, Stop::never()).reason_at(now + Duration::from_secs(1)),
            Some(Code::DeadlineExceeded)
        );
    }

    #[test]
    fn the_thread_carries_its_stop() {
        assert_eq!(current(), None);
        let s = Stop::never();
        {
            let _g = enter(&s);
            s.cancel();
            assert_eq!(current(), Some(Code::Cancelled));
        }
        assert_eq!(current(), None);
    }
}
