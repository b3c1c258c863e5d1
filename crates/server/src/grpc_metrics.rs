//! etcd's gRPC server series, which its standard alerts read (`etcdHighNumberOfFailedGRPCRequests`
//! and `etcdGRPCRequestsSlow` in etcd's mixin): `grpc_server_handled_total` by service,
//! method, type and code, and `grpc_server_handling_seconds` by service, method and type,
//! with the names, labels, code names and buckets of go-grpc-prometheus, which etcd uses.
//!
//! [`GrpcMetricsLayer`] sits on the client router, inside the HTTP endpoints: it sees
//! every gRPC call and reads its code where the call ends, from the `grpc-status` of the
//! response headers (an error answered at once) or of the trailers at the end of the
//! body. A call whose body is dropped before its end (the client went away) counts as
//! `Canceled`, as a stream the client cancels does in etcd.
//!
//! Bounds: only calls answered with another code than `Unimplemented` are counted, so an
//! unknown method (which a client can name freely) adds no series, as go-grpc-prometheus
//! counts only registered methods; and at most [`METHODS_MAX`] methods are kept apart
//! (raftkv serves about fifty).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::Histogram;

/// Methods kept apart in the series (raftkv serves about fifty).
pub const METHODS_MAX: usize = 128;

/// go-grpc-prometheus's default buckets for `grpc_server_handling_seconds` (Prometheus's
/// default buckets), so alert thresholds read the same buckets.
pub const HANDLING_BOUNDS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// gRPC's code names as Go prints them (`codes.Code.String()`), by code number: the
/// `grpc_code` label values.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CANCELED: usize = 1;
/// Not a code: the answer was not a gRPC call's (no status by its end); not counted.
const NOT_GRPC: usize = usize::MAX;
const UNKNOWN: usize = 2;
const UNIMPLEMENTED: usize = 12;

/// The RPCs that are streams, with their go-grpc-prometheus type; every other is `unary`.
fn grpc_type(path: &str) -> &'static str {
    match path {
        "/etcdserverpb.Watch/Watch" | "/etcdserverpb.Lease/LeaseKeepAlive" => "bidi_stream",
        "/etcdserverpb.Maintenance/Snapshot" | "/v3electionpb.Election/Observe" => "server_stream",
        _ => "unary",
    }
}

/// One method's counts.
#[derive(Debug)]
struct MethodStats {
    handled: [AtomicU64; 17],
    seconds: Histogram,
}

impl MethodStats {
    fn new() -> Self {
        MethodStats { handled: Default::default(), seconds: Histogram::new(HANDLING_BOUNDS) }
    }
}

/// The counts of every method seen, by path (`/package.Service/Method`).
#[derive(Debug, Default)]
pub struct GrpcMetrics {
    methods: RwLock<BTreeMap<String, Arc<MethodStats>>>,
}

impl GrpcMetrics {
    /// Records a call to `path` that ended with `code` after `seconds`.
    pub fn observe(&self, path: &str, code: usize, seconds: f64) {
        let code = if code < CODE_NAMES.len() { code } else { UNKNOWN };
        if code == UNIMPLEMENTED {
            return;
        }
        let known = self.methods.read().unwrap_or_else(|e| e.into_inner()).get(path).cloned();
        let stats = match known {
            Some(stats) => stats,
            None => {
                let mut methods = self.methods.write().unwrap_or_else(|e| e.into_inner());
                if methods.len() >= METHODS_MAX && !methods.contains_key(path) {
                    return;
                }
                methods
                    .entry(path.to_string())
                    .or_insert_with(|| Arc::new(MethodStats::new()))
                    .clone()
            }
        };
        stats.handled[code].fetch_add(1, Ordering::Relaxed);
        stats.seconds.observe(seconds);
    }

    /// Appends the two series in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let methods = self.methods.read().unwrap_or_else(|e| e.into_inner());
        let labels = |path: &str| {
            let (service, method) =
                path.trim_start_matches('/').split_once('/').unwrap_or(("", path));
            format!(
                "grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{}\"",
                grpc_type(path)
            )
        };
        let handled = "grpc_server_handled_total";
        let _ = writeln!(
            out,
            "# HELP {handled} Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE {handled} counter"
        );
        for (path, stats) in methods.iter() {
            let labels = labels(path);
            for (name, n) in CODE_NAMES.iter().zip(&stats.handled) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "{handled}{{grpc_code=\"{name}\",{labels}}} {n}");
                }
            }
        }
        let seconds = "grpc_server_handling_seconds";
        let _ = writeln!(
            out,
            "# HELP {seconds} Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.\n# TYPE {seconds} histogram"
        );
        for (path, stats) in methods.iter() {
            stats.seconds.render_series(out, seconds, &labels(path));
        }
    }
}

