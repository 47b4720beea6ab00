//! Tickets and the durable watermark of one core's log, with the futures that wait on it.
//!
//! A [`Ticket`] is the sequence number of an appended record. The backend advances the
//! watermark (`Watermark::advance`) when the group-commit machine reports a seq durable;
//! [`WaitDurable`] resolves once the watermark reaches its ticket. Waiters are kept sorted by
//! ticket, so an advance wakes exactly the tasks it satisfies. Everything here is
//! single-threaded (`Rc`, `Cell`): one watermark per core.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::error::{FatalError, StorageError};

/// The sequence number of an appended record; durable once [`crate::Storage::durable`]
/// reaches it. Tickets of one log increase with each append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ticket(pub u64);

impl Ticket {
    /// The record's sequence number.
    pub const fn seq(self) -> u64 {
        self.0
    }
}

/// The durable watermark of one log and the tasks waiting on it.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    durable: Cell<u64>,
    failed: Cell<Option<FatalError>>,
    /// Waiters by the seq they wait for.
    waiters: RefCell<BTreeMap<u64, Vec<Waker>>>,
    /// Bumped at every durability advance, recycle, or failure.
    epoch: Cell<u64>,
    progress_waiters: RefCell<Vec<Waker>>,
}

impl Watermark {
    /// A watermark at which everything up to `durable` is durable.
    pub(crate) fn new(durable: u64) -> Rc<Self> {
        let watermark = Self::default();
        watermark.durable.set(durable);
        Rc::new(watermark)
    }

    pub(crate) fn durable(&self) -> u64 {
        self.durable.get()
    }

    pub(crate) fn failed(&self) -> Option<FatalError> {
        self.failed.get()
    }

    /// Everything up to `seq` is durable: wakes the waiters it satisfies.
    pub(crate) fn advance(&self, seq: u64) {
        if seq <= self.durable.get() {
            return;
        }
        self.durable.set(seq);
        let satisfied = {
            let mut waiters = self.waiters.borrow_mut();
            let rest = waiters.split_off(&(seq + 1));
            std::mem::replace(&mut *waiters, rest)
        };
        for waker in satisfied.into_values().flatten() {
            waker.wake();
        }
        self.progress();
    }

    /// Something else freed room (a segment was recycled).
    pub(crate) fn progress(&self) {
        self.epoch.set(self.epoch.get() + 1);
        let waiters = std::mem::take(&mut *self.progress_waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// The log failed: every waiter, now and later, gets `error`.
    pub(crate) fn fail(&self, error: FatalError) {
        if self.failed.get().is_none() {
            self.failed.set(Some(error));
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters.into_values().flatten() {
            waker.wake();
        }
        self.progress();
    }
}

/// Resolves once its ticket is durable (`Ok`) or the log has failed (`Err(Fatal)`).
/// Returned by [`crate::Storage::wait_durable`]; `!Send`, for the core's own tasks.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct WaitDurable {
    watermark: Rc<Watermark>,
    seq: u64,
}

impl WaitDurable {
    pub(crate) fn new(watermark: Rc<Watermark>, ticket: Ticket) -> Self {
        Self {
            watermark,
            seq: ticket.0,
        }
    }
}

impl Future for WaitDurable {
    type Output = Result<(), StorageError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.watermark.durable() >= self.seq {
            return Poll::Ready(Ok(()));
        }
        if let Some(failed) = self.watermark.failed() {
            return Poll::Ready(Err(failed.into()));
        }
        let mut waiters = self.watermark.waiters.borrow_mut();
        let list = waiters.entry(self.seq).or_default();
        if !list.iter().any(|waker| waker.will_wake(cx.waker())) {
            list.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Resolves at the next progress of the log after it was created (see
/// [`crate::Storage::wait_progress`]).
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct WaitProgress {
    watermark: Rc<Watermark>,
    epoch: u64,
}

impl WaitProgress {
    pub(crate) fn new(watermark: Rc<Watermark>) -> Self {
        let epoch = watermark.epoch.get();
        Self { watermark, epoch }
    }
}

impl Future for WaitProgress {
    type Output = Result<(), StorageError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(failed) = self.watermark.failed() {
            return Poll::Ready(Err(failed.into()));
        }
        if self.watermark.epoch.get() != self.epoch {
            return Poll::Ready(Ok(()));
        }
        self.watermark
            .progress_waiters
            .borrow_mut()
            .push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct AtomicFlag(std::sync::atomic::AtomicBool);
    impl Wake for AtomicFlag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn waiters_wake_in_order_and_on_failure() {
        let watermark = Watermark::new(0);
        let flag = std::sync::Arc::new(AtomicFlag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait5 = WaitDurable::new(watermark.clone(), Ticket(5));
        assert!(Pin::new(&mut wait5).poll(&mut cx).is_pending());
        watermark.advance(4);
        assert!(!flag.0.load(std::sync::atomic::Ordering::SeqCst));
        watermark.advance(5);
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(
            Pin::new(&mut wait5).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));

        let mut wait9 = WaitDurable::new(watermark.clone(), Ticket(9));
        let mut progress = WaitProgress::new(watermark.clone());
        assert!(Pin::new(&mut wait9).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut progress).poll(&mut cx).is_pending());
        watermark.fail(FatalError::Invariant("test"));
        assert!(matches!(
            Pin::new(&mut wait9).poll(&mut cx),
            Poll::Ready(Err(StorageError::Fatal(_)))
        ));
        assert!(matches!(
            Pin::new(&mut progress).poll(&mut cx),
            Poll::Ready(Err(StorageError::Fatal(_)))
        ));
    }
}
