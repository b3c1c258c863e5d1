//! Accept loops that pause after an error instead of spinning.
//!
//! `accept` fails at once, again and again, while the process is out of file descriptors
//! (EMFILE) or the system is (ENFILE): a loop that just tries again burns a core and
//! floods the log while existing connections starve, and tonic's own accept loop does
//! exactly that (it logs the error at trace level and continues). As Go's `net/http` and
//! grpc-go (so etcd) do, a failed accept here pauses 5 ms, doubling after each further
//! failure up to 1 s, and logs one line per failure with the pause; a successful accept
//! resets the pause. Each failure is counted in `raftkv_accept_errors_total`.

use crate::metrics::Metrics;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tokio_stream::Stream;

/// Pause after the first failed accept of a streak.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between two accepts that fail.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The pause to take after failed accepts.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    pause: Duration,
}

impl AcceptBackoff {
    /// Records a failed accept on the `listener` (a flag name, for the log line) and
    /// returns the pause to take before the next attempt.
    pub fn failed(&mut self, listener: &str, error: &io::Error, metrics: &Metrics) -> Duration {
        self.pause = (self.pause * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            listener,
            %error,
            pause_ms = self.pause.as_millis() as u64,
            "accepting a connection failed; pausing before the next accept (if this is \
             'too many open files', raise the process's file descriptor limit)"
        );
        self.pause
    }

    /// Records a successful accept: the next failure starts a new streak.
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

/// Accepts the next connection on `listener` (a flag name, for the log), pausing after
/// each failed accept as `backoff` says: for hand-written accept loops.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    flag: &str,
    backoff: &mut AcceptBackoff,
    metrics: &Metrics,
) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((connection, _)) => {
                backoff.succeeded();
                return connection;
            }
            Err(e) => tokio::time::sleep(backoff.failed(flag, &e, metrics)).await,
        }
    }
}

/// A stream of accepted connections (such as tonic's `TcpIncoming`) that pauses after
/// each error as [`AcceptBackoff`] says, and never hands the errors on.
pub struct BackoffIncoming<S> {
    inner: S,
    listener: &'static str,
    metrics: Arc<Metrics>,
    backoff: AcceptBackoff,
    pause: Option<Pin<Box<Sleep>>>,
}

impl<S> BackoffIncoming<S> {
    /// Wraps `inner`, the connections of `listener` (a flag name, for the log).
    pub fn new(inner: S, listener: &'static str, metrics: Arc<Metrics>) -> Self {
        BackoffIncoming { inner, listener, metrics, backoff: AcceptBackoff::default(), pause: None }
    }
}

impl<S, T> Stream for BackoffIncoming<S>
where
    S: Stream<Item = io::Result<T>> + Unpin,
{
    type Item = io::Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = this.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(conn)) => {
                    this.backoff.succeeded();
                    return Poll::Ready(Some(Ok(conn)));
                }
                Some(Err(e)) => {
                    let pause = this.backoff.failed(this.listener, &e, &this.metrics);
                    this.pause = Some(Box::pin(tokio::time::sleep(pause)));
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[test]
    fn pauses_double_from_5_ms_to_at_most_1_s_and_reset_on_success() {
        let (mut b, m) = (AcceptBackoff::default(), Metrics::default());
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<u64> =
            (0..10).map(|_| b.failed("x", &emfile, &m).as_millis() as u64).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(m.accept_errors.load(Ordering::Relaxed), 10);
        b.succeeded();
        assert_eq!(b.failed("x", &emfile, &m), ACCEPT_BACKOFF_MIN);
    }

    /// tonic's accept loop retries at once after an error: with EMFILE, a busy loop.
    /// Through the wrapper, the failing listener is polled once per pause, not again
    /// until the pause is over, and the connection after the errors comes through.
    #[tokio::test(start_paused = true)]
    async fn failing_accepts_are_retried_after_pauses_not_at_once() {
        let polls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = polls.clone();
        let accepts = tokio_stream::iter(0..5).map(move |i| {
            counter.fetch_add(1, Ordering::Relaxed);
            if i < 4 {
                Err(io::Error::from_raw_os_error(24))
            } else {
                Ok(i)
            }
        });
        let metrics = Arc::new(Metrics::default());
        let mut incoming = BackoffIncoming::new(accepts, "--listen-client-urls", metrics.clone());
        let started = tokio::time::Instant::now();
        let first = incoming.next().await.expect("a connection").expect("not an error");
        assert_eq!(first, 4);
        assert_eq!(polls.load(Ordering::Relaxed), 5, "one accept per pause");
        assert_eq!(started.elapsed(), Duration::from_millis(5 + 10 + 20 + 40));
        assert_eq!(metrics.accept_errors.load(Ordering::Relaxed), 4);
    }
}
