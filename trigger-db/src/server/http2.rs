//! The daemon's HTTP/2 server: accepts connections, serves each with
//! hyper's HTTP/2 connection, and runs every request of a connection
//! (hyper's per-stream futures) inside that connection's own task.
//!
//! Why not `tonic::transport::Server`: tonic spawns each request of a
//! connection as a tokio task of its own. A published trigger then wakes
//! one task per subscriber; each runs once to hand its DATA frame to h2,
//! taking the connection's lock and waking the connection task, and the
//! connection task runs again to write. With 1,000 subscribers that is
//! 1,000 scheduler rounds per trigger, spread over both workers, each
//! contending for the connection's lock with the connection task on the
//! other worker. Here a connection's streams are futures in a
//! [`FuturesUnordered`] polled by the connection's task: a trigger wakes
//! each connection's task, its streams queue their frames one after the
//! other on an uncontended lock, and the connection writes them (at the
//! next poll: [`crate::coalesce`] holds the first flush of a burst for one
//! round).
//!
//! What it keeps of tonic's server: HTTP/2 only (no HTTP/1 or h2c upgrade,
//! as tonic without `accept_http1`), the HTTP/2 settings the daemon passes,
//! each request's connect info ([`Connected`]) in its extensions, the
//! client's `grpc-timeout` honoured (DEADLINE_EXCEEDED when the answer is
//! not ready in time), and graceful shutdown: when `signal` fires, no more
//! connections are accepted, every connection gets a GOAWAY and its
//! requests in flight finish, and `serve` returns when the last connection
//! has closed.
//!
//! What it does not do: TLS, TCP, load shedding or a concurrency limit
//! (the daemon bounds connections at accept, [`crate::peer`], and streams
//! per connection with `max_concurrent_streams`).
//!
//! The cost: a connection's requests share one task, so they run on one
//! worker at a time. The store's work runs on SQLite's own threads; what
//! a request does inside its poll (decoding and checking a large Add, say)
//! delays the other requests of its own connection only. Clients that
//! need parallel work open several connections, as `--bench ingest` does.

use std::{
    convert::Infallible,
    future::Future,
    pin::{Pin, pin},
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::{Stream, StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use http_body_util::Either;
use hyper::{body::Incoming, server::conn::http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::{Status, body::Body, transport::server::Connected};
use tracing::{debug, trace};

/// The HTTP/2 settings of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub initial_connection_window_size: u32,
    pub initial_stream_window_size: u32,
    pub max_concurrent_streams: u32,
    /// Interval of the server's keepalive PINGs.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Settings {
    fn builder(&self, exec: StreamExec) -> http2::Builder<StreamExec> {
        let mut b = http2::Builder::new(exec);
        b.timer(TokioTimer::new())
            .initial_connection_window_size(self.initial_connection_window_size)
            .initial_stream_window_size(self.initial_stream_window_size)
            .max_concurrent_streams(self.max_concurrent_streams)
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout);
        b
    }
}

/// What [`serve`] serves: a service of whole HTTP requests that never
/// fails (errors are gRPC statuses in the response), and its body.
pub trait HttpService:
    tower::Service<
        http::Request<Body>,
        Response = http::Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    type Body: http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `svc` on every connection `incoming` yields until `signal`
/// completes, then shuts the connections down gracefully and returns when
/// they have closed (module docs). Accept errors are logged and skipped.
pub async fn serve<S, I, IO, E>(svc: S, incoming: I, settings: Settings, signal: impl Future)
where
    S: HttpService,
    I: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    E: std::fmt::Display,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    {
        let mut incoming = pin!(incoming);
        let mut signal = pin!(signal);
        loop {
            let io = tokio::select! {
                _ = &mut signal => break,
                io = incoming.next() => match io {
                    Some(Ok(io)) => io,
                    Some(Err(e)) => {
                        debug!(error = %e, "accept failed");
                        continue;
                    }
                    None => break,
                },
            };
            let svc = PerConnection {
                inner: svc.clone(),
                info: io.connect_info(),
            };
            tokio::spawn(serve_connection(io, svc, settings, stop_rx.clone()));
        }
    }
    // Every connection holds a receiver; `closed` completes when the last
    // has gone.
    drop(stop_rx);
    let _ = stop_tx.send(());
    stop_tx.closed().await;
}

