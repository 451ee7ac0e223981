//! The audit log: one JSON line per state-changing API call (who, what,
//! on what, with which result, under which request id), appended to
//! `<data-dir>/audit.log` by every berth server and read back by
//! `berth audit`.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The audit log's file name in a server's data directory.
pub const AUDIT_FILE: &str = "audit.log";

/// One audited call, as a line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Position in the log (0 is the first line ever written).
    pub seq: u64,
    /// When the call was answered (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The name of the token that made it (`anonymous` on a server
    /// running without authentication, `-` when no known token was sent).
    pub who: String,
    /// The method and path, e.g. `POST /v1/apply`.
    pub action: String,
    /// What it acted on (the module, deployment, base, … the path names),
    /// empty when the path names nothing.
    pub target: String,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// The request id (`x-request-id`), as sent or as given by the server.
    pub request_id: String,
}

/// The answer of the audit endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditList {
    /// Records, oldest first.
    pub records: Vec<AuditRecord>,
}

/// An append-only audit log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<(std::fs::File, u64)>,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`; new records are
    /// numbered after the ones already there.
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        let lines = std::io::BufReader::new(&file).lines().count() as u64;
        Ok(Self {
            path,
            file: Mutex::new((file, lines)),
        })
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (failures are logged, never fail the call).
    pub fn append(&self, who: &str, action: &str, target: &str, status: u16, request_id: &str) {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let record = AuditRecord {
            seq: guard.1,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            who: who.into(),
            action: action.into(),
            target: target.into(),
            status,
            request_id: request_id.into(),
        };
        let mut line = serde_json::to_string(&record).expect("a record serializes");
        line.push('\n');
        match guard.0.write_all(line.as_bytes()) {
            Ok(()) => guard.1 += 1,
            Err(e) => tracing_free_warning(&self.path, &e),
        }
    }

    /// The records at or after `since` and numbered above `after`.
    pub fn read(
        &self,
        since: Option<SystemTime>,
        after: Option<u64>,
    ) -> std::io::Result<Vec<AuditRecord>> {
        read_file(&self.path, since, after)
    }
}

/// The records of the log file at `path` at or after `since` and numbered
/// above `after` (a missing file has none); lines that do not parse are
/// skipped.
pub fn read_file(
    path: &Path,
    since: Option<SystemTime>,
    after: Option<u64>,
) -> std::io::Result<Vec<AuditRecord>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let Ok(record) = serde_json::from_str::<AuditRecord>(&line?) else {
            continue;
        };
        if after.is_some_and(|after| record.seq <= after) {
            continue;
        }
        if let Some(since) = since
            && humantime::parse_rfc3339_weak(&record.time).is_ok_and(|at| at < since)
        {
            continue;
        }
        records.push(record);
    }
    Ok(records)
}

/// `since` as `berth audit --since` takes it: a duration back from now
/// (`10m`) or an RFC 3339 time.
pub fn parse_since(given: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(given) {
        return Ok(SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(given).map_err(|_| {
        format!(
            "`{given}` is neither a duration (e.g. 10m, 2h) nor a time (e.g. 2026-01-31T12:00:00Z)"
        )
    })
}

/// The api crate has no logger; a failed audit write goes to stderr.
fn tracing_free_warning(path: &Path, e: &std::io::Error) {
    eprintln!(
        "warning: cannot append to the audit log {}: {e}",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_numbered_across_reopens_and_filtered() {
        let dir = tempfile_dir();
        let path = dir.join(AUDIT_FILE);
        let log = AuditLog::open(&path).unwrap();
        log.append("admin", "POST /v1/apply", "", 200, "r1");
        log.append("ci", "DELETE /v1/deployments/x", "x", 403, "r2");
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.append("admin", "POST /v1/apply", "", 422, "r3");
        let all = log.read(None, None).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(all[1].who, "ci");
        assert_eq!(all[1].status, 403);
        assert_eq!(log.read(None, Some(1)).unwrap().len(), 1);
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(log.read(Some(later), None).unwrap().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(parse_since("10m").is_ok());
        assert!(parse_since("2026-01-31T12:00:00Z").is_ok());
        assert!(parse_since("yesterday").unwrap_err().contains("neither"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "berth-audit-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
