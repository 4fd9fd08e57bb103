//! Subscribe, served with triggers encoded once: the hub encodes each
//! published trigger as its `SubscribeResponse` once ([`crate::hub::Delivery`])
//! and every stream sends those same bytes. The generated service would
//! encode a message per stream, so [`Router`] takes the Subscribe path
//! itself, with [`FrameCodec`] (a codec whose items are already encoded),
//! and hands every other path to the generated service. The live part of a
//! stream ([`Live`]) polls the subscriber's queue directly: it runs once per
//! subscriber and trigger, the replay and snapshot before it once per
//! stream.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::{BufMut as _, Bytes};
use prost::Message as _;
use tonic::{
    Request, Response, Status,
    body::Body,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    server::{Grpc, NamedService, ServerStreamingService},
};
use tracing::{debug, info};
use trigger_proto::v1::{self as pb, trigger_service_server::TriggerServiceServer};

use super::{REPLAY_PAGE, Service, check_filter, store_status};
use crate::{
    hub::Subscription,
    model::{Timestamp, Trigger, ValidationError},
};

/// A stream of encoded `SubscribeResponse`s.
pub type FrameStream = Pin<Box<dyn futures::Stream<Item = Result<Bytes, Status>> + Send>>;

/// `SubscribeResponse { trigger }`, encoded.
pub fn trigger_frame(t: &Trigger) -> Bytes {
    frame(pb::SubscribeResponse {
        item: Some(pb::subscribe_response::Item::Trigger(t.to_wire())),
    })
}

fn frame(m: pb::SubscribeResponse) -> Bytes {
    Bytes::from(m.encode_to_vec())
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
            prefix: Some(Box::pin(prefix)),
            prefix_done,
            live: Some(live),
        })))
    }
}

/// The live part (step 3): the hub's shared frames straight from the subscriber's queue
/// (each poll is one queue receive and a reference count; no generator in
/// between, since this runs once per subscriber and trigger), until the hub
/// closes or the queue overflowed, then the gap notice if it did.
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

/// Encodes items that are encoded already (a copy into the stream's
/// buffer); decodes `SubscribeRequest`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Bytes;
    type Decode = pb::SubscribeRequest;
    type Encoder = FrameCodec;
    type Decoder = FrameCodec;
    fn encoder(&mut self) -> FrameCodec {
        FrameCodec
    }
    fn decoder(&mut self) -> FrameCodec {
        FrameCodec
    }
}

impl Encoder for FrameCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = pb::SubscribeRequest;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::SubscribeRequest>, Status> {
        pb::SubscribeRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("SubscribeRequest: {e}")))
    }
}

struct SubscribeSvc(Arc<Service>);

impl ServerStreamingService<pb::SubscribeRequest> for SubscribeSvc {
    type Response = Bytes;
    type ResponseStream = FrameStream;
    type Future = futures::future::BoxFuture<'static, Result<Response<FrameStream>, Status>>;
    fn call(&mut self, req: Request<pb::SubscribeRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.subscribe_frames(req).await })
    }
}

const SUBSCRIBE_PATH: &str = "/trigger.v1.TriggerService/Subscribe";

/// `trigger.v1.TriggerService`: Subscribe with shared frames, every other
/// verb by the generated service.
#[derive(Debug, Clone)]
pub struct Router {
    service: Arc<Service>,
    generated: TriggerServiceServer<Service>,
    max_request: usize,
}

impl Router {
    /// `max_request` bounds a request's size (the generated service has its
    /// own bound, set by the caller).
    pub fn new(
        service: Arc<Service>,
        generated: TriggerServiceServer<Service>,
        max_request: usize,
    ) -> Self {
        Self {
            service,
            generated,
            max_request,
        }
    }
}

impl NamedService for Router {
    const NAME: &'static str = trigger_proto::v1::trigger_service_server::SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == SUBSCRIBE_PATH {
            let svc = SubscribeSvc(self.service.clone());
            let max = self.max_request;
            Box::pin(async move {
                let mut grpc = Grpc::new(FrameCodec)
                    .apply_max_message_size_config(Some(max), Some(usize::MAX));
                Ok(grpc.server_streaming(svc, req).await)
            })
        } else {
            let fut = tower::Service::call(&mut self.generated, req);
            Box::pin(fut)
        }
    }
}
