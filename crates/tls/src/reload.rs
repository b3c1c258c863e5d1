//! A value built from files, rebuilt when the files change (certificate rotation).

use crate::TlsError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Longest time between two looks at the files: a rotated certificate is used by the
/// handshakes that start at most this long after the files changed, and a busy listener
/// stats its files at most once per interval.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of a file: modification time and size (`None`: the file
/// could not be read, which is a version too, so its return is noticed).
type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

type Build<T> = Box<dyn Fn() -> Result<Arc<T>, TlsError> + Send + Sync>;

struct State<T> {
    current: Arc<T>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

/// A value built from `files` by a function, rebuilt by [`Reloading::current`] when
/// one of the files changed (checked at most once per [`RELOAD_CHECK_INTERVAL`]). A
/// rebuild that fails is logged and the previous value stays until the files change
/// again.
pub struct Reloading<T> {
    files: Vec<PathBuf>,
    build: Build<T>,
    interval: Duration,
    state: Mutex<State<T>>,
}

impl<T> Reloading<T> {
    /// Builds the first value (its error is returned: at start-up a bad file is fatal).
    pub fn new(
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<Arc<T>, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsError> {
        Reloading::with_interval(files, build, RELOAD_CHECK_INTERVAL)
    }

    /// [`Reloading::new`] with another check interval (tests).
    pub fn with_interval(
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<Arc<T>, TlsError> + Send + Sync + 'static,
        interval: Duration,
    ) -> Result<Reloading<T>, TlsError> {
        let stamps = stamps(&files);
        let current = build()?;
        let state = Mutex::new(State { current, stamps, checked: Instant::now() });
        Ok(Reloading { files, build: Box::new(build), interval, state })
    }

    /// The value for a handshake starting now.
    pub fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().expect("TLS reload lock");
        if state.checked.elapsed() >= self.interval {
            state.checked = Instant::now();
            let now = stamps(&self.files);
            if now != state.stamps {
                state.stamps = now;
                match (self.build)() {
                    Ok(value) => {
                        tracing::info!(files = ?self.files, "TLS files changed: reloaded");
                        state.current = value;
                    }
                    Err(error) => tracing::warn!(
                        %error,
                        "TLS files changed but do not load; still using the previous ones"
                    ),
                }
            }
        }
        state.current.clone()
    }
}
