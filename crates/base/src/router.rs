//! Routing: which installed module serves a request, by host and path prefix.
//!
//! A route is an optional host plus a path prefix (default `/`). A request
//! matches a route when its `Host` (port ignored, case-insensitive) equals
//! the route's host, or the route has none, and its path equals the prefix or
//! continues it at a `/` boundary (`/hello` matches `/hello` and `/hello/x`,
//! not `/helloworld`). Among matches, a route with a host beats one without,
//! then the longest prefix wins, so routes may nest (`/shop` and
//! `/shop/cart`). Two modules may never claim the same host and prefix.
//!
//! The table is immutable: every install or uninstall builds a new one and
//! swaps it in, so a request sees either the old or the new set, never half.

use std::sync::Arc;

use berth_api::Route;
use berth_runtime::LoadedModule;

use crate::rules::{CompiledRules, RequestView};
use crate::stats::VersionStats;

/// The module a request goes to.
#[derive(Clone)]
pub struct Target {
    /// `name@version`, for logs and the `x-berth-module` header.
    pub label: Arc<str>,
    /// The module to run.
    pub module: LoadedModule,
    /// Its request counters.
    pub stats: Arc<VersionStats>,
}

/// A module's compiled rules with the targets their version indices name.
#[derive(Clone)]
pub struct Rules {
    /// The rules.
    pub compiled: Arc<CompiledRules>,
    /// `targets[i]` serves `compiled.versions()[i]`.
    pub targets: Vec<Target>,
}

/// One module's place in the table.
pub struct Entry {
    name: String,
    host: Option<String>,
    prefix: String,
    default: Target,
    rules: Option<Rules>,
}

impl Entry {
    /// The module's path prefix (`/` when it has none).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The version that serves `request`: chosen by the rules, else the default.
    pub fn select(&self, request: &RequestView<'_>) -> &Target {
        self.rules
            .as_ref()
            .and_then(|rules| rules.compiled.choose(request).map(|i| &rules.targets[i]))
            .unwrap_or(&self.default)
    }
}

/// An immutable snapshot of all routes.
#[derive(Default)]
pub struct RouteTable {
    entries: Vec<Entry>,
    /// Module name → index in `entries` (for module-to-module calls).
    by_name: std::collections::HashMap<String, usize>,
}

impl RouteTable {
    /// Builds a table from `(module name, route, default target, rules)` per module.
    pub fn new(routes: impl IntoIterator<Item = (String, Route, Target, Option<Rules>)>) -> Self {
        let mut entries: Vec<Entry> = routes
            .into_iter()
            .map(|(name, route, default, rules)| Entry {
                name,
                prefix: route.prefix().to_string(),
                host: route.host.map(|h| h.to_ascii_lowercase()),
                default,
                rules,
            })
            .collect();
        // Most specific first: host-bound routes, then longer prefixes.
        entries.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Self { entries, by_name }
    }

    /// The entry of module `name` (for a call to `http://NAME.berth/`).
    pub fn by_name(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The module entry for a request to `host` (may include a port) and `path`.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Entry> {
        let host = host.map(strip_port);
        self.entries.iter().find(|entry| {
            let host_ok = match (&entry.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_ok && path_matches(&entry.prefix, path)
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether `path` is `prefix` or lies below it at a `/` boundary.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Normalises and checks a route from an install request: the prefix must
/// start with `/` and loses a trailing `/`; the host is lowercased and must
/// be a plain host name.
pub fn normalize(route: Route) -> Result<Route, String> {
    let path_prefix = match route.path_prefix {
        None => None,
        Some(p) => {
            if !p.starts_with('/') {
                return Err(format!(
                    "route.pathPrefix `{p}` must start with `/` (e.g. `/{p}`)"
                ));
            }
            if p.contains(['?', '#', ' ']) || p.contains("//") {
                return Err(format!(
                    "route.pathPrefix `{p}` must be a plain path: no `?`, `#`, spaces or `//`"
                ));
            }
            let trimmed = p.trim_end_matches('/');
            Some(if trimmed.is_empty() {
                "/".to_string()
            } else {
                trimmed.to_string()
            })
        }
    };
    let host = match route.host {
        None => None,
        Some(h) => {
            let h = h.to_ascii_lowercase();
            let valid = !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !valid {
                return Err(format!(
                    "route.host `{h}` is not a host name: use letters, digits, `-` and `.` only, without scheme or port"
                ));
            }
            Some(h)
        }
    };
    Ok(Route { host, path_prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(path_matches("/hello", "/hello"));
        assert!(path_matches("/hello", "/hello/x/y"));
        assert!(!path_matches("/hello", "/helloworld"));
        assert!(!path_matches("/hello", "/"));
        assert!(path_matches("/", "/anything"));
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn routes_are_normalised_or_refused() {
        let r = normalize(Route {
            host: Some("Shop.Example".into()),
            path_prefix: Some("/a/".into()),
        })
        .unwrap();
        assert_eq!(r.host.as_deref(), Some("shop.example"));
        assert_eq!(r.prefix(), "/a");
        assert!(
            normalize(Route {
                host: None,
                path_prefix: Some("a".into())
            })
            .is_err()
        );
        assert!(
            normalize(Route {
                host: Some("http://x".into()),
                path_prefix: None
            })
            .is_err()
        );
        assert_eq!(
            normalize(Route {
                host: None,
                path_prefix: Some("/".into())
            })
            .unwrap()
            .prefix(),
            "/"
        );
    }
}