/// The code in a `grpc-status` header or trailer, if there is one.
fn status_code(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(value.parse::<usize>().unwrap_or(UNKNOWN))
}

/// The tower layer that records every gRPC call in a [`GrpcMetrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
}

impl GrpcMetricsLayer {
    /// The layer recording into `metrics`.
    pub fn new(metrics: Arc<GrpcMetrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

type CallFuture<R> = Pin<Box<dyn Future<Output = Result<R, tower::BoxError>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = CallFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let call = Call {
            metrics: self.metrics.clone(),
            path: req.uri().path().to_string(),
            started: Instant::now(),
            code: None,
        };
        let served = self.inner.call(req);
        Box::pin(async move {
            let mut call = call;
            let response = served.await.map_err(Into::into)?;
            call.code = status_code(response.headers());
            let (parts, body) = response.into_parts();
            let body = tonic::body::Body::new(CountedBody { inner: body, call: Some(call) });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// One call being answered: recorded once, when its body ends or is dropped.
struct Call {
    metrics: Arc<GrpcMetrics>,
    path: String,
    started: Instant,
    /// The code, once the headers or trailers said it.
    code: Option<usize>,
}

impl Drop for Call {
    fn drop(&mut self) {
        // No status by the end of the body: the client went away first.
        let code = self.code.unwrap_or(CANCELED);
        if code == NOT_GRPC {
            return;
        }
        self.metrics.observe(&self.path, code, self.started.elapsed().as_secs_f64());
    }
}

/// A response body that records its call when it ends (or is dropped).
struct CountedBody {
    inner: tonic::body::Body,
    call: Option<Call>,
}

impl CountedBody {
    /// Records the call now, if not yet: with the code its end `said`, else the one its
    /// headers gave, else `otherwise`.
    fn end(&mut self, said: Option<usize>, otherwise: usize) {
        if let Some(mut call) = self.call.take() {
            call.code = Some(said.or(call.code).unwrap_or(otherwise));
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code) {
                    self.end(Some(code), UNKNOWN);
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(None, UNKNOWN),
            // The end: a status in the headers (an error answered at once) or none (an
            // HTTP answer, not a gRPC call: not counted).
            Poll::Ready(None) => self.end(None, NOT_GRPC),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code_with_etcds_labels() {
        let m = GrpcMetrics::default();
        m.observe("/etcdserverpb.KV/Put", 0, 0.001);
        m.observe("/etcdserverpb.KV/Put", 0, 0.2);
        m.observe("/etcdserverpb.KV/Put", 3, 0.001);
        m.observe("/etcdserverpb.Watch/Watch", CANCELED, 30.0);
        m.observe("/etcdserverpb.KV/Range", 99, 0.001);
        let mut s = String::new();
        m.render(&mut s);
        let put = "grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"";
        for line in [
            format!("grpc_server_handled_total{{grpc_code=\"OK\",{put}}} 2"),
            format!("grpc_server_handled_total{{grpc_code=\"InvalidArgument\",{put}}} 1"),
            "grpc_server_handled_total{grpc_code=\"Canceled\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 1".into(),
            // A code past gRPC's is Unknown.
            "grpc_server_handled_total{grpc_code=\"Unknown\",grpc_method=\"Range\",".into(),
            format!("grpc_server_handling_seconds_bucket{{{put},le=\"0.005\"}} 2"),
            format!("grpc_server_handling_seconds_bucket{{{put},le=\"0.25\"}} 3"),
            format!("grpc_server_handling_seconds_count{{{put}}} 3"),
        ] {
            assert!(s.contains(&line), "{line} not in {s}");
        }
        assert!(!s.contains("grpc_code=\"NotFound\""), "codes never seen are left out: {s}");
    }

    /// A client can name any method; the unknown ones (answered Unimplemented) add no
    /// series, and the methods kept apart are bounded.
    #[test]
    fn unknown_methods_add_nothing_and_methods_are_bounded() {
        let m = GrpcMetrics::default();
        m.observe("/etcdserverpb.KV/Bogus", UNIMPLEMENTED, 0.001);
        let mut s = String::new();
        m.render(&mut s);
        assert!(!s.contains("Bogus"), "{s}");
        for i in 0..METHODS_MAX + 10 {
            m.observe(&format!("/x.Y/M{i}"), 0, 0.001);
        }
        assert_eq!(m.methods.read().unwrap().len(), METHODS_MAX);
        m.observe("/x.Y/M0", 0, 0.001);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains(
            "grpc_code=\"OK\",grpc_method=\"M0\",grpc_service=\"x.Y\",grpc_type=\"unary\"} 2"
        ));
    }
}
