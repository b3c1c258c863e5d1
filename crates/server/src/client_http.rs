//! `GET /health`, `GET /metrics` and `GET /version` on the client port too, as etcd 3.4
//! serves them next to gRPC (Prometheus scrape configs and load balancer health checks
//! point there; `/version` is etcd's JSON with the version `Maintenance.Status` reports).
//!
//! The client server accepts HTTP/1.1 besides HTTP/2 (hyper tells them apart by the
//! HTTP/2 preface; the `:authority` fix passes anything that is not HTTP/2 through
//! untouched), and this layer, outermost on the client router, answers a request for
//! one of these paths that is not gRPC (no `application/grpc` content type), with
//! [`crate::http::answer`] for the first two; everything else goes on to gRPC. Over TLS
//! the handshake offers ALPN `h2` and then `http/1.1` (`tls::ServerFiles::http1`):
//! grpc-go insists on `h2` and gets it, `curl --http1.1` and HTTP/1.1-only scrapers get
//! `http/1.1`, as from etcd. `/version` is not on `--listen-metrics-urls`, as etcd's.

use crate::metrics::Metrics;
use crate::runtime::NodeHandle;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The paths answered here rather than by gRPC.
const PATHS: [&str; 3] = ["/health", "/metrics", "/version"];

/// Wraps the client router with [`HttpEndpoints`].
#[derive(Clone)]
pub struct HttpEndpointsLayer {
    node: NodeHandle,
    metrics: Arc<Metrics>,
}

impl HttpEndpointsLayer {
    /// Answers with this member's health and metrics.
    pub fn new(node: NodeHandle, metrics: Arc<Metrics>) -> Self {
        HttpEndpointsLayer { node, metrics }
    }
}

impl<S> tower::Layer<S> for HttpEndpointsLayer {
    type Service = HttpEndpoints<S>;

    fn layer(&self, inner: S) -> HttpEndpoints<S> {
        HttpEndpoints { inner, node: self.node.clone(), metrics: self.metrics.clone() }
    }
}

/// The client router, with `/health`, `/metrics` and `/version` answered before it.
#[derive(Clone)]
pub struct HttpEndpoints<S> {
    inner: S,
    node: NodeHandle,
    metrics: Arc<Metrics>,
}

/// Whether `req` is a plain HTTP request for one of [`PATHS`].
fn is_endpoint<B>(req: &http::Request<B>) -> bool {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    !grpc && PATHS.contains(&req.uri().path())
}

impl<S, B> tower::Service<http::Request<B>> for HttpEndpoints<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !is_endpoint(&req) {
            return Box::pin(self.inner.call(req));
        }
        let (node, metrics) = (self.node.clone(), self.metrics.clone());
        let path = req.uri().path().to_string();
        Box::pin(async move {
            let (status, body, content_type) = match path.as_str() {
                "/version" => {
                    (http::StatusCode::OK, crate::etcd::version_json(), "application/json")
                }
                _ => {
                    let (status, body) = crate::http::answer(&path, &node, &metrics).await;
                    (status, body, "text/plain; version=0.0.4")
                }
            };
            let mut response = http::Response::new(tonic::body::Body::new(body));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, content_type: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::get(path);
        if let Some(t) = content_type {
            b = b.header(http::header::CONTENT_TYPE, t);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_plain_requests_for_its_three_paths_are_answered_here() {
        assert!(is_endpoint(&get("/metrics", None)));
        assert!(is_endpoint(&get("/health", Some("text/plain"))));
        assert!(!is_endpoint(&get("/health", Some("application/grpc"))));
        assert!(!is_endpoint(&get("/metrics", Some("application/grpc+proto"))));
        assert!(!is_endpoint(&get("/etcdserverpb.KV/Range", Some("application/grpc"))));
        assert!(is_endpoint(&get("/version", None)));
        assert!(!is_endpoint(&get("/version", Some("application/grpc"))));
        assert!(!is_endpoint(&get("/versions", None)));
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
