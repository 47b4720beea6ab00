//! Mailboxes between the control thread and the cores: a bounded crossbeam queue plus a waker.
//!
//! SPEC §1 has control frames and deliveries cross between the tokio control thread and the
//! glommio cores over crossbeam channels. A crossbeam receiver cannot be awaited, so each
//! mailbox pairs the queue with an [`AtomicWaker`]: the sender pushes, then wakes whichever task
//! last waited. glommio wakers may be woken from a foreign thread (its notifier queues the wake
//! to the owning executor), and tokio's may be too, so one type serves both directions without
//! polling timers.
//!
//! Bounded: a full mailbox is a typed error for the sender (backpressure), never growth.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

/// The sending half. Cheap to clone.
#[derive(Debug)]
pub struct MailboxSender<T> {
    tx: Sender<T>,
    waker: Arc<AtomicWaker>,
}

impl<T> Clone for MailboxSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

/// The receiving half, owned by one task.
#[derive(Debug)]
pub struct MailboxReceiver<T> {
    rx: Receiver<T>,
    waker: Arc<AtomicWaker>,
}

/// Why a message could not be posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError<T> {
    /// The mailbox holds its capacity already.
    #[error("mailbox full")]
    Full(T),
    /// The receiver is gone.
    #[error("mailbox closed")]
    Closed(T),
}

/// A mailbox holding at most `capacity` messages.
pub fn mailbox<T>(capacity: usize) -> (MailboxSender<T>, MailboxReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let waker = Arc::new(AtomicWaker::new());
    (
        MailboxSender {
            tx,
            waker: waker.clone(),
        },
        MailboxReceiver { rx, waker },
    )
}

impl<T> MailboxSender<T> {
    /// Posts without waiting. `Full` is backpressure: the caller decides to retry, drop with a
    /// metric, or refuse upstream.
    pub fn post(&self, msg: T) -> Result<(), MailboxError<T>> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(m)) => Err(MailboxError::Full(m)),
            Err(TrySendError::Disconnected(m)) => Err(MailboxError::Closed(m)),
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

impl<T> MailboxReceiver<T> {
    /// Takes a waiting message, if any.
    pub fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Waits for the next message; `None` once every sender is gone and the queue is empty.
    pub fn recv(&self) -> Recv<'_, T> {
        Recv { mb: self }
    }

    /// Polls for a message, registering the task's waker when there is none.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.rx.try_recv() {
            Ok(m) => return Poll::Ready(Some(m)),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.waker.register(cx.waker());
        // A message posted between the first check and the registration would have woken the
        // previous waker: check again now that ours is registered.
        match self.rx.try_recv() {
            Ok(m) => Poll::Ready(Some(m)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

/// Future of [`MailboxReceiver::recv`].
#[derive(Debug)]
pub struct Recv<'a, T> {
    mb: &'a MailboxReceiver<T>,
}

impl<T> Future for Recv<'_, T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.mb.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ordered() {
        let (tx, rx) = mailbox(2);
        tx.post(1).unwrap();
        tx.post(2).unwrap();
        assert_eq!(tx.post(3), Err(MailboxError::Full(3)));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.post(4), Err(MailboxError::Closed(4)));
    }

    #[test]
    fn a_post_from_another_thread_wakes_a_glommio_task() {
        let (tx, rx) = mailbox::<u32>(4);
        let h = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.post(7).unwrap();
        });
        let got = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move { rx.recv().await })
            .unwrap()
            .join()
            .unwrap();
        h.join().unwrap();
        assert_eq!(got, Some(7));
    }
}
