//! `GET /health` and `GET /metrics` on a plain HTTP/1.1 listener, and the answers the
//! client URLs give to plain HTTP requests (see `client_http`), both as etcd 3.4's Go
//! `net/http` writes them: its content types, bodies without a trailing newline, Go's
//! `404 page not found` and `405 Method Not Allowed`. Two fixed routes do not justify an
//! HTTP framework; the listener answers one request per connection and closes it.

use crate::metrics::Metrics;
use crate::runtime::NodeHandle;
use ::http::{Method, StatusCode};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Which listener a plain HTTP request came to: they serve different paths, as etcd's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `--listen-metrics-urls`: `/health` and `/metrics`.
    Metrics,
    /// `--listen-client-urls`: `/health`, `/metrics` and `/version`.
    Client,
}

/// The content type Go gives a text body it is not told the type of (`/health`) and
/// its `http.Error` answers (404, 405).
pub const TEXT: &str = "text/plain; charset=utf-8";
/// The content type of `/metrics`, as etcd's Prometheus handler sends it.
pub const METRICS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Go's body for a path it does not serve.
pub const NOT_FOUND_BODY: &str = "404 page not found\n";
/// Go's body for a method `/health` and `/version` do not take (anything but GET).
pub const METHOD_NOT_ALLOWED_BODY: &str = "Method Not Allowed\n";

/// One answer to a plain HTTP request: what etcd 3.4 sends for it, but for the `Date`
/// header (added by whoever writes it) and, on client URLs, the CORS headers (added by
/// `client_http` to every answer, see `cors`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// Other headers: Go's `X-Content-Type-Options: nosniff` on its error answers, and
    /// `Allow: GET` on a 405.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The body, exactly (etcd's JSON answers have no trailing newline).
    pub body: String,
}

impl Answer {
    fn ok(content_type: &'static str, body: String) -> Answer {
        Answer { status: StatusCode::OK, content_type, headers: Vec::new(), body }
    }

    /// A `200 OK` with a JSON body (the gateway's answers, see `gateway`).
    pub fn json(body: String) -> Answer {
        Answer::ok("application/json", body)
    }

    /// Go's `http.Error`: `text/plain`, `nosniff`, the text and a newline.
    pub fn error(status: StatusCode, body: &str) -> Answer {
        let headers = vec![("x-content-type-options", "nosniff")];
        Answer { status, content_type: TEXT, headers, body: body.to_string() }
    }
}

/// The raised alarm types, each once, as etcd names them (`NOSPACE`, `CORRUPT`).
fn alarm_names(alarms: &[kv::AlarmMember]) -> String {
    let mut names: Vec<&str> = alarms
        .iter()
        .map(|a| match a.alarm {
            kv::AlarmType::None => "NONE",
            kv::AlarmType::Nospace => "NOSPACE",
            kv::AlarmType::Corrupt => "CORRUPT",
        })
        .collect();
    names.dedup();
    names.join(",")
}

/// The paths `listener` serves, etcd's: `/version` only on client URLs.
fn route(listener: Listener, path: &str) -> Option<&'static str> {
    match (listener, path) {
        (_, "/health") => Some("/health"),
        (_, "/metrics") => Some("/metrics"),
        (Listener::Client, "/version") => Some("/version"),
        _ => None,
    }
}

/// The answer to `method path` on `listener` (`path` without its query): `/metrics`
/// (any method, as etcd's), `/health` and on client URLs `/version` (GET only, else
/// 405 with `Allow: GET`), anything else 404, each as etcd 3.4 answers it.
pub async fn answer(
    listener: Listener,
    method: &Method,
    path: &str,
    node: &NodeHandle,
    metrics: &Metrics,
) -> Answer {
    let Some(route) = route(listener, path) else {
        return Answer::error(StatusCode::NOT_FOUND, NOT_FOUND_BODY);
    };
    if route == "/metrics" {
        return Answer::ok(METRICS_TEXT, metrics.render());
    }
    if method != Method::GET {
        let mut answer = Answer::error(StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED_BODY);
        answer.headers.insert(0, ("allow", "GET"));
        return answer;
    }
    if route == "/version" {
        return Answer::ok("application/json", crate::etcd::version_json());
    }
    let (status, body) = match node.status().await {
        // As etcd's: unhealthy while an alarm is raised (etcd 3.4.23 answers
        // {"health":"false"}; the reason is etcd 3.5's).
        Some(s) if !s.alarms.is_empty() => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{{\"health\":\"false\",\"reason\":\"ALARM {}\"}}", alarm_names(&s.alarms)),
        ),
        Some(s) if s.leader.is_some() => (StatusCode::OK, "{\"health\":\"true\"}".into()),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"health\":\"false\",\"reason\":\"no leader\"}".into(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"health\":\"false\",\"reason\":\"stopping\"}".into(),
        ),
    };
    Answer { status, content_type: TEXT, headers: Vec::new(), body }
}

/// The method and the path (without its query) of an HTTP/1.1 request head; GET and
/// `/` if it is not one.
fn request_line(head: &str) -> (Method, &str) {
    let mut words = head.split_whitespace();
    let method = words.next().and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let target = words.next().unwrap_or("/");
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    (method.unwrap_or(Method::GET), path)
}

/// The bytes of `answer` as an HTTP/1.1 response that closes the connection.
fn http1_response(answer: &Answer) -> String {
    let mut head =
        format!("HTTP/1.1 {}\r\ncontent-type: {}\r\n", answer.status, answer.content_type);
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    format!(
        "{head}content-length: {}\r\nconnection: close\r\n\r\n{}",
        answer.body.len(),
        answer.body
    )
}

/// Serves health and metrics until the listener fails.
pub async fn serve(listener: TcpListener, node: NodeHandle, metrics: Arc<Metrics>) {
    let mut backoff = crate::accept::AcceptBackoff::default();
    loop {
        let flag = "--listen-metrics-urls";
        let mut sock = crate::accept::accept(&listener, flag, &mut backoff, &metrics).await;
        let node = node.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match sock.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (method, path) = request_line(&head);
            let answer = answer(Listener::Metrics, &method, path, &node, &metrics).await;
            let _ = sock.write_all(http1_response(&answer).as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_gives_the_method_and_the_path_without_its_query() {
        assert_eq!(request_line("GET /health HTTP/1.1\r\nhost: x\r\n"), (Method::GET, "/health"));
        assert_eq!(request_line("POST /health?x=1 HTTP/1.1\r\n"), (Method::POST, "/health"));
        assert_eq!(request_line(""), (Method::GET, "/"));
    }

    #[test]
    fn each_listener_serves_etcds_paths_only() {
        for listener in [Listener::Metrics, Listener::Client] {
            assert_eq!(route(listener, "/health"), Some("/health"));
            assert_eq!(route(listener, "/metrics"), Some("/metrics"));
            assert_eq!(route(listener, "/foo"), None);
            assert_eq!(route(listener, "/health/"), None);
            assert_eq!(route(listener, "/"), None);
        }
        assert_eq!(route(Listener::Client, "/version"), Some("/version"));
        assert_eq!(route(Listener::Metrics, "/version"), None, "not on the metrics listener");
    }

    #[test]
    fn a_not_found_has_gos_status_content_type_nosniff_and_body() {
        let text = http1_response(&Answer::error(StatusCode::NOT_FOUND, NOT_FOUND_BODY));
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\n\
             x-content-type-options: nosniff\r\ncontent-length: 19\r\nconnection: close\r\n\
             \r\n404 page not found\n"
        );
    }
}
