//! Per-module logs: a bounded ring of the lines each module version wrote
//! (stdout, stderr, `berth:base/log`), and a base-wide feed for followers.
//!
//! The ring keeps the last [`RING_LINES`] lines per version, so a chatty
//! module can never grow the base's memory; `berth logs --follow` reads the
//! ring, then the live feed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_api::{LogEntry, LogStream};
use berth_runtime::{LogLine, LogSink, LogSource};
use tokio::sync::broadcast;

/// Lines kept per module version.
pub const RING_LINES: usize = 1000;

/// The live feed of every module's lines.
#[derive(Clone)]
pub struct LogHub {
    feed: broadcast::Sender<Arc<(SystemTime, LogEntry)>>,
}

impl Default for LogHub {
    fn default() -> Self {
        Self {
            feed: broadcast::channel(4096).0,
        }
    }
}

impl LogHub {
    /// A new follower of every line written from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<(SystemTime, LogEntry)>> {
        self.feed.subscribe()
    }
}

/// The ring of one module version; the runtime hands it every line.
pub struct ModuleLogs {
    module: String,
    version: String,
    ring: Mutex<VecDeque<(SystemTime, LogEntry)>>,
    hub: LogHub,
}

impl ModuleLogs {
    /// An empty ring for `module@version` feeding `hub`.
    pub fn new(module: &str, version: &str, hub: &LogHub) -> Self {
        Self {
            module: module.into(),
            version: version.into(),
            ring: Mutex::default(),
            hub: hub.clone(),
        }
    }

    /// The lines written at or after `since` (all when `None`), oldest first.
    pub fn lines(&self, since: Option<SystemTime>) -> Vec<(SystemTime, LogEntry)> {
        let ring = self.ring.lock().expect("log ring lock");
        ring.iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .cloned()
            .collect()
    }
}

impl LogSink for ModuleLogs {
    fn line(&self, line: LogLine) {
        let now = SystemTime::now();
        let (stream, level) = match line.source {
            LogSource::Stdout => (LogStream::Stdout, "info"),
            LogSource::Stderr => (LogStream::Stderr, "error"),
            LogSource::Log(level) => (LogStream::Log, level),
        };
        let entry = LogEntry {
            at: humantime::format_rfc3339_millis(now).to_string(),
            module: self.module.clone(),
            version: self.version.clone(),
            request_id: line.request_id,
            stream,
            level: level.into(),
            message: line.message,
        };
        {
            let mut ring = self.ring.lock().expect("log ring lock");
            if ring.len() >= RING_LINES {
                ring.pop_front();
            }
            ring.push_back((now, entry.clone()));
        }
        // No followers is fine.
        let _ = self.hub.feed.send(Arc::new((now, entry)));
    }
}

/// Parses `since` as a duration ago (`5m`, `30s`) into a time.
pub fn since(ago: &str) -> Result<SystemTime, String> {
    let ago: Duration = humantime::parse_duration(ago)
        .map_err(|e| format!("since `{ago}` is not a duration like 30s or 5m: {e}"))?;
    Ok(SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH))
}
