//! A long-lived wait for the next value of a watch channel (the proxy's lifecycle, the routes)
//! that a client's event loop polls on every turn.
//!
//! The wait is made once per change rather than once per turn (a new `changed()` per turn
//! would register and unregister a waiter on channels that every client shares, for every
//! message); each turn polls the same registered wait, which refreshes its waker.
//!
//! Invariant: no change is missed. The wait decides what is new, so a change that lands between
//! its completion and the next wait is found by that wait's first poll. The caller polls it from
//! one task only and keeps its select branch enabled: a branch disabled for a whole `select!`
//! would not be polled when the channel wakes the task.
//!
//! Why every turn polls the wait, even when the channel's version says nothing moved: a sender
//! wakes the waiters of its 8 `Notify` shards one shard after the other, so a wait that
//! registers while a sender is still going through the shards (the client took the change from
//! an early shard and made its next wait in a later one) is woken once more for that same
//! change. That wake-up uses the wait's registration; only a poll makes a new one. An earlier
//! version skipped the poll when the version had not moved, and then missed the next change for
//! good (a pooled client not told of the proxy's stop, one run in ten on a loaded machine; a
//! stress run of two quick changes missed 23 in 1,000 that way, none with the poll).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;

/// The boxed wait: made once per change, which is rare.
type Wait<T> = Pin<Box<dyn Future<Output = (bool, watch::Receiver<T>)> + Send>>;

/// A wait for the next change of one watch channel.
pub(crate) struct Changes<T> {
    wait: Wait<T>,
}

impl<T: Send + Sync + 'static> Changes<T> {
    /// Waits for changes after the value `rx` has seen.
    pub(crate) fn new(rx: watch::Receiver<T>) -> Changes<T> {
        Changes { wait: Box::pin(changed(rx)) }
    }

    /// `Ready(Some(read(value)))` once the channel changed, `Ready(None)` once its sender is
    /// gone; then waits for the next change. Always from the same task (see the invariant).
    pub(crate) fn poll_change<R>(&mut self, cx: &mut Context<'_>, read: impl FnOnce(&T) -> R) -> Poll<Option<R>> {
        let Poll::Ready((ok, mut rx)) = self.wait.as_mut().poll(cx) else { return Poll::Pending };
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
