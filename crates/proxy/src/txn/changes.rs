//! A long-lived wait for the next value of a watch channel (the proxy's lifecycle, the routes)
//! that a client's event loop can poll on every turn at the cost of one atomic load.
//!
//! Every turn of the loop polls both waits, and polling a registered `changed()` takes the
//! channel's waiter lock: two locks per turn, four turns per transaction, on channels that every
//! client shares, for values that change a few times a day. [`Changes::poll_change`] answers
//! `Pending` from the channel's version number alone while nothing moved.
//!
//! Invariant: no change is missed. The wait is polled at least once after it is made, so its
//! waker (the task's) is registered with the channel; from then on the channel wakes the task on
//! a change, and the probe (a second receiver of the same channel, marked seen whenever the wait
//! completes) says the wait is worth polling again. The wait itself decides what is new, so a
//! change that lands between its completion and the probe's mark is found by the next wait's
//! first poll. The caller polls it from one task only and keeps its select branch enabled: a
//! branch disabled for a whole `select!` would not be polled when the channel wakes the task.
//! The wait runs outside tokio's cooperative budget ([`tokio::task::unconstrained`]): a
//! budgeted `changed()` polled when the task's budget is spent answers `Pending` without
//! registering anything, and this wait would then never be polled again (a stop or a route
//! change missed for good by a busy client).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;

/// The boxed wait: made once per change, which is rare.
type Wait<T> = Pin<Box<dyn Future<Output = (bool, watch::Receiver<T>)> + Send>>;

/// A wait for the next change of one watch channel.
pub(crate) struct Changes<T> {
    wait: Wait<T>,
    probe: watch::Receiver<T>,
    /// The current wait has been polled (its waker is with the channel).
    registered: bool,
}

impl<T: Send + Sync + 'static> Changes<T> {
    /// Waits for changes after the value `rx` has seen.
    pub(crate) fn new(rx: watch::Receiver<T>) -> Changes<T> {
        let mut probe = rx.clone();
        probe.mark_unchanged();
        Changes { wait: Box::pin(tokio::task::unconstrained(changed(rx))), probe, registered: false }
    }

    /// False only when a poll could not complete: the wait is registered and the channel has
    /// not moved on since.
    fn worth_polling(&self) -> bool {
        !self.registered || self.probe.has_changed().unwrap_or(true)
    }

    /// `Ready(Some(read(value)))` once the channel changed, `Ready(None)` once its sender is
    /// gone; then waits for the next change. Always from the same task (see the invariant).
    pub(crate) fn poll_change<R>(&mut self, cx: &mut Context<'_>, read: impl FnOnce(&T) -> R) -> Poll<Option<R>> {
        if !self.worth_polling() {
            // Registered with this task's waker by an earlier poll, and nothing changed since.
            return Poll::Pending;
        }
        let (ok, mut rx) = match self.wait.as_mut().poll(cx) {
            Poll::Pending => {
                self.registered = true;
                return Poll::Pending;
            }
            Poll::Ready(done) => done,
        };
        let out = ok.then(|| read(&rx.borrow_and_update()));
        self.probe.mark_unchanged();
        self.wait = Box::pin(tokio::task::unconstrained(changed(rx)));
        self.registered = false;
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
    use std::time::Duration;

    fn poll_now<T: Clone + Send + Sync + 'static>(c: &mut Changes<T>) -> Poll<Option<T>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        c.poll_change(&mut cx, T::clone)
    }

    #[test]
    fn a_change_is_seen_once_and_the_wait_rests_in_between() {
        let (tx, rx) = watch::channel(1);
        let mut c = Changes::new(rx);
        assert!(c.worth_polling(), "a new wait is polled once, to register");
        assert_eq!(poll_now(&mut c), Poll::Pending);
        assert!(!c.worth_polling(), "nothing changed since");
        tx.send(2).unwrap();
        assert!(c.worth_polling());
        assert_eq!(poll_now(&mut c), Poll::Ready(Some(2)));
        assert!(c.worth_polling(), "the next wait registers first");
        assert_eq!(poll_now(&mut c), Poll::Pending, "the same change is not reported twice");
        assert!(!c.worth_polling());
        drop(tx);
        assert!(c.worth_polling(), "a closed channel is worth a poll");
        assert_eq!(poll_now(&mut c), Poll::Ready(None));
    }

    #[test]
    fn a_change_between_completion_and_the_next_wait_is_not_lost() {
        let (tx, rx) = watch::channel(1);
        let mut c = Changes::new(rx);
        tx.send(2).unwrap();
        assert_eq!(poll_now(&mut c), Poll::Ready(Some(2)));
        // The value changes again before the probe is marked seen (another thread sends while
        // the loop handles the first change): the probe then says nothing changed, and the next
        // wait's first poll still finds it.
        tx.send(3).unwrap();
        c.probe.mark_unchanged();
        assert!(c.worth_polling(), "a new wait is always polled once");
        assert_eq!(poll_now(&mut c), Poll::Ready(Some(3)));
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

    #[tokio::test(start_paused = true)]
    async fn a_wait_first_polled_with_the_task_s_budget_spent_still_wakes_it() {
        let (tx, rx) = watch::channel(1);
        let mut c = Changes::new(rx);
        // A busy client: its task spends its whole budget on I/O before it polls the wait.
        let (qtx, mut qrx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..1000 {
            qtx.send(i).unwrap();
        }
        let first = poll_fn(|cx| {
            while tokio::task::coop::has_budget_remaining() {
                let _ = qrx.poll_recv(cx);
            }
            Poll::Ready(c.poll_change(cx, |v| *v))
        })
        .await;
        assert_eq!(first, Poll::Pending);
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(7).unwrap();
            tx
        });
        // With time paused, a lost wake-up lets the clock run to the bound at once.
        let got = tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(3600)) => panic!("the change never woke the task"),
            got = poll_fn(|cx| c.poll_change(cx, |v| *v)) => got,
        };
        assert_eq!(got, Some(7));
        drop(sender.await.unwrap());
    }
}
