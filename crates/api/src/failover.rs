//! The client side of several controllers: a list of controller URLs
//! (`--controller a:1239,b:1239,c:1239`) and a request that goes to the
//! one that answered last and fails over to the next when it is down.
//!
//! Every controller serves reads and takes writes (a follower forwards
//! them to the leader), so any live one will do. A controller that cannot
//! be connected to, or that answers 503 (a follower that knows no leader
//! yet, or whose leader does not answer), is skipped; the first other
//! answer is the answer, and that controller is asked first next time.
//! Only requests that never reached a controller, or that one refused
//! with 503, are sent again, so a write is never applied twice.
//!
//! The CLI, the bases' agent and the gateway all talk to the controller
//! through [`Controllers`].

use std::sync::atomic::{AtomicUsize, Ordering};

/// Why [`Controllers`] could not be built or no controller answered.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// An entry of the list is not a URL.
    #[error(
        "`{given}` is not a controller address; pass HOST:PORT or http://HOST:PORT, several separated by commas (e.g. --controller 10.0.0.5:1239,10.0.0.6:1239)"
    )]
    BadUrl {
        /// The entry.
        given: String,
    },
    /// No controller could be reached.
    #[error("no controller answers at {}{}", .tried.iter().map(|(url, _)| url.as_str()).collect::<Vec<_>>().join(", "), describe(.tried))]
    Unreachable {
        /// Each URL tried, with why it failed.
        tried: Vec<(String, String)>,
    },
}

fn describe(tried: &[(String, String)]) -> String {
    let why: Vec<String> = tried
        .iter()
        .map(|(url, why)| format!("{url}: {why}"))
        .collect();
    format!(" ({})", why.join("; "))
}

/// A list of controllers and the one to ask first.
#[derive(Debug)]
pub struct Controllers {
    urls: Vec<String>,
    preferred: AtomicUsize,
    http: reqwest::Client,
}

impl Clone for Controllers {
    fn clone(&self) -> Self {
        Self {
            urls: self.urls.clone(),
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            http: self.http.clone(),
        }
    }
}

impl Controllers {
    /// The controllers in `list` (comma separated; `http://` is added to
    /// an entry without a scheme), with a default HTTP client.
    pub fn parse(list: &str) -> Result<Self, FailoverError> {
        let http = crate::tls::with_trusted_ca(reqwest::Client::builder())
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()
            .expect("an HTTP client");
        Self::parse_with(list, http)
    }

    /// The controllers in `list`, called with a default HTTP client that
    /// sends `token` as `Authorization: Bearer …` ([`crate::auth`]).
    pub fn with_token(list: &str, token: Option<&str>) -> Result<Self, FailoverError> {
        let http = crate::tls::with_trusted_ca(reqwest::Client::builder())
            .connect_timeout(std::time::Duration::from_secs(3))
            .default_headers(crate::auth::bearer_headers(token))
            .build()
            .expect("an HTTP client");
        Self::parse_with(list, http)
    }

    /// The controllers in `list`, called with `http`.
    pub fn parse_with(list: &str, http: reqwest::Client) -> Result<Self, FailoverError> {
        let mut urls = Vec::new();
        for given in list.split(',').map(str::trim) {
            let url = if given.contains("://") {
                given.to_string()
            } else {
                format!("http://{given}")
            };
            let parsed = reqwest::Url::parse(&url).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https") && u.host().is_some() && !given.is_empty()
            });
            if parsed.is_none() {
                return Err(FailoverError::BadUrl {
                    given: given.into(),
                });
            }
            urls.push(url.trim_end_matches('/').to_string());
        }
        Ok(Self {
            urls,
            preferred: AtomicUsize::new(0),
            http,
        })
    }

    /// Every controller, as given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The controller asked first (the last that answered).
    pub fn current(&self) -> &str {
        &self.urls[self.preferred.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// The list as given, for messages (`a, b, c`).
    pub fn describe(&self) -> String {
        self.urls.join(", ")
    }

    /// Sends the request `build` makes for a controller URL (no trailing
    /// slash) to the current controller, then to each other one, until one
    /// answers other than 503; returns that answer (or the last 503 when
    /// every controller refused) and remembers who gave it.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, FailoverError> {
        let first = self.preferred.load(Ordering::Relaxed) % self.urls.len();
        let mut tried = Vec::new();
        let mut refused = None;
        for i in (0..self.urls.len()).map(|k| (first + k) % self.urls.len()) {
            let url = &self.urls[i];
            match build(&self.http, url).send().await {
                Ok(answer) if answer.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    tried.push((url.clone(), "503 Service Unavailable".to_string()));
                    refused = Some(answer);
                }
                Ok(answer) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) if e.is_connect() || e.is_builder() => {
                    tried.push((url.clone(), connect_error(&e)));
                }
                Err(e) => {
                    // It reached a controller that may have acted on it:
                    // never send it again.
                    return Err(FailoverError::Unreachable {
                        tried: vec![(url.clone(), e.to_string())],
                    });
                }
            }
        }
        match refused {
            Some(answer) => Ok(answer),
            None => Err(FailoverError::Unreachable { tried }),
        }
    }
}

/// The innermost cause of a connect error ("connection refused").
fn connect_error(e: &reqwest::Error) -> String {
    if let Some(hint) = crate::tls::untrusted_hint(e) {
        return hint;
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_with_schemes_added_and_a_bad_entry_is_named() {
        let c = Controllers::parse("127.0.0.1:1239, http://h2:1239/,https://h3").unwrap();
        assert_eq!(
            c.urls(),
            ["http://127.0.0.1:1239", "http://h2:1239", "https://h3"]
        );
        assert_eq!(c.current(), "http://127.0.0.1:1239");
        for bad in ["a:1,", "ftp://x", "a:1,,b:2"] {
            let err = Controllers::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not a controller address"), "{bad}: {err}");
            assert!(err.contains("separated by commas"), "{bad}: {err}");
        }
    }
}
