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
//!
//! Every plain HTTP answer passes through [`HttpEndpoints::call`], which adds etcd's CORS
//! headers (`--cors`, see `cors`) once for all of them, 404s and 405s included, and
//! answers any `OPTIONS` request as etcd's preflight (`200`, empty), as etcd's handler
//! around its whole client mux does; gRPC and `--listen-metrics-urls` get none, as etcd's.
//! Only the gateway's refusal of a certificate's common name comes first, as in etcd.

use crate::cors::Cors;
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
    cors: Arc<Cors>,
}

impl HttpEndpointsLayer {
    /// Answers with this member's health and metrics, and its JSON gateway, with the
    /// CORS headers `cors` allows.
    pub fn new(node: NodeHandle, metrics: Arc<Metrics>, gateway: Gateway, cors: Cors) -> Self {
        HttpEndpointsLayer { node, metrics, gateway, cors: Arc::new(cors) }
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
            cors: self.cors.clone(),
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
    cors: Arc<Cors>,
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
        let (node, metrics) = (self.node.clone(), self.metrics.clone());
        let (gateway, cors) = (self.gateway.clone(), self.cors.clone());
        let common_name = gateway.refused_common_name(&req);
        Box::pin(async move {
            if let Some(refused) = common_name.await {
                return Ok(refused);
            }
            let origin = req.headers().get(http::header::ORIGIN).cloned();
            let mut response = if req.method() == http::Method::OPTIONS {
                preflight()
            } else if crate::gateway::serves(req.uri().path()) {
                gateway.answer(req).await
            } else {
                let listener = crate::http::Listener::Client;
                let (method, path) = (req.method(), req.uri().path());
                let answer = crate::http::answer(listener, method, path, &node, &metrics).await;
                crate::gateway::response(answer)
            };
            cors.add_headers(origin.as_ref(), response.headers_mut());
            Ok(response)
        })
    }
}

/// etcd's answer to any `OPTIONS` request on a client URL (a CORS preflight, whatever
/// the path): `200 OK` with an empty body (`Content-Length: 0`) and no content type.
fn preflight() -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::empty());
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
    response
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
    fn a_preflight_is_an_empty_200_with_the_headers_the_origin_is_allowed() {
        let origin = http::HeaderValue::from_static("http://a.example:80");
        let list = Cors::parse("http://a.example:80").unwrap();
        for (cors, origin, headers) in [
            (Cors::Any, None, 4),
            (list.clone(), Some(&origin), 4),
            (list.clone(), None, 1),
            (list, Some(&http::HeaderValue::from_static("http://x.example:80")), 1),
        ] {
            let mut answer = preflight();
            cors.add_headers(origin, answer.headers_mut());
            assert_eq!(answer.status(), http::StatusCode::OK);
            assert_eq!(answer.headers()[http::header::CONTENT_LENGTH], "0");
            assert!(answer.headers().get(http::header::CONTENT_TYPE).is_none());
            assert_eq!(answer.headers().len(), headers, "{cors:?} {origin:?}");
            let allowed = answer.headers().get(http::header::ACCESS_CONTROL_ALLOW_ORIGIN);
            assert_eq!(allowed.is_some(), headers == 4);
        }
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
