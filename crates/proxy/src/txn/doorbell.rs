//! Skipping the poll of a socket whose wait is still registered.
//!
//! A client's event loop waits on two sockets (the client's, the server's) and polls both on
//! every turn, but in a transaction only one of them has something new per turn: the other's
//! poll finds it not ready and registers the same waker again (tokio's readiness check and its
//! waiter lock, about a hundred instructions, three times per transaction). A registration made
//! by a poll that returned `Pending` stays in place until the socket becomes ready, and then
//! tokio wakes it; so the loop polls a socket through a waker of its own (a [`Doorbell`]) that
//! notes that use, and skips the poll while the registration stands: made through this doorbell,
//! not rung since, for the same task, and the last socket polled through it.
//!
//! Invariant: a skipped poll could only have returned `Pending` with the same registration. A
//! wake-up through the doorbell (the socket became ready or closed, or tokio's cooperative
//! budget deferred the poll) rings it, and the next turn polls. One doorbell serves the client's
//! servers one after the other, so a registration counts only for the socket polled last
//! (sockets are told apart by a number their owner never reuses): a poll of another socket
//! unrings the doorbell, which must not hide a wake-up meant for the first. A stale registration
//! (a server given back to the pool still holds a clone of the waker) can only ring it: a
//! spurious poll, never a skipped one. Nothing else may poll a socket's reads while its
//! registration counts as standing (its owner's loop is the only reader).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A waker that notes that it was used, then wakes the task (a socket's doorbell, and the wait
/// of a [`super::changes::Changes`]).
pub(super) struct Ring {
    pub(super) rung: AtomicBool,
    pub(super) task: Waker,
}

impl Ring {
    /// Unrung, for the task woken through `task`.
    pub(super) fn new(task: &Waker) -> Ring {
        Ring { rung: AtomicBool::new(false), task: task.clone() }
    }
}

impl Wake for Ring {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.rung.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// One socket direction's registration, as far as the loop knows it.
pub(super) struct Doorbell {
    /// The ring and the waker made of it once (a poll that registers clones the waker: one
    /// reference count).
    ring: Option<(Arc<Ring>, Waker)>,
    /// The socket whose last poll through the waker returned `Pending`: its registration stands
    /// unless rung.
    standing: Option<u64>,
}

impl Doorbell {
    pub(super) const fn new() -> Doorbell {
        Doorbell { ring: None, standing: None }
    }

    /// Polls socket `socket` with `poll` through this doorbell, or returns `Pending` without
    /// polling while the registration of its last poll stands for the task behind `cx`.
    #[inline]
    pub(super) fn poll<T>(
        &mut self,
        socket: u64,
        cx: &Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        match &self.ring {
            Some((r, _)) if r.task.will_wake(cx.waker()) => {
                if self.standing == Some(socket) && !r.rung.load(Ordering::Acquire) {
                    return Poll::Pending;
                }
            }
            // Another task's: made anew for this one.
            _ => self.ring = None,
        }
        let (ring, waker) = self.ring.get_or_insert_with(|| {
            let ring = Arc::new(Ring::new(cx.waker()));
            (ring.clone(), Waker::from(ring))
        });
        // Unrung before the poll: a wake-up during the poll rings it again.
        ring.rung.store(false, Ordering::Release);
        let polled = poll(&mut Context::from_waker(waker));
        self.standing = polled.is_pending().then_some(socket);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A waker that counts its wake-ups (the task's).
    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_socket_is_polled_again_only_once_its_registration_was_used() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut near = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        let count = Arc::new(Count(Default::default()));
        let task = Waker::from(count.clone());
        let cx = Context::from_waker(&task);
        let mut bell = Doorbell::new();
        let mut buf = bytes::BytesMut::with_capacity(64);
        let mut polls = 0;
        let mut read = |bell: &mut Doorbell, socket: u64, buf: &mut bytes::BytesMut, cx: &Context<'_>| {
            bell.poll(socket, cx, |bcx| {
                polls += 1;
                pin!(near.read_buf(buf)).poll(bcx).map(|r| r.unwrap())
            })
        };
        assert_eq!(read(&mut bell, 1, &mut buf, &cx), Poll::Pending);
        assert_eq!(read(&mut bell, 1, &mut buf, &cx), Poll::Pending);
        far.write_all(b"hello").await.unwrap();
        // The runtime's driver finds the socket readable and rings the doorbell (then the task).
        while count.0.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(read(&mut bell, 1, &mut buf, &cx), Poll::Ready(5), "rung: polled");
        assert_eq!(read(&mut bell, 1, &mut buf, &cx), Poll::Pending, "after data, no registration: polled");
        assert_eq!(read(&mut bell, 2, &mut buf, &cx), Poll::Pending, "another socket: polled");
        assert_eq!(read(&mut bell, 1, &mut buf, &cx), Poll::Pending, "the first again: polled");
        let other = Waker::from(Arc::new(Count(Default::default())));
        assert_eq!(read(&mut bell, 1, &mut buf, &Context::from_waker(&other)), Poll::Pending, "another task: polled");
        assert_eq!(polls, 6, "one poll skipped: the second, while its registration stood");
    }
}
