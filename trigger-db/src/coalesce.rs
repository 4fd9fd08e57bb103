//! Write coalescing for a server connection: the bytes HTTP/2 writes are
//! kept until the connection has had one more turn of the scheduler, then
//! sent with one `write`.
//!
//! Why: a published trigger wakes every subscriber's stream at once, and
//! the hub wakes them one after the other from the writer's task. A
//! connection's streams run in the connection's task ([`crate::server::http2`]),
//! which polls the streams that are ready, then the connection, which
//! writes. The task starts on the other worker as soon as the first of its
//! streams is woken, while the hub is still waking the rest; so without a
//! pause the connection would write a few frames at a time: more `writev`s,
//! each a syscall, a socket buffer and a wake-up of the reading client.
//! h2 and hyper have no setting for this (they flush whenever the
//! connection has nothing more queued), so [`Coalesce`] makes the first
//! flush of a burst yield instead: it wakes its own task (which puts it at
//! the back of the run queue) and answers `Pending`; by the next poll the
//! other woken streams have queued their frames and one write carries them
//! all. Each burst waits at most one round of the run queue; a second
//! flush always writes. (Measured with 1,000 subscribers over 10
//! connections: without the yield the daemon took about a fifth more CPU
//! per trigger, and the subscribers got it no sooner.)
//!
//! The yield gains nothing on a connection whose only request in flight is
//! one live Subscribe stream (a subscriber process with its own
//! connection): each trigger is one DATA frame, nothing else will queue a
//! frame in that round, and the yield would only cost an extra poll of the
//! connection and a scheduler round of latency per write. So when the
//! server counts the connection's requests in flight ([`InFlight`]), the
//! first flush does not yield while that is all the connection carries.
//! Any other request keeps the yield: a unary call's frames (window
//! updates while its request arrives, then the response's headers, data
//! and trailers) are written together that way; written at once, they
//! took twice the `sendto`s and 8-19 % of `--bench ingest`'s rate with
//! one Add in flight per connection.
//!
//! What it does not do: reorder, drop or hold bytes without a flush pending
//! (data waits only between a write and the flush that follows it, which
//! h2 always issues), or buffer without bound: at [`DEFAULT_LIMIT`] bytes
//! the buffer is written out before it takes more, and a single write that
//! large goes straight to the socket. Reads pass through untouched.
//! Hand-written: tokio's `BufWriter` writes on every flush, which is the
//! behaviour this replaces, and no maintained crate defers a flush by a
//! scheduler round.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before they are written out regardless of flushes: a few
/// hundred small frames, and a bound on what one connection keeps.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// The requests (HTTP/2 streams) a connection has in flight, counted by
/// the server that serves them: live Subscribe streams and the others.
/// Shared with the connection's [`Coalesce`].
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<[AtomicUsize; 2]>);

/// What a request in flight is, for [`InFlight`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Subscribe = 0,
    Other = 1,
}

impl InFlight {
    /// Counts one more request of `kind` until the guard is dropped.
    pub fn enter(&self, kind: Request) -> InFlightGuard {
        self.0[kind as usize].fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.0.clone(), kind)
    }

    /// Requests of `kind` in flight.
    pub fn get(&self, kind: Request) -> usize {
        self.0[kind as usize].load(Ordering::Relaxed)
    }
}

