//! Subscribe, served with triggers encoded once: the hub encodes each
//! published trigger once, as the gRPC message that carries its
//! `SubscribeResponse` (the 5-byte length prefix included:
//! [`crate::hub::Delivery`]), and every stream sends those same bytes as an
//! HTTP/2 DATA frame. The generated service (and tonic's `Grpc`) would
//! encode and copy a message per stream, so the daemon's dispatcher
//! ([`super::dispatch::Dispatch`]) hands the Subscribe path to
//! [`serve_subscribe`]: it decodes the request with tonic's `Streaming`
//! (size limit and errors as tonic has them) and answers with [`GrpcBody`]
//! (the frames as they are, then the status as trailers); every other path
//! goes to the generated service. The live part of a stream ([`Live`]) polls the
//! subscriber's queue directly: it runs once per subscriber and trigger,
//! the replay and snapshot before it once per stream.
//!
//! Not supported on this path: response compression (the daemon enables
//! none) and compressed requests (refused, as tonic refuses them without
//! an encoding).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use tonic::{
    Request, Response, Status,
    body::Body,
    codec::{DecodeBuf, Decoder, Streaming},
};
use tracing::{debug, info};
use trigger_proto::v1 as pb;

use super::{REPLAY_PAGE, Service, check_filter, dispatch::ResponseBody, store_status};
use crate::{
    hub::Subscription,
    model::{Timestamp, Trigger, ValidationError},
};

/// A stream of `SubscribeResponse`s, each encoded as a gRPC message
/// (length prefix and body).
pub type FrameStream = Pin<Box<dyn Frames>>;

/// A stream of encoded `SubscribeResponse`s that may know, without being
/// polled, whether another message is ready.
pub trait Frames: futures::Stream<Item = Result<Bytes, Status>> + Send {
    /// `Some(false)`: no message is ready now (polling would register the
    /// waker and say `Pending`); `Some(true)` or `None` (not known): poll
    /// to find out.
    fn ready_hint(&self) -> Option<bool> {
        None
    }
}

/// Any frame stream, with no hint.
struct Unhinted<S>(S);

impl<S: futures::Stream<Item = Result<Bytes, Status>> + Send + Unpin> futures::Stream
    for Unhinted<S>
{
    type Item = Result<Bytes, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl<S: futures::Stream<Item = Result<Bytes, Status>> + Send + Unpin> Frames for Unhinted<S> {}

/// `SubscribeResponse { trigger }`, encoded as a gRPC message.
pub fn trigger_frame(t: &Trigger) -> Bytes {
    frame(pb::SubscribeResponse {
        item: Some(pb::subscribe_response::Item::Trigger(t.to_wire())),
    })
}

/// Length of the gRPC message prefix: compressed flag, big-endian length.
pub const GRPC_PREFIX: usize = 5;

/// `m` as one uncompressed gRPC message: the prefix, then the protobuf.
fn frame(m: pb::SubscribeResponse) -> Bytes {
    let len = m.encoded_len();
    let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len);
    buf.put_u8(0);
    // A SubscribeResponse is far below 4 GiB (one trigger, or a notice).
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    m.encode_raw(&mut buf);
    buf.freeze()
}

