//! Request size limits per verb: a tower layer in front of every gRPC
//! service that ends a request body once it grows past the limit of its
//! verb, before tonic buffers it. Read verbs (Get, Query, Subscribe, Stats,
//! health, reflection...) carry a filter at most and get a small limit;
//! the write verbs (Add, Modify, Delete, Flush, ConfigureThresholds) carry
//! batches and get a larger one. Every verb here is unary or server
//! streaming, so the request body is exactly one message.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Status, body::Body};

/// The write verbs of `trigger.v1.TriggerService`, by gRPC path.
const WRITE_PATHS: &[&str] = &[
    "/trigger.v1.TriggerService/Add",
    "/trigger.v1.TriggerService/Modify",
    "/trigger.v1.TriggerService/Delete",
    "/trigger.v1.TriggerService/Flush",
    "/trigger.v1.TriggerService/ConfigureThresholds",
];

/// The largest request body of a read verb and of a write verb, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub read: usize,
    pub write: usize,
}

impl RequestLimits {
    /// The limit for the request to `path`.
    pub fn for_path(&self, path: &str) -> usize {
        if WRITE_PATHS.contains(&path) {
            self.write
        } else {
            self.read
        }
    }
}

impl<S> tower::Layer<S> for RequestLimits {
    type Service = Limited<S>;
    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            limits: *self,
        }
    }
}

/// The service behind [`RequestLimits`].
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    limits: RequestLimits,
}

impl<S> tower::Service<http::Request<Body>> for Limited<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> S::Future {
        let path = req.uri().path().to_owned();
        let limit = self.limits.for_path(&path);
        self.inner.call(req.map(|body| {
            Body::new(LimitedBody {
                inner: body,
                left: limit,
                limit,
                path,
            })
        }))
    }
}

/// A request body that fails with RESOURCE_EXHAUSTED once it exceeds
/// `limit` bytes.
struct LimitedBody {
    inner: Body,
    left: usize,
    limit: usize,
    path: String,
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if data.len() > this.left {
                        return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                            "request to {} larger than its limit of {} bytes",
                            this.path, this.limit
                        )))));
                    }
                    this.left -= data.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;

    use super::*;

    #[test]
    fn write_verbs_get_the_write_limit_and_everything_else_the_read_limit() {
        let l = RequestLimits {
            read: 10,
            write: 1000,
        };
        assert_eq!(l.for_path("/trigger.v1.TriggerService/Add"), 1000);
        assert_eq!(l.for_path("/trigger.v1.TriggerService/Flush"), 1000);
        assert_eq!(l.for_path("/trigger.v1.TriggerService/Query"), 10);
        assert_eq!(l.for_path("/trigger.v1.TriggerService/Subscribe"), 10);
        assert_eq!(l.for_path("/grpc.health.v1.Health/Check"), 10);
    }

    async fn read_all(mut b: LimitedBody) -> Result<usize, Status> {
        let mut n = 0;
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut b).poll_frame(cx)).await {
            n += f?.into_data().map_or(0, |d| d.len());
        }
        Ok(n)
    }

    fn body(bytes: usize, limit: usize) -> LimitedBody {
        LimitedBody {
            inner: Body::new(one_frame(vec![0u8; bytes])),
            left: limit,
            limit,
            path: "/trigger.v1.TriggerService/Query".into(),
        }
    }

    /// A one-frame body of `v`.
    fn one_frame(v: Vec<u8>) -> impl HttpBody<Data = Bytes, Error = Status> + Send {
        struct Once(Option<Bytes>);
        impl HttpBody for Once {
            type Data = Bytes;
            type Error = Status;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
                Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
            }
        }
        Once(Some(Bytes::from(v)))
    }

    #[tokio::test]
    async fn a_body_past_its_limit_is_resource_exhausted_naming_the_verb() {
        assert_eq!(read_all(body(100, 100)).await.unwrap(), 100);
        let e = read_all(body(101, 100)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("Query"), "{e}");
    }
}
