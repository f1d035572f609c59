//! A long-lived wait for the next value of a watch channel (the proxy's lifecycle, the routes)
//! that a client's event loop polls on every turn.
//!
//! The wait is made once per change rather than once per turn (a new `changed()` per turn
//! would register and unregister a waiter on channels that every client shares, for every
//! message); each turn polls the same registered wait, which refreshes its waker.
//!
//! Invariant: no change is missed. The wait decides what is new, so a change that lands between
//! its completion and the next wait is found by that wait's first poll. The caller polls it from
//! one task only; a turn that does not poll it (the routes, while the client holds no server)
//! only puts the change off to the next turn that does.
//!
//! Why a turn may skip polling the wait, and when it must not: a sender wakes the waiters of
//! its 8 `Notify` shards one shard after the other, so a wait that registers while a sender is
//! still going through the shards (the client took the change from an early shard and made its
//! next wait in a later one) is woken once more for that same change. That wake-up uses the
//! wait's registration; only a poll makes a new one. So the wait is polled through a waker of
//! its own (a [`Ring`]) that notes any use of the registration (a change, that second wake-up,
//! tokio's cooperative budget deferring the poll), and a turn skips the poll only while the bell
//! has not rung and the task's waker is the one registered. An earlier version skipped the poll
//! whenever the channel's version had not moved, and then missed the next change for good (a
//! pooled client not told of the proxy's stop, one run in ten on a loaded machine; a stress run
//! of two quick changes missed 23 in 1,000 that way, none with the bell or with a poll every
//! turn). Skipping saves each turn the channel's waiter lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::sync::watch;

use super::doorbell::Ring;

/// The boxed wait: made once per change, which is rare.
type Wait<T> = Pin<Box<dyn Future<Output = (bool, watch::Receiver<T>)> + Send>>;

/// A wait for the next change of one watch channel.
pub(crate) struct Changes<T> {
    wait: Wait<T>,
    /// The waker of the wait's registration, while it has not been used.
    bell: Option<Arc<Ring>>,
}

impl<T: Send + Sync + 'static> Changes<T> {
    /// Waits for changes after the value `rx` has seen.
    pub(crate) fn new(rx: watch::Receiver<T>) -> Changes<T> {
        Changes { wait: Box::pin(changed(rx)), bell: None }
    }

    /// `Ready(Some(read(value)))` once the channel changed, `Ready(None)` once its sender is
    /// gone; then waits for the next change. Always from the same task (see the invariant).
    pub(crate) fn poll_change<R>(&mut self, cx: &mut Context<'_>, read: impl FnOnce(&T) -> R) -> Poll<Option<R>> {
        if let Some(bell) = &self.bell {
            if !bell.rung.load(Ordering::Acquire) && bell.task.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let bell = Arc::new(Ring::new(cx.waker()));
        let waker = Waker::from(bell.clone());
        let mut bell_cx = Context::from_waker(&waker);
        let Poll::Ready((ok, mut rx)) = self.wait.as_mut().poll(&mut bell_cx) else {
            self.bell = Some(bell);
            return Poll::Pending;
        };
        self.bell = None;
        let out = ok.then(|| read(&rx.borrow_and_update()));
        self.wait = Box::pin(changed(rx));
        Poll::Ready(out)
    }
}

/// Completes when `rx`'s value changes (`true`) or its sender is gone (`false`), handing the
/// receiver back for the next wait.
async fn changed<T>(mut rx: watch::Receiver<T>) -> (bool, watch::Receiver<T>) {
    let ok = rx.changed().await.is_ok();
    (ok, rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Wake;

    fn poll_now<T: Clone + Send + Sync + 'static>(c: &mut Changes<T>) -> Poll<Option<T>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        c.poll_change(&mut cx, T::clone)
    }

    #[test]
    fn a_change_is_seen_once_then_the_sender_s_end() {
        let (tx, rx) = watch::channel(1);
        let mut c = Changes::new(rx);
        assert_eq!(poll_now(&mut c), Poll::Pending);
        tx.send(2).unwrap();
        assert_eq!(poll_now(&mut c), Poll::Ready(Some(2)));
        assert_eq!(poll_now(&mut c), Poll::Pending, "the same change is not reported twice");
        drop(tx);
        assert_eq!(poll_now(&mut c), Poll::Ready(None));
    }

    #[test]
    fn a_change_between_completion_and_the_next_poll_is_not_lost() {
        let (tx, rx) = watch::channel(1);
        let mut c = Changes::new(rx);
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        assert_eq!(poll_now(&mut c), Poll::Ready(Some(3)), "the latest value");
        tx.send(4).unwrap();
        assert_eq!(poll_now(&mut c), Poll::Ready(Some(4)));
    }

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_poll_with_another_waker_registers_that_one() {
        let (tx, rx) = watch::channel(1);
        let mut c = Changes::new(rx);
        let (first, second) = (Arc::new(Count(0.into())), Arc::new(Count(0.into())));
        let (w1, w2) = (Waker::from(first.clone()), Waker::from(second.clone()));
        assert_eq!(c.poll_change(&mut Context::from_waker(&w1), |v| *v), Poll::Pending);
        assert_eq!(c.poll_change(&mut Context::from_waker(&w2), |v| *v), Poll::Pending);
        tx.send(2).unwrap();
        assert_eq!(second.0.load(Ordering::SeqCst), 1, "the task's current waker is woken");
        assert_eq!(c.poll_change(&mut Context::from_waker(&w2), |v| *v), Poll::Ready(Some(2)));
    }

    #[test]
    fn after_a_wake_up_the_next_turn_polls_and_registers_again() {
        let (tx, rx) = watch::channel(1);
        let mut c = Changes::new(rx);
        let task = Arc::new(Count(0.into()));
        let w = Waker::from(task.clone());
        assert_eq!(c.poll_change(&mut Context::from_waker(&w), |v| *v), Poll::Pending);
        tx.send(2).unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(c.poll_change(&mut Context::from_waker(&w), |v| *v), Poll::Ready(Some(2)));
        // The next wait is registered by the next turn's poll, so the next change wakes the task.
        assert_eq!(c.poll_change(&mut Context::from_waker(&w), |v| *v), Poll::Pending);
        tx.send(3).unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
        assert_eq!(c.poll_change(&mut Context::from_waker(&w), |v| *v), Poll::Ready(Some(3)));
    }

    #[tokio::test]
    async fn a_registered_wait_wakes_its_task() {
        let (tx, rx) = watch::channel(1);
        let mut c = Changes::new(rx);
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(5).unwrap();
            tx
        });
        let got = poll_fn(|cx| c.poll_change(cx, |v| *v)).await;
        assert_eq!(got, Some(5));
        drop(sender.await.unwrap());
    }
}