/// One request in flight (see [`InFlight::enter`]).
#[derive(Debug)]
pub struct InFlightGuard(Arc<[AtomicUsize; 2]>, Request);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0[self.1 as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream whose writes are held until a flush, and whose first flush of a
/// burst yields once (module docs).
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    buf: Vec<u8>,
    /// `buf[..written]` is on the socket already (a partial write).
    written: usize,
    limit: usize,
    /// The current burst's flush has yielded once: the next one writes.
    yielded: bool,
    /// When known: yield only while more than one request is in flight.
    in_flight: Option<InFlight>,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Self::with_limit(inner, DEFAULT_LIMIT)
    }

    /// `limit`: bytes held at most (at least 1).
    pub fn with_limit(inner: S, limit: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            written: 0,
            limit: limit.max(1),
            yielded: false,
            in_flight: None,
        }
    }

    /// The first flush of a burst does not yield while `in_flight` counts
    /// one Subscribe stream and nothing else (module docs); without it, it
    /// always yields.
    pub fn with_in_flight(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// Whether other frames may be queued in this round (module docs).
    fn may_burst(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_none_or(|f| f.get(Request::Subscribe) != 1 || f.get(Request::Other) != 0)
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn held(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.held() + data.len() > this.limit {
            ready!(this.poll_drain(cx))?;
            if data.len() >= this.limit {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.held() + total > this.limit {
            ready!(this.poll_drain(cx))?;
            if total >= this.limit {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        // Slices are copied into the buffer: taking them all at once is
        // cheaper than one call per slice.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.held() > 0 {
            if !this.yielded && this.may_burst() {
                // Let the tasks already woken (other streams of this
                // connection) queue their frames first: a self-wake puts
                // this task at the back of the run queue.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_drain(cx))?;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use super::*;

    /// Records each write; `room` bytes accepted before it says Pending.
    #[derive(Default)]
    struct Sink {
        writes: Vec<Vec<u8>>,
        room: Option<usize>,
        flushes: usize,
        shut: bool,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = match self.room {
                Some(0) => return Poll::Pending,
                Some(r) => {
                    let n = r.min(data.len());
                    self.room = Some(r - n);
                    n
                }
                None => data.len(),
            };
            self.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountWake(AtomicUsize);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(c: &mut Coalesce<Sink>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(c).poll_write(cx, data)
    }

    fn flush(c: &mut Coalesce<Sink>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(c).poll_flush(cx)
    }

    #[test]
    fn a_burst_is_written_once_after_the_flush_yielded_one_round() {
        let wakes = Arc::new(CountWake::default());
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Sink::default());
        assert!(matches!(
            write(&mut c, &mut cx, b"frame1"),
            Poll::Ready(Ok(6))
        ));
        // The first flush yields: nothing written, its task woken again.
        assert!(flush(&mut c, &mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert!(c.inner.writes.is_empty());
        // Meanwhile other streams queued theirs.
        let parts: [&[u8]; 2] = [b"frame2", b"frame3"];
        let slices = parts.map(io::IoSlice::new);
        assert!(matches!(
            Pin::new(&mut c).poll_write_vectored(&mut cx, &slices),
            Poll::Ready(Ok(12))
        ));
        // The second flush writes them all in one go and flushes the socket.
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.inner.writes, [b"frame1frame2frame3".to_vec()]);
        assert_eq!(c.inner.flushes, 1);
        // A flush with nothing held does not yield; the next burst does.
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert!(matches!(write(&mut c, &mut cx, b"x"), Poll::Ready(Ok(1))));
        assert!(flush(&mut c, &mut cx).is_pending());
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.inner.writes.len(), 2);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_lone_subscribe_stream_is_written_at_once_anything_more_yields() {
        let wakes = Arc::new(CountWake::default());
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let in_flight = InFlight::default();
        let mut c = Coalesce::new(Sink::default()).with_in_flight(in_flight.clone());
        let yields = |c: &mut Coalesce<Sink>, cx: &mut Context<'_>| {
            assert!(matches!(write(c, cx, b"x"), Poll::Ready(Ok(1))));
            let yielded = flush(c, cx).is_pending();
            if yielded {
                assert!(matches!(flush(c, cx), Poll::Ready(Ok(()))));
            }
            yielded
        };
        let sub = in_flight.enter(Request::Subscribe);
        assert!(!yields(&mut c, &mut cx));
        assert_eq!(c.inner.writes, [b"x".to_vec()]);
        let unary = in_flight.enter(Request::Other);
        assert!(yields(&mut c, &mut cx));
        drop(unary);
        let sub2 = in_flight.enter(Request::Subscribe);
        assert!(yields(&mut c, &mut cx));
        drop((sub, sub2));
        // A unary call alone keeps the yield (its frames go out together).
        let _unary = in_flight.enter(Request::Other);
        assert!(yields(&mut c, &mut cx));
        assert_eq!(c.inner.writes.len(), 4);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_buffer_is_bounded_and_large_writes_go_straight_through_in_order() {
        let waker = Arc::new(CountWake::default()).into();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::with_limit(Sink::default(), 8);
        assert!(matches!(
            write(&mut c, &mut cx, b"abcde"),
            Poll::Ready(Ok(5))
        ));
        // Would exceed the limit: what is held goes out first, then this
        // (small) write is held.
        assert!(matches!(
            write(&mut c, &mut cx, b"fghi"),
            Poll::Ready(Ok(4))
        ));
        assert_eq!(c.inner.writes, [b"abcde".to_vec()]);
        // A write of the limit or more is not copied.
        let big = [7u8; 20];
        assert!(matches!(write(&mut c, &mut cx, &big), Poll::Ready(Ok(20))));
        assert_eq!(
            c.inner.writes,
            [b"abcde".to_vec(), b"fghi".to_vec(), big.to_vec()]
        );
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn a_full_socket_keeps_the_rest_until_it_has_room_and_shutdown_drains() {
        let waker = Arc::new(CountWake::default()).into();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Sink {
            room: Some(3),
            ..Default::default()
        });
        assert!(matches!(
            write(&mut c, &mut cx, b"abcdef"),
            Poll::Ready(Ok(6))
        ));
        assert!(flush(&mut c, &mut cx).is_pending()); // the yield
        assert!(flush(&mut c, &mut cx).is_pending()); // the socket is full
        assert_eq!(c.inner.writes, [b"abc".to_vec()]);
        assert_eq!(c.held(), 3);
        c.inner.room = None;
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.inner.writes, [b"abc".to_vec(), b"def".to_vec()]);
        assert!(c.inner.shut);
    }
}