/// One connection, in its own task, until it closes; a GOAWAY when `stop`
/// changes.
async fn serve_connection<IO, S, T>(
    io: IO,
    svc: PerConnection<S, T>,
    settings: Settings,
    mut stop: tokio::sync::watch::Receiver<()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
    T: Clone + Send + Sync + 'static,
{
    let exec = StreamExec::default();
    let conn = settings
        .builder(exec.clone())
        .serve_connection(TokioIo::new(io), svc);
    let mut driver = Driver {
        conn: Box::pin(conn),
        streams: FuturesUnordered::new(),
        exec,
    };
    let mut stopping = false;
    loop {
        tokio::select! {
            r = &mut driver => {
                if let Err(e) = r {
                    debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                let _ = changed;
                driver.conn.as_mut().graceful_shutdown();
            }
        }
    }
    trace!("connection closed");
}

/// Where hyper puts a connection's stream futures: a queue the
/// connection's [`Driver`] empties into its [`FuturesUnordered`].
#[derive(Clone, Default)]
struct StreamExec(Arc<Mutex<Spawned>>);

#[derive(Default)]
struct Spawned {
    futures: Vec<BoxFuture<'static, ()>>,
    /// The driver's task, to wake if a future arrives outside its poll.
    waker: Option<Waker>,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.futures.push(Box::pin(fut));
        if let Some(w) = &s.waker {
            w.wake_by_ref();
        }
    }
}

impl StreamExec {
    fn take(&self, waker: &Waker, into: &mut FuturesUnordered<BoxFuture<'static, ()>>) -> bool {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            s.waker = Some(waker.clone());
        }
        let any = !s.futures.is_empty();
        into.extend(s.futures.drain(..));
        any
    }
}

/// A connection and its streams, polled together: the streams first, so
/// that the frames they queue are written by the connection's poll that
/// follows.
struct Driver<C> {
    conn: Pin<Box<C>>,
    streams: FuturesUnordered<BoxFuture<'static, ()>>,
    exec: StreamExec,
}

impl<C: Future> Future for Driver<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        loop {
            // Ready(None) when empty; Pending when all wait (or when
            // FuturesUnordered yields after a long run, having woken us).
            while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {}
            if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if !this.exec.take(cx.waker(), &mut this.streams) {
                return Poll::Pending;
            }
        }
    }
}

/// The service for one connection: each request gets the connection's
/// info in its extensions, and the client's `grpc-timeout`.
#[derive(Clone)]
struct PerConnection<S, T> {
    inner: S,
    info: T,
}

impl<S, T> hyper::service::Service<http::Request<Incoming>> for PerConnection<S, T>
where
    S: HttpService,
    T: Clone + Send + Sync + 'static,
{
    /// The service's body, or a status of our own.
    type Response = http::Response<Either<S::Body, Body>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        let deadline = match grpc_timeout(req.headers()) {
            Ok(d) => d,
            Err(v) => {
                trace!(value = v, "grpc-timeout header not understood; ignored");
                None
            }
        };
        req.extensions_mut().insert(self.info.clone());
        // The services here are always ready (tonic's generated ones
        // answer `poll_ready` at once), so each call gets a clone, as
        // tonic's own server does.
        let fut = self.inner.clone().call(req);
        Box::pin(async move {
            match deadline {
                None => Ok(fut.await?.map(Either::Left)),
                Some(d) => match tokio::time::timeout(d, fut).await {
                    Ok(r) => Ok(r?.map(Either::Left)),
                    Err(_) => Ok(Status::deadline_exceeded("deadline exceeded")
                        .into_http::<Body>()
                        .map(Either::Right)),
                },
            }
        })
    }
}