impl Service {
    /// Subscribe: replay, snapshot, then live, as encoded responses.
    pub async fn subscribe_frames(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<FrameStream>, Status> {
        let peer = Self::peer(&req).map(|p| p.to_string()).unwrap_or_default();
        let body = req.into_inner();
        let filter = check_filter(body.filter.as_ref()).map_err(|e| self.reject(e))?;
        if self.hub.subscribers() >= self.max_subscribers {
            return Err(Status::resource_exhausted(format!(
                "{} subscribers already; the limit is {}",
                self.max_subscribers, self.max_subscribers
            )));
        }
        // Register first: everything after `start_after` is queued for us.
        let mut sub = self
            .hub
            .subscribe(filter.clone())
            .ok_or_else(|| Status::unavailable("trigger-db is shutting down"))?;
        let start_after = sub.start_after;
        if let Some(r) = body.resume_after_id
            && r > start_after
        {
            return Err(self.reject(ValidationError::new(
                "resume_after_id",
                format!("{r} is beyond the last id {start_after}"),
            )));
        }
        debug!(peer, ?filter, resume = ?body.resume_after_id, snapshot = body.snapshot, start_after, "subscribe");
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        let gap_notices = self.hub.clone();
        let inflight = std::mem::take(&mut sub.inflight);
        let links = sub.links.clone();
        let live = Live {
            sub: Some(sub),
            peer: peer.clone(),
        };
        if body.resume_after_id.is_none() && !body.snapshot {
            return Ok(Response::new(Box::pin(live)));
        }
        // Set when the replay and snapshot are through: only then does the
        // live part follow (a replay that ends the stream early, with a gap
        // notice or on shutdown, leaves it unset).
        let prefix_done = Arc::new(AtomicBool::new(false));
        let done = prefix_done.clone();
        let prefix = async_stream::try_stream! {
            use pb::subscribe_response::Item;
            let gap_notices = &gap_notices.stats.gap_notices;
            // 1. Replay what the subscriber missed, up to where live starts:
            // from the store up to what it had committed when we registered,
            // then the triggers published but not committed yet.
            // Rows after its id that are gone already (retention, Delete,
            // Flush) cannot be replayed: a gap notice names them and where
            // to resume, and the stream ends, as after an overflow.
            if let Some(mut after) = body.resume_after_id {
                let stored_upto = inflight.first().map_or(start_after, |t| t.id - 1);
                while after < stored_upto {
                    if shutdown.is_cancelled() { return; }
                    let (first, page) = store.replay_page(after, Some(stored_upto), &filter, REPLAY_PAGE).await.map_err(store_status)?;
                    let oldest = first.unwrap_or(stored_upto + 1);
                    if after + 1 < oldest {
                        info!(peer, resume_after = after, oldest, "resume from before the oldest stored trigger; gap notice sent");
                        gap_notices.fetch_add(1, Ordering::Relaxed);
                        yield frame(pb::SubscribeResponse { item: Some(Item::Gap(pb::GapNotice {
                            resume_after_id: oldest - 1,
                            first_missed_id: after + 1,
                        }))});
                        return;
                    }
                    let Some(last) = page.last() else { break };
                    after = last.id;
                    for t in page {
                        yield frame(pb::SubscribeResponse { item: Some(Item::Trigger(t.to_wire()))});
                    }
                }
                for t in inflight {
                    if t.id > after && filter.matches(&t) {
                        yield trigger_frame(&t);
                    }
                }
            }
            // 2. The state as of `start_after`.
            if body.snapshot {
                let now = Timestamp::now();
                for t in links.snapshot_triggers(now) {
                    if filter.matches(&t) {
                        yield frame(pb::SubscribeResponse { item: Some(Item::Trigger(t.to_wire()))});
                    }
                }
                yield frame(pb::SubscribeResponse { item: Some(Item::SnapshotComplete(pb::SnapshotComplete { last_id: start_after }))});
            }
            done.store(true, Ordering::Release);
        };
        Ok(Response::new(Box::pin(SubscribeStream {
            prefix: Some(Box::pin(Unhinted(Box::pin(prefix)))),
            prefix_done,
            live: Some(live),
        })))
    }
}

/// The live part (step 3): the hub's shared frames straight from the
/// subscriber's queue (each poll is one queue receive and a reference
/// count; no generator in between, since this runs once per subscriber and
/// trigger), until the hub closes or the queue overflowed, then the gap
/// notice if it did.
struct Live {
    sub: Option<Subscription>,
    peer: String,
}

impl futures::Stream for Live {
    type Item = Result<Bytes, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(sub) = self.sub.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(d) = ready!(sub.rx.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(d.frame.clone())));
        }
        // Closed and drained: the stream ends here, with a gap notice if the
        // queue overflowed.
        let first_missed = sub.first_missed();
        self.sub = None;
        Poll::Ready(first_missed.map(|first_missed| {
            info!(
                peer = self.peer,
                first_missed, "subscriber fell behind; gap notice sent"
            );
            Ok(frame(pb::SubscribeResponse {
                item: Some(pb::subscribe_response::Item::Gap(pb::GapNotice {
                    resume_after_id: first_missed - 1,
                    first_missed_id: first_missed,
                })),
            }))
        }))
    }
}

impl Frames for Live {
    /// Whether the queue holds a trigger (a closed, drained queue: poll for
    /// the end or the gap notice).
    fn ready_hint(&self) -> Option<bool> {
        self.sub.as_ref().and_then(|s| s.rx.has_item())
    }
}

/// Replay and snapshot (when asked for), then [`Live`].
struct SubscribeStream {
    prefix: Option<FrameStream>,
    prefix_done: Arc<AtomicBool>,
    live: Option<Live>,
}

