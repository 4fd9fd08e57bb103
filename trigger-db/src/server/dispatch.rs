//! The daemon's gRPC services behind one dispatcher: Subscribe with the
//! hub's shared frames ([`super::subscribe`]), every other verb of
//! `trigger.v1.TriggerService` by the generated service, health and
//! reflection by theirs, any other path UNIMPLEMENTED (as tonic's router
//! answers it).
//!
//! Why not tonic's router (`Server::add_service`): it is an axum router,
//! and on the way out every response body is boxed again by axum, by the
//! router and by the server, so each poll of a Subscribe body went through
//! four boxed bodies before it reached [`GrpcBody`]; that poll runs once
//! per subscriber and trigger (and again to find the stream idle). Here the
//! server ([`super::http2`]) polls the [`ResponseBody`] without boxing it.
//!
//! Each request is counted in its connection's
//! [`InFlight`](crate::coalesce::InFlight) while it is open (until its
//! response body is dropped), Subscribe apart from the rest, so that the
//! connection's write coalescing knows when it cannot gain anything.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use tonic::{Status, body::Body, server::NamedService};
use trigger_proto::v1::trigger_service_server::TriggerServiceServer;

use super::{
    Service,
    subscribe::{GrpcBody, SUBSCRIBE_PATH, serve_subscribe},
};
use crate::{
    coalesce::{InFlightGuard, Request},
    peer::ConnInfo,
};

/// A response body of the dispatcher: Subscribe's frames, or the body of
/// another service; and the request's place in its connection's count.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    _in_flight: Option<InFlightGuard>,
}

#[derive(Debug)]
enum Kind {
    Frames(GrpcBody),
    Other(Body),
}

impl ResponseBody {
    pub(super) fn frames(body: GrpcBody) -> Self {
        Self {
            kind: Kind::Frames(body),
            _in_flight: None,
        }
    }

    pub(super) fn other(body: Body) -> Self {
        Self {
            kind: Kind::Other(body),
            _in_flight: None,
        }
    }

    fn counted(mut self, guard: Option<InFlightGuard>) -> Self {
        self._in_flight = guard;
        self
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        match &mut self.kind {
            Kind::Frames(b) => Pin::new(b).poll_frame(cx),
            Kind::Other(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Frames(b) => b.is_end_stream(),
            Kind::Other(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            Kind::Frames(b) => b.size_hint(),
            Kind::Other(b) => b.size_hint(),
        }
    }
}

/// The daemon's services by gRPC path (module docs). `H`, `R`, `A`: the
/// health, reflection v1 and v1alpha services.
#[derive(Debug, Clone)]
pub struct Dispatch<H, R, A> {
    service: Arc<Service>,
    generated: TriggerServiceServer<Service>,
    /// Bounds the Subscribe request (the generated service has its own
    /// bound, set by the caller).
    max_request: usize,
    health: H,
    reflection: R,
    reflection_v1alpha: A,
}

impl<H, R, A> Dispatch<H, R, A> {
    pub fn new(
        service: Arc<Service>,
        generated: TriggerServiceServer<Service>,
        max_request: usize,
        health: H,
        reflection: R,
        reflection_v1alpha: A,
    ) -> Self {
        Self {
            service,
            generated,
            max_request,
            health,
            reflection,
            reflection_v1alpha,
        }
    }
}

/// `svc`'s answer to `req` as a [`ResponseBody`]. tonic's generated
/// services are always ready (their `poll_ready` answers at once), so they
/// are called without waiting for readiness, as tonic's router calls them.
fn call_other<S>(
    svc: &mut S,
    req: http::Request<Body>,
    guard: Option<InFlightGuard>,
) -> BoxFuture<'static, Result<http::Response<ResponseBody>, Infallible>>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    let fut = svc.call(req);
    Box::pin(async move {
        let resp = fut.await?;
        Ok(resp.map(|b| ResponseBody::other(b).counted(guard)))
    })
}

impl<H, R, A> tower::Service<http::Request<Body>> for Dispatch<H, R, A>
where
    H: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService,
    H::Future: Send + 'static,
    R: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService,
    R::Future: Send + 'static,
    A: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService,
    A::Future: Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let kind = if req.uri().path() == SUBSCRIBE_PATH {
            Request::Subscribe
        } else {
            Request::Other
        };
        let guard = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.in_flight.enter(kind));
        // "/package.Service/Method"
        let service_name = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(s, _)| s);
        match service_name {
            n if n == <TriggerServiceServer<Service> as NamedService>::NAME => {
                if req.uri().path() == SUBSCRIBE_PATH {
                    let service = self.service.clone();
                    let max = self.max_request;
                    Box::pin(async move {
                        let resp = serve_subscribe(service, req, max).await;
                        Ok(resp.map(|b| b.counted(guard)))
                    })
                } else {
                    call_other(&mut self.generated, req, guard)
                }
            }
            n if n == H::NAME => call_other(&mut self.health, req, guard),
            n if n == R::NAME => call_other(&mut self.reflection, req, guard),
            n if n == A::NAME => call_other(&mut self.reflection_v1alpha, req, guard),
            _ => {
                let resp = Status::unimplemented("").into_http::<Body>();
                Box::pin(async move { Ok(resp.map(|b| ResponseBody::other(b).counted(guard))) })
            }
        }
    }
}
