//! `GET /health` and `GET /metrics` on a plain HTTP/1.1 listener. Two fixed routes do not
//! justify an HTTP framework; this answers one request per connection and closes it.

use crate::metrics::Metrics;
use crate::runtime::NodeHandle;
use ::http::StatusCode;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// The status code and body of `GET path`: `/metrics` or `/health`
/// (as etcd's), anything else 404. The metrics listener and the client port (see
/// `client_http`) both answer with it.
pub async fn answer(path: &str, node: &NodeHandle, metrics: &Metrics) -> (StatusCode, String) {
    match path {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/health" => match node.status().await {
            // As etcd's: unhealthy while an alarm is raised (etcd 3.4.23 answers
            // {"health":"false"}; the reason is etcd 3.5's).
            Some(s) if !s.alarms.is_empty() => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{{\"health\":\"false\",\"reason\":\"ALARM {}\"}}\n",
                    alarm_names(&s.alarms)
                ),
            ),
            Some(s) if s.leader.is_some() => (StatusCode::OK, "{\"health\":\"true\"}\n".into()),
            Some(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"health\":\"false\",\"reason\":\"no leader\"}\n".into(),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"health\":\"false\",\"reason\":\"stopping\"}\n".into(),
            ),
        },
        _ => (StatusCode::NOT_FOUND, "try /health or /metrics\n".into()),
    }
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
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (code, body) = answer(path, &node, &metrics).await;
            let resp = format!(
                "HTTP/1.1 {code}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