impl futures::Stream for SubscribeStream {
    type Item = Result<Bytes, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(prefix) = self.prefix.as_mut() {
            if let Some(item) = ready!(prefix.as_mut().poll_next(cx)) {
                return Poll::Ready(Some(item));
            }
            self.prefix = None;
            if !self.prefix_done.load(Ordering::Acquire) {
                // Ended early: no live part (the queue is dropped with it).
                self.live = None;
            }
        }
        match self.live.as_mut() {
            Some(live) => Pin::new(live).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

impl Frames for SubscribeStream {
    fn ready_hint(&self) -> Option<bool> {
        match (&self.prefix, &self.live) {
            (None, Some(live)) => live.ready_hint(),
            _ => None,
        }
    }
}

/// Decodes `SubscribeRequest`s (for tonic's `Streaming`).
#[derive(Debug, Clone, Copy, Default)]
struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = pb::SubscribeRequest;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::SubscribeRequest>, Status> {
        pb::SubscribeRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("SubscribeRequest: {e}")))
    }
}

/// Most bytes of messages one DATA frame carries when several are ready
/// (tonic's yield threshold).
const BATCH_BYTES: usize = 32 * 1024;

/// A gRPC response body: the stream's messages (already framed) as DATA,
/// then the status as trailers: OK when the stream ends, the error when it
/// yields one (the stream is not polled after that). Messages that are
/// ready together go out in one DATA frame, as tonic sends them: a peer
/// that reads slowly then holds a few large frames, not thousands of small
/// ones (h2 counts the overhead of small unread DATA frames against a
/// budget and closes the connection when it is exhausted). A message that
/// is ready alone, the usual case live, is sent as it is, without a copy.
pub struct GrpcBody {
    frames: Option<FrameStream>,
    /// How the stream ended, when that was found while batching: the
    /// trailers still to send.
    end: Option<Status>,
}

impl std::fmt::Debug for GrpcBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcBody")
            .field("open", &self.frames.is_some())
            .field("end", &self.end)
            .finish()
    }
}

impl GrpcBody {
    fn new(frames: FrameStream) -> Self {
        Self {
            frames: Some(frames),
            end: None,
        }
    }

    fn finish(&mut self, status: &Status) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        self.frames = None;
        self.end = None;
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(status)))))
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if let Err(e) = status.add_header(&mut h) {
        // Only an unencodable message can fail: send the code alone.
        h.insert("grpc-status", http::HeaderValue::from(e.code() as i32));
    }
    h
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(end) = this.end.take() {
            return this.finish(&end);
        }
        let Some(frames) = this.frames.as_mut() else {
            return Poll::Ready(None);
        };
        let first = match ready!(frames.as_mut().poll_next(cx)) {
            Some(Ok(data)) => data,
            Some(Err(status)) => return this.finish(&status),
            None => return this.finish(&Status::ok("")),
        };
        let mut batch: Option<BytesMut> = None;
        let mut end = None;
        // Live, the usual case is one message at a time: then the queue says
        // so, and is not polled just to find it empty.
        while batch.as_ref().map_or(first.len(), |b| b.len()) < BATCH_BYTES
            && frames.ready_hint() != Some(false)
        {
            match frames.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(data))) => {
                    let b = batch.get_or_insert_with(|| {
                        let mut b = BytesMut::with_capacity(BATCH_BYTES.min(4 * first.len()));
                        b.extend_from_slice(&first);
                        b
                    });
                    b.extend_from_slice(&data);
                }
                Poll::Ready(Some(Err(status))) => {
                    end = Some(status);
                    break;
                }
                Poll::Ready(None) => {
                    end = Some(Status::ok(""));
                    break;
                }
            }
        }
        this.end = end;
        let data = batch.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_none()
    }
}

/// Serves one Subscribe call: decode the request, run it, and answer with
/// its frames, or with the error as a trailers-only response.
pub(super) async fn serve_subscribe(
    service: Arc<Service>,
    req: http::Request<Body>,
    max_request: usize,
) -> http::Response<ResponseBody> {
    let error = |status: Status| status.into_http::<Body>().map(ResponseBody::other);
    let (parts, body) = req.into_parts();
    let mut requests = Streaming::new_request(RequestDecoder, body, None, Some(max_request));
    let message = match requests.message().await {
        Ok(Some(m)) => m,
        Ok(None) => return error(Status::internal("Missing request message.")),
        Err(status) => return error(status),
    };
    let req = Request::from_http(http::Request::from_parts(parts, message));
    match service.subscribe_frames(req).await {
        Ok(resp) => {
            let (metadata, frames, _) = resp.into_parts();
            let mut resp = http::Response::new(ResponseBody::frames(GrpcBody::new(frames)));
            *resp.headers_mut() = metadata.into_headers();
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            resp
        }
        Err(status) => error(status),
    }
}

