//! Routing: which module serves a request, by host and path prefix.
//!
//! A route is an optional host plus a path prefix (default `/`). A request
//! matches a route when its `Host` (port ignored, case-insensitive) equals
//! the route's host, or the route has none, and its path equals the prefix or
//! continues it at a `/` boundary (`/hello` matches `/hello` and `/hello/x`,
//! not `/helloworld`). Among matches, a route with a host beats one without,
//! then the longest prefix wins, so routes may nest (`/shop` and
//! `/shop/cart`). Two modules may never claim the same host and prefix.
//!
//! A [`RouteTable`] is immutable: its owner builds a new one for every
//! change and swaps it in, so a request sees either the old or the new set,
//! never half. The base keys it by installed module, the gateway by
//! deployment; both match with this one function.

use berth_api::Route;

/// Routes, most specific first, each with what it leads to.
#[derive(Debug)]
pub struct RouteTable<T> {
    entries: Vec<(Option<String>, String, T)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// A table of `(route, value)` pairs (routes as [`normalize`] leaves them).
    pub fn new(routes: impl IntoIterator<Item = (Route, T)>) -> Self {
        let mut entries: Vec<(Option<String>, String, T)> = routes
            .into_iter()
            .map(|(route, value)| {
                (
                    route.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    route.prefix().to_string(),
                    value,
                )
            })
            .collect();
        // Most specific first: host-bound routes, then longer prefixes.
        entries.sort_by(|a, b| {
            b.0.is_some()
                .cmp(&a.0.is_some())
                .then(b.1.len().cmp(&a.1.len()))
        });
        Self { entries }
    }

    /// The values, most specific route first.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, _, value)| value)
    }

    /// The value at `index` of [`RouteTable::values`].
    pub fn get(&self, index: usize) -> Option<&T> {
        self.entries.get(index).map(|(_, _, value)| value)
    }

    /// The value for a request to `host` (may include a port) and `path`.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&T> {
        let host = host.map(strip_port);
        self.entries
            .iter()
            .find(|(want, prefix, _)| {
                let host_ok = match (want, host) {
                    (None, _) => true,
                    (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                    (Some(_), None) => false,
                };
                host_ok && path_matches(prefix, path)
            })
            .map(|(_, _, value)| value)
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
    fn host_routes_then_longer_prefixes_win() {
        let route = |host: Option<&str>, prefix: &str| Route {
            host: host.map(str::to_string),
            path_prefix: Some(prefix.to_string()),
        };
        let table = RouteTable::new([
            (route(None, "/"), "root"),
            (route(None, "/shop"), "shop"),
            (route(None, "/shop/cart"), "cart"),
            (route(Some("Gold.Example"), "/"), "gold"),
        ]);
        assert_eq!(table.lookup(None, "/shop/cart/1"), Some(&"cart"));
        assert_eq!(table.lookup(Some("x:80"), "/shop/carts"), Some(&"shop"));
        assert_eq!(
            table.lookup(Some("gold.example:8080"), "/shop"),
            Some(&"gold")
        );
        assert_eq!(table.lookup(None, "/other"), Some(&"root"));
        assert_eq!(RouteTable::<()>::default().lookup(None, "/"), None);
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
