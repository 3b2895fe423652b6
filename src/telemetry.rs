//! Logging set-up: human-readable text or JSON lines, filtered by
//! `RUST_LOG` (default `info`). Also formats errors for log lines and
//! messages.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; later calls do nothing.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Formats an error with its sources, which carry the cause of a failed
/// request, such as "Connection refused".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Lets a repeated log line through at most once per interval and counts
/// the lines held back in between, so a flood of one event stays visible
/// without filling the log. The limiter counts no events itself, so its
/// callers count each one in a metric.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last_logged: Option<Instant>,
    held_back: u64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::default(),
        }
    }

    /// Returns `Some(n)` when the line is to be logged now, where `n` lines
    /// were held back since the last one, and `None` when it is held back.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = state
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            state.held_back += 1;
            return None;
        }
        state.last_logged = Some(now);
        Some(std::mem::take(&mut state.held_back))
    }
}

/// Log capture for unit tests.
#[cfg(test)]
pub(crate) mod capture {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Log lines written while the guard of [`capture_logs`] is alive.
    #[derive(Clone, Default)]
    pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

    impl LogBuffer {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for LogBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Sends the current thread's log lines, at every level, to a buffer
    /// until the returned guard is dropped.
    pub fn capture_logs() -> (tracing::subscriber::DefaultGuard, LogBuffer) {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (tracing::subscriber::set_default(subscriber), buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_admits_once_per_interval() {
        let limiter = LogLimiter::new(Duration::from_secs(60));
        let start = Instant::now();

        assert_eq!(limiter.admit_at(start), Some(0));
        assert_eq!(limiter.admit_at(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit_at(start + Duration::from_secs(59)), None);
        assert_eq!(limiter.admit_at(start + Duration::from_secs(60)), Some(2));
        assert_eq!(limiter.admit_at(start + Duration::from_secs(61)), None);
        assert_eq!(limiter.admit_at(start + Duration::from_secs(200)), Some(1));
    }
}