/// The `grpc-timeout` header (gRPC over HTTP/2: 1-8 ASCII digits and a
/// unit, H M S m u n), `None` if absent; the header's text if malformed.
fn grpc_timeout(headers: &http::HeaderMap) -> Result<Option<Duration>, String> {
    let Some(v) = headers.get("grpc-timeout") else {
        return Ok(None);
    };
    let bad = || String::from_utf8_lossy(v.as_bytes()).into_owned();
    let s = v.to_str().map_err(|_| bad())?;
    if s.len() < 2 || s.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    };
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::net::UnixStream;
    use tonic::transport::server::UdsConnectInfo;

    const SETTINGS: Settings = Settings {
        initial_connection_window_size: 1 << 20,
        initial_stream_window_size: 1 << 16,
        max_concurrent_streams: 200,
        keepalive_interval: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(20),
    };

    type Resp = http::Response<Body>;

    /// Serves `svc` on one end of a socket pair until `stop` fires; the h2
    /// client on the other end.
    async fn start<S>(
        svc: S,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>)
    where
        S: tower::Service<http::Request<Body>, Response = Resp, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let (server, client) = UnixStream::pair().unwrap();
        let incoming = futures::stream::iter([Ok::<_, std::io::Error>(server)])
            .chain(futures::stream::pending());
        let served = tokio::spawn(serve(svc, incoming, SETTINGS, async move {
            let _ = stop.await;
        }));
        let (send, conn) = h2::client::handshake(client).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        (send, served)
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::post(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    }

    /// A body that never ends (a live subscription's, in effect).
    fn endless() -> Body {
        Body::new(http_body_util::StreamBody::new(futures::stream::pending::<
            Result<http_body::Frame<Bytes>, Status>,
        >()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connections_requests_run_in_its_task_not_a_task_each() {
        let svc = tower::service_fn(|_req: http::Request<Body>| async {
            Ok::<_, Infallible>(http::Response::new(endless()))
        });
        let (_stop, stop_rx) = tokio::sync::oneshot::channel();
        let before = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let (mut send, _served) = start(svc, stop_rx).await;
        let mut open = Vec::new();
        for _ in 0..64 {
            send = send.ready().await.unwrap();
            let (resp, _body) = send.send_request(request("/t.S/M"), false).unwrap();
            open.push((resp.await.unwrap(), _body));
        }
        assert!(open.iter().all(|(r, _)| r.status() == 200));
        // The serve loop, the connection's task and the client's
        // connection task; tonic's server would have 64 more.
        let after = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert!(
            after - before <= 3,
            "{} tasks for 64 open requests",
            after - before
        );
    }

    #[tokio::test]
    async fn every_request_carries_its_connections_info() {
        let svc = tower::service_fn(|req: http::Request<Body>| async move {
            let status = match req.extensions().get::<UdsConnectInfo>() {
                Some(i) if i.peer_cred.is_some() => 200,
                _ => 500,
            };
            let mut r = http::Response::new(Body::empty());
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(r)
        });
        let (_stop, stop_rx) = tokio::sync::oneshot::channel();
        let (send, _served) = start(svc, stop_rx).await;
        let mut send = send.ready().await.unwrap();
        let (resp, _) = send.send_request(request("/t.S/M"), true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn a_grpc_timeout_ends_an_unanswered_request_with_deadline_exceeded() {
        let svc = tower::service_fn(|_req: http::Request<Body>| async {
            futures::future::pending::<()>().await;
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let (_stop, stop_rx) = tokio::sync::oneshot::channel();
        let (send, _served) = start(svc, stop_rx).await;
        let mut send = send.ready().await.unwrap();
        let mut req = request("/t.S/M");
        req.headers_mut()
            .insert("grpc-timeout", http::HeaderValue::from_static("50m"));
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("answered within the deadline's reach")
            .unwrap();
        assert_eq!(resp.headers()["grpc-status"], "4");
    }

    #[tokio::test]
    async fn shutdown_lets_requests_in_flight_finish_then_returns() {
        let (finish_tx, finish_rx) = tokio::sync::watch::channel(false);
        let svc = tower::service_fn(move |_req: http::Request<Body>| {
            let mut finish = finish_rx.clone();
            async move {
                // The body ends when the test says so.
                let body = futures::stream::once(async move {
                    let _ = finish.wait_for(|f| *f).await;
                    Ok::<_, Status>(http_body::Frame::data(Bytes::from_static(b"done")))
                });
                Ok::<_, Infallible>(http::Response::new(Body::new(
                    http_body_util::StreamBody::new(body),
                )))
            }
        });
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (send, served) = start(svc, stop_rx).await;
        let mut send = send.ready().await.unwrap();
        let (resp, _) = send.send_request(request("/t.S/M"), true).unwrap();
        let mut body = resp.await.unwrap().into_body();
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!served.is_finished(), "a request is still in flight");
        finish_tx.send(true).unwrap();
        assert_eq!(body.data().await.unwrap().unwrap(), "done");
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("serve returns once the connection has closed")
            .unwrap();
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_malformed_ones_are_named() {
        let t = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", http::HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), Ok(None));
        assert_eq!(t("2H"), Ok(Some(Duration::from_secs(7200))));
        assert_eq!(t("3M"), Ok(Some(Duration::from_secs(180))));
        assert_eq!(t("10S"), Ok(Some(Duration::from_secs(10))));
        assert_eq!(t("250m"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(t("99999999u"), Ok(Some(Duration::from_micros(99_999_999))));
        assert_eq!(t("5n"), Ok(Some(Duration::from_nanos(5))));
        for bad in ["", "m", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(t(bad), Err(bad.to_owned()), "{bad:?}");
        }
    }
}
