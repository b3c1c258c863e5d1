//! `GET /health`, `GET /metrics` and `GET /version` on the client port too, as etcd 3.4
//! serves them next to gRPC (Prometheus scrape configs and load balancer health checks
//! point there; `/version` is etcd's JSON with the version `Maintenance.Status` reports).
//!
//! The client server accepts HTTP/1.1 besides HTTP/2 (hyper tells them apart by the
//! HTTP/2 preface; the `:authority` fix passes anything that is not HTTP/2 through
//! untouched), and this layer, outermost on the client router, sends on to gRPC what
//! etcd's does (HTTP/2 with an `application/grpc` content type) and answers every other
//! request with [`crate::http::answer`]: the three paths, and for any other path Go's
//! `404 page not found`, as etcd (not a gRPC status in a 200). Over TLS the handshake
//! offers ALPN `h2` and then `http/1.1` (`tls::ServerFiles::http1`): grpc-go insists on
//! `h2` and gets it, `curl --http1.1` and HTTP/1.1-only scrapers get `http/1.1`, as from
//! etcd. `/version` is not on `--listen-metrics-urls`, as etcd's.

use crate::gateway::{Gateway, RequestBody};
use crate::metrics::Metrics;
use crate::runtime::NodeHandle;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Wraps the client router with [`HttpEndpoints`].
#[derive(Clone)]
pub struct HttpEndpointsLayer {
    node: NodeHandle,
    metrics: Arc<Metrics>,
    gateway: Gateway,
}

impl HttpEndpointsLayer {
    /// Answers with this member's health and metrics, and its JSON gateway.
    pub fn new(node: NodeHandle, metrics: Arc<Metrics>, gateway: Gateway) -> Self {
        HttpEndpointsLayer { node, metrics, gateway }
    }
}

impl<S> tower::Layer<S> for HttpEndpointsLayer {
    type Service = HttpEndpoints<S>;

    fn layer(&self, inner: S) -> HttpEndpoints<S> {
        HttpEndpoints {
            inner,
            node: self.node.clone(),
            metrics: self.metrics.clone(),
            gateway: self.gateway.clone(),
        }
    }
}

/// The client router, with `/health`, `/metrics` and `/version` answered before it.
#[derive(Clone)]
pub struct HttpEndpoints<S> {
    inner: S,
    node: NodeHandle,
    metrics: Arc<Metrics>,
    gateway: Gateway,
}

/// Whether `req` goes to gRPC, by etcd's rule: HTTP/2 with a content type that
/// contains `application/grpc`. Anything else is a plain HTTP request, answered here.
fn is_grpc<B>(req: &http::Request<B>) -> bool {
    let grpc_type = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().windows(b"application/grpc".len()).any(|w| w == b"application/grpc")
    });
    req.version() == http::Version::HTTP_2 && grpc_type
}

impl<S, B> tower::Service<http::Request<B>> for HttpEndpoints<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    B: RequestBody,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if is_grpc(&req) {
            return Box::pin(self.inner.call(req));
        }
        if crate::gateway::serves(req.uri().path()) {
            let gateway = self.gateway.clone();
            return Box::pin(async move { Ok(gateway.answer(req).await) });
        }
        let (node, metrics) = (self.node.clone(), self.metrics.clone());
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        Box::pin(async move {
            let listener = crate::http::Listener::Client;
            let answer = crate::http::answer(listener, &method, &path, &node, &metrics).await;
            Ok(crate::gateway::response(answer))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        version: http::Version,
        path: &str,
        content_type: Option<&str>,
    ) -> http::Request<()> {
        let mut b = http::Request::get(path).version(version);
        if let Some(t) = content_type {
            b = b.header(http::header::CONTENT_TYPE, t);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_http2_requests_with_a_grpc_content_type_go_to_grpc_as_in_etcd() {
        let h2 = |path, t| is_grpc(&request(http::Version::HTTP_2, path, t));
        let h1 = |path, t| is_grpc(&request(http::Version::HTTP_11, path, t));
        assert!(h2("/etcdserverpb.KV/Range", Some("application/grpc")));
        assert!(h2("/etcdserverpb.KV/Range", Some("application/grpc+proto")));
        assert!(h2("/health", Some("application/grpc")), "gRPC decides, even on these paths");
        // Anything else is answered here: these paths, and 404 for any other.
        assert!(!h2("/health", None));
        assert!(!h2("/foo", Some("text/plain")));
        assert!(!h1("/foo", None), "curl http://host:2379/foo");
        assert!(!h1("/metrics", None));
        assert!(!h1("/etcdserverpb.KV/Range", Some("application/grpc")), "etcd: 404 too");
    }

    #[test]
    fn version_is_etcds_json_with_the_status_version() {
        let body = crate::etcd::version_json();
        assert_eq!(
            body,
            format!("{{\"etcdserver\":\"{}\",\"etcdcluster\":\"3.4.0\"}}", crate::etcd::VERSION)
        );
        assert!(crate::etcd::VERSION.starts_with("3.4.0+raftkv."), "{body}");
    }
}