pub(super) const SUBSCRIBE_PATH: &str = "/trigger.v1.TriggerService/Subscribe";

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use http_body::Body as _;

    use super::*;

    fn poll(body: &mut GrpcBody) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        Pin::new(body).poll_frame(&mut cx)
    }

    fn data(p: Poll<Option<Result<http_body::Frame<Bytes>, Status>>>) -> Bytes {
        match p {
            Poll::Ready(Some(Ok(f))) => f.into_data().expect("a DATA frame"),
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn trailers(p: Poll<Option<Result<http_body::Frame<Bytes>, Status>>>) -> http::HeaderMap {
        match p {
            Poll::Ready(Some(Ok(f))) => f.into_trailers().expect("trailers"),
            other => panic!("expected trailers, got {other:?}"),
        }
    }

    #[test]
    fn a_message_ready_alone_goes_out_as_it_is_then_nothing_until_the_next() {
        let a = trigger_frame(&Trigger::new(
            crate::model::Source::Client,
            crate::model::TriggerType::LinkUp,
        ));
        let frames = futures::stream::iter([Ok(a.clone())]).chain(futures::stream::pending());
        let mut body = GrpcBody::new(Box::pin(Unhinted(frames)));
        let sent = data(poll(&mut body));
        assert_eq!(sent.as_ptr(), a.as_ptr(), "the shared bytes, not a copy");
        assert!(poll(&mut body).is_pending());
        assert!(!body.is_end_stream());
    }

    #[test]
    fn messages_ready_together_share_a_data_frame_and_an_error_ends_with_its_status() {
        let (a, b) = (
            frame(pb::SubscribeResponse::default()),
            frame(pb::SubscribeResponse {
                item: Some(pb::subscribe_response::Item::SnapshotComplete(
                    pb::SnapshotComplete { last_id: 7 },
                )),
            }),
        );
        let frames = futures::stream::iter([
            Ok(a.clone()),
            Ok(b.clone()),
            Err(Status::unavailable("store gone")),
        ]);
        let mut body = GrpcBody::new(Box::pin(Unhinted(frames)));
        assert_eq!(data(poll(&mut body)), [a, b].concat());
        let t = trailers(poll(&mut body));
        assert_eq!(
            t["grpc-status"],
            (tonic::Code::Unavailable as i32).to_string()
        );
        // Percent-encoded, as gRPC sends it.
        assert_eq!(t["grpc-message"], "store%20gone");
        assert!(body.is_end_stream());
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn live_hints_whether_its_queue_holds_a_trigger_and_batches_what_it_holds() {
        use crate::{hub::Hub, model::Filter};
        let hub = Hub::new(0, 16, 16);
        let live = Live {
            sub: hub.subscribe(Filter::default()),
            peer: String::new(),
        };
        assert_eq!(live.ready_hint(), Some(false));
        let mut body = GrpcBody::new(Box::pin(live));
        assert!(poll(&mut body).is_pending());
        let trig = |id| {
            let mut t = Trigger::new(
                crate::model::Source::Client,
                crate::model::TriggerType::LinkUp,
            );
            t.id = id;
            Arc::new(t)
        };
        hub.publish(&[trig(1)], None);
        let one = data(poll(&mut body));
        assert_eq!(one.len(), trigger_frame(&trig(1)).len());
        hub.publish(&[trig(2), trig(3)], None);
        let two = data(poll(&mut body));
        assert_eq!(two.len(), 2 * one.len(), "queued together, one DATA frame");
        // Closed: the hint says poll, and the stream ends without a gap.
        hub.close();
        assert_eq!(trailers(poll(&mut body))["grpc-status"], "0");
    }

    #[test]
    fn the_end_of_the_stream_is_status_ok_and_frames_carry_the_grpc_prefix() {
        let a = frame(pb::SubscribeResponse::default());
        assert_eq!(&a[..], [0, 0, 0, 0, 0], "uncompressed, empty message");
        let mut body = GrpcBody::new(Box::pin(Unhinted(futures::stream::iter([Ok(a)]))));
        assert_eq!(data(poll(&mut body)).len(), GRPC_PREFIX);
        assert_eq!(trailers(poll(&mut body))["grpc-status"], "0");
    }
}
