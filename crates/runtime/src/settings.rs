//! What one installed module version may use: its limits and its grants.
//!
//! Settings are chosen per module at install (with base-wide defaults) and
//! travel with the [`LoadedModule`](crate::LoadedModule): every request's
//! `Store` is built from them. Capabilities are deny-by-default: no
//! filesystem, no environment variables, no outgoing network except the
//! hosts listed in `allowed_hosts`, and calls to other modules
//! (`http://NAME.berth/…`), which never leave the process.

use std::collections::BTreeMap;
use std::time::Duration;

/// Resource limits of one module version (base-wide defaults live in
/// [`RuntimeConfig::limits`](crate::RuntimeConfig::limits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory one instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Wall-clock deadline of one request's guest execution.
    pub timeout: Duration,
    /// Requests this version serves at once; more get 503 with `Retry-After`.
    pub max_concurrency: u32,
    /// Largest request body the module is handed, in bytes (413 beyond).
    pub max_request_bytes: u64,
    /// Largest response body the module may send, in bytes (the response
    /// is cut off beyond).
    pub max_response_bytes: u64,
    /// CPU share, in thousandths of a core (500: half a core), measured as
    /// the time its requests spend inside guest code; `None`: no share.
    /// Over it, its requests are delayed (`crates/runtime/src/cpu.rs`).
    pub cpu_millis: Option<u32>,
    /// How long a request of a module over its CPU share may wait for its
    /// turn before it is answered 503 with `Retry-After`.
    pub cpu_queue_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 128 << 20,
            timeout: Duration::from_secs(30),
            max_concurrency: 256,
            max_request_bytes: 16 << 20,
            max_response_bytes: 64 << 20,
            cpu_millis: None,
            cpu_queue_wait: Duration::from_secs(1),
        }
    }
}

/// Limits and grants of one module version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSettings {
    /// Module name (the key-value namespace, the log tag).
    pub name: String,
    /// Module version (the log tag).
    pub version: String,
    /// Resource limits.
    pub limits: Limits,
    /// Hosts outgoing HTTP may reach: `api.example.com`, `*.example.com`,
    /// `127.0.0.1:8080` (host and port), or `*` for any. Empty: none.
    pub allowed_hosts: Vec<String>,
    /// Values the module reads through `berth:base/config`.
    pub config: BTreeMap<String, String>,
    /// Whether each request gets a fresh instance (the default) or warm
    /// instances are reused.
    pub policy: InstancePolicy,
}

/// How a module version's requests get their instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstancePolicy {
    /// A new instance per request, dropped with it: nothing a request
    /// leaves behind is seen by the next. The default and berth's promise.
    #[default]
    Fresh,
    /// Warm instances reused one request at a time, each for at most
    /// `max_requests` requests and `max_idle` between two; discarded on a
    /// trap, a limit hit, or when the version stops serving
    /// (`crates/runtime/src/instances.rs`).
    Pooled {
        /// Requests one instance serves before it is dropped.
        max_requests: u32,
        /// Longest an idle instance is kept.
        max_idle: Duration,
    },
}

impl ModuleSettings {
    /// Whether outgoing HTTP to `host` (and `port`) is granted.
    pub fn allows_host(&self, host: &str, port: Option<u16>) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.allowed_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            if pattern == "*" {
                return true;
            }
            let (pattern_host, pattern_port) = match pattern.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => {
                    (h.to_string(), p.parse().ok())
                }
                _ => (pattern.clone(), None),
            };
            let host_ok = match pattern_host.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => host == pattern_host,
            };
            host_ok && pattern_port.is_none_or(|p| Some(p) == port)
        })
    }
}

/// The longest chain of module-to-module calls; a call beyond it is
/// answered 508 Loop Detected, which cuts cycles.
pub const MAX_HOPS: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn with_hosts(hosts: &[&str]) -> ModuleSettings {
        ModuleSettings {
            name: "m".into(),
            version: "1".into(),
            limits: Limits::default(),
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            config: BTreeMap::new(),
            policy: InstancePolicy::Fresh,
        }
    }

    #[test]
    fn host_grants_match_exactly_by_wildcard_or_with_port() {
        let s = with_hosts(&["api.example.com", "*.internal", "127.0.0.1:8080"]);
        assert!(s.allows_host("API.example.com", Some(443)));
        assert!(!s.allows_host("evil.example.com", None));
        assert!(s.allows_host("db.internal", None));
        assert!(!s.allows_host("internal", None));
        assert!(s.allows_host("127.0.0.1", Some(8080)));
        assert!(!s.allows_host("127.0.0.1", Some(9090)));
        assert!(!with_hosts(&[]).allows_host("example.com", None));
        assert!(with_hosts(&["*"]).allows_host("anything", Some(1)));
    }
}
