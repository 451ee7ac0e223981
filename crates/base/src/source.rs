//! Getting an artifact's bytes, and only from where the operator allows:
//! a path under an allowed directory (`--artifact-dir`), an http(s) URL
//! whose host the policy accepts (`--artifact-host`; loopback, link-local
//! and private addresses only when named explicitly), or the body of the
//! install request. Each failure says where the bytes were looked for and
//! what to do instead, and never echoes the bytes it got.
//!
//! A path is canonicalized (symlinks and `..` resolved) before the check,
//! and the canonical path is what is read. A URL's host is resolved, every
//! address checked, and the download pinned to those addresses (no second
//! lookup can rebind it); redirects are followed by hand, each hop checked
//! the same way. When the base trusts signing keys, the detached signature
//! beside the artifact (`FILE.wasm.sig`, `URL.sig`) is fetched under the
//! same rules.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;

use crate::config::BaseConfig;
use crate::error::{BaseError, OpsError};

/// Where an install's bytes come from.
pub(crate) enum Source {
    /// A file on the base's machine.
    Path(String),
    /// An `http://` or `https://` URL.
    Url(String),
    /// Uploaded as the request body.
    Upload(Bytes),
}

/// Largest detached signature read (a signature is 89 bytes of base64).
const MAX_SIGNATURE: usize = 4096;
/// Most redirects followed for one download.
const MAX_REDIRECTS: usize = 5;

impl Source {
    /// A short description for messages (`file ./x.wasm`, `https://…`, `the uploaded body`).
    pub fn describe(&self) -> String {
        match self {
            Source::Path(p) => format!("file {p}"),
            Source::Url(u) => u.clone(),
            Source::Upload(_) => "the uploaded body".into(),
        }
    }
}

/// An artifact's bytes and, when it has one, its detached signature.
pub(crate) struct Fetched {
    /// The artifact.
    pub bytes: Bytes,
    /// The `.sig` text beside it, if asked for and present.
    pub signature: Option<String>,
}

/// The base's artifact sources: allowed directories and hosts, limits.
pub(crate) struct Sources {
    /// Canonical allowed directories.
    dirs: Vec<PathBuf>,
    /// `--artifact-host` entries, lowercased.
    hosts: Vec<String>,
    /// Hosts allowed whatever their address (the controller's).
    implicit: Vec<String>,
    /// The controllers' `host:port`s and their join token: sent as a
    /// bearer token to those origins only, never to another host.
    controller_token: Option<(Vec<String>, String)>,
    max: usize,
    timeout: Duration,
}

impl Sources {
    /// The sources `config` allows; an allowed directory that does not
    /// exist is an error at start, not a surprise at install.
    pub fn new(config: &BaseConfig) -> Result<Self, BaseError> {
        let dirs = config
            .artifact_dirs
            .iter()
            .map(|dir| {
                std::fs::canonicalize(dir).map_err(|e| BaseError::ArtifactDir {
                    dir: dir.display().to_string(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every controller of the link's list (the base fails over between
        // them, and fetches artifacts from whichever answers).
        let implicit = config
            .controller
            .as_ref()
            .and_then(|link| berth_api::failover::Controllers::parse(&link.url).ok())
            .map(|controllers| {
                controllers
                    .urls()
                    .iter()
                    .filter_map(|u| reqwest::Url::parse(u).ok())
                    .filter_map(|url| url.host_str().map(|h| h.to_ascii_lowercase()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            dirs,
            hosts: config
                .artifact_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            implicit,
            controller_token: config.controller.as_ref().and_then(|link| {
                let token = link.join_token.clone()?;
                let origins = berth_api::failover::Controllers::parse(&link.url)
                    .ok()?
                    .urls()
                    .iter()
                    .filter_map(|u| reqwest::Url::parse(u).ok())
                    .filter_map(|u| origin(&u))
                    .collect();
                Some((origins, token))
            }),
            max: config.max_artifact_bytes,
            timeout: config.fetch_timeout,
        })
    }

    /// Reads or downloads the bytes, refusing more than the base's limit;
    /// with `want_signature`, also the detached `.sig` beside a path or URL.
    pub async fn fetch(&self, source: Source, want_signature: bool) -> Result<Fetched, OpsError> {
        match source {
            Source::Upload(bytes) => Ok(Fetched {
                bytes,
                signature: None,
            }),
            Source::Path(path) => {
                let file = self.allowed_path(&path)?;
                let bytes = read_path(&file, &path, self.max).await?;
                let signature = if want_signature {
                    self.signature_beside(&file).await?
                } else {
                    None
                };
                Ok(Fetched { bytes, signature })
            }
            Source::Url(url) => {
                let bytes = self.download(&url, self.max).await?;
                let signature = if want_signature {
                    self.download_optional(&format!("{url}.sig")).await?
                } else {
                    None
                };
                Ok(Fetched { bytes, signature })
            }
        }
    }

    /// The canonical form of `path` if it lies under an allowed directory.
    fn allowed_path(&self, path: &str) -> Result<PathBuf, OpsError> {
        let given = Path::new(path);
        let canonical = match std::fs::canonicalize(given) {
            Ok(canonical) => canonical,
            Err(e) => {
                // Say "not found" only inside the allowed directories: outside
                // them, whether a file exists is not this API's to tell.
                let lexical = lexical_absolute(given);
                if self.dirs.iter().any(|dir| lexical.starts_with(dir)) {
                    return Err(OpsError::ArtifactNotFound(format!(
                        "cannot read artifact file `{path}` on the base's machine: {e}. Paths are resolved by the base, \
                         not the client: pass an absolute path the base can read, or upload the file \
                         from where it is: `berth deploy FILE.wasm`"
                    )));
                }
                return Err(self.outside(path));
            }
        };
        if self.dirs.iter().any(|dir| canonical.starts_with(dir)) {
            Ok(canonical)
        } else {
            Err(self.outside(path))
        }
    }

    fn outside(&self, path: &str) -> OpsError {
        let allowed = if self.dirs.is_empty() {
            "this base reads artifact files from no directory".to_string()
        } else {
            format!(
                "this base reads artifact files only under {}",
                self.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        OpsError::ArtifactForbidden(format!(
            "artifact file `{path}` is outside the allowed directories: {allowed} (symlinks and `..` \
             are resolved first). Upload the file instead: `berth deploy FILE.wasm`, or start the base \
             with `berth base --artifact-dir DIR` naming the directory that holds it"
        ))
    }

    /// `FILE.sig` beside the canonical `file`, if there is one, read under
    /// the same directory rules.
    async fn signature_beside(&self, file: &Path) -> Result<Option<String>, OpsError> {
        let mut sig = file.as_os_str().to_owned();
        sig.push(".sig");
        let sig = PathBuf::from(sig);
        if tokio::fs::symlink_metadata(&sig).await.is_err() {
            return Ok(None);
        }
        let shown = sig.display().to_string();
        let canonical = self.allowed_path(&shown)?;
        let bytes = read_path(&canonical, &shown, MAX_SIGNATURE).await?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Checks `url` against the host policy; returns it parsed with the
    /// addresses to connect to.
    async fn check_url(&self, url: &str) -> Result<Checked, OpsError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            OpsError::InvalidRequest(format!("artifact.url `{url}` is not a URL: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(OpsError::InvalidRequest(format!(
                "artifact.url `{url}` has scheme `{}`; only http and https are supported \
                 (use artifact.path for a local file)",
                parsed.scheme()
            )));
        }
        let Some(host) = parsed.host_str() else {
            return Err(OpsError::InvalidRequest(format!(
                "artifact.url `{url}` names no host"
            )));
        };
        // IPv6 literals come bracketed.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let grant = self.grant(&host, port);
        if grant == Grant::No {
            return Err(OpsError::ArtifactForbidden(format!(
                "artifact URL {url}: host `{host}` is not one this base downloads from (allowed: {}). \
                 Start the base with `berth base --artifact-host {host}`, or upload the file: \
                 `berth deploy FILE.wasm`",
                self.hosts.join(", ")
            )));
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| {
                    OpsError::ArtifactUnreachable(format!(
                        "cannot download artifact from {url}: cannot resolve `{host}`: {e}. \
                         Check that the URL is right and reachable from the base"
                    ))
                })?
                .collect(),
        };
        if grant != Grant::Explicit
            && let Some(internal) = addrs.iter().find(|a| is_internal(a.ip()))
        {
            return Err(OpsError::ArtifactForbidden(format!(
                "artifact URL {url}: `{host}` resolves to {}, a loopback, link-local or private \
                 address, which this base does not download from unless told to. If that service \
                 is meant to serve artifacts, start the base with `berth base --artifact-host {host}`",
                internal.ip()
            )));
        }
        if addrs.is_empty() {
            return Err(OpsError::ArtifactUnreachable(format!(
                "cannot download artifact from {url}: `{host}` resolves to no address"
            )));
        }
        Ok(Checked {
            from_controller: self.implicit.contains(&host),
            url: parsed,
            addrs,
        })
    }

    /// How `host:port` is allowed.
    fn grant(&self, host: &str, port: u16) -> Grant {
        let with_port = format!("{host}:{port}");
        let bracketed = format!("[{host}]:{port}");
        if self.implicit.iter().any(|h| h == host) {
            return Grant::Explicit;
        }
        if self
            .hosts
            .iter()
            .any(|h| *h == host || *h == with_port || *h == bracketed || *h == format!("[{host}]"))
        {
            return Grant::Explicit;
        }
        if self.hosts.is_empty() || self.hosts.iter().any(|h| h == "*") {
            return Grant::Public;
        }
        let wildcard = self.hosts.iter().any(|h| {
            h.strip_prefix("*.")
                .is_some_and(|suffix| host.ends_with(&format!(".{suffix}")))
        });
        if wildcard { Grant::Public } else { Grant::No }
    }

    /// GETs `url` (following up to [`MAX_REDIRECTS`] redirects, each
    /// checked), refusing a body over `max` bytes. `Ok(None)` on 404 when
    /// `optional`.
    async fn get(&self, url: &str, max: usize, optional: bool) -> Result<Option<Bytes>, OpsError> {
        let unreachable = |reason: String| {
            OpsError::ArtifactUnreachable(format!(
                "cannot download artifact from {url}: {reason}. Check that the URL is right and reachable from the base"
            ))
        };
        let mut next = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let Checked {
                url: parsed,
                addrs,
                from_controller,
            } = self.check_url(&next).await?;
            let mut builder = berth_api::tls::with_trusted_ca(reqwest::Client::builder())
                .redirect(reqwest::redirect::Policy::none())
                .timeout(self.timeout)
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("berth-base/", env!("CARGO_PKG_VERSION")));
            if let Some(domain) = parsed.host_str()
                && domain.parse::<IpAddr>().is_err()
                && !domain.starts_with('[')
            {
                builder = builder.resolve_to_addrs(domain, &addrs);
            }
            let client = builder
                .build()
                .map_err(|e| unreachable(format!("cannot build an HTTP client: {e}")))?;
            let mut request = client.get(parsed.clone());
            if let Some((origins, token)) = &self.controller_token
                && origin(&parsed).is_some_and(|o| origins.contains(&o))
            {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| {
                        unreachable(format!("the server answered {status} with no Location"))
                    })?;
                next = parsed
                    .join(location)
                    .map_err(|e| unreachable(format!("bad redirect: {e}")))?
                    .to_string();
                continue;
            }
            if optional && status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                // The controller's own error says why (the artifact vanished
                // from its source, …); another server's body is not echoed.
                if from_controller && let Ok(body) = response.json::<berth_api::ErrorBody>().await {
                    return Err(OpsError::ArtifactNotFound(format!(
                        "the controller cannot serve artifact {url}: {} ({})",
                        body.error.message, body.error.code
                    )));
                }
                return Err(unreachable(format!("the server answered {status}")));
            }
            let announced = response.content_length().unwrap_or(0);
            if announced > max as u64 {
                return Err(too_large(url, announced, max));
            }
            // Sized from the announced length (within the limit), as an
            // upload is: one buffer, no regrowth copies of a large artifact.
            let mut body = Vec::with_capacity(announced as usize);
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| unreachable(error_chain(&e)))?;
                if body.len() + chunk.len() > max {
                    return Err(too_large(url, (body.len() + chunk.len()) as u64, max));
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Some(body.into()));
        }
        Err(unreachable(format!("more than {MAX_REDIRECTS} redirects")))
    }

    async fn download(&self, url: &str, max: usize) -> Result<Bytes, OpsError> {
        Ok(self.get(url, max, false).await?.unwrap_or_default())
    }

    async fn download_optional(&self, url: &str) -> Result<Option<String>, OpsError> {
        Ok(self
            .get(url, MAX_SIGNATURE, true)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// `host:port` of `url` (the scheme's default port when it names none).
fn origin(url: &reqwest::Url) -> Option<String> {
    Some(format!(
        "{}:{}",
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?
    ))
}

/// A URL that passed the host policy.
struct Checked {
    url: reqwest::Url,
    /// The addresses to connect to (resolved once, checked).
    addrs: Vec<SocketAddr>,
    /// Whether it is the controller's (trusted to explain its errors).
    from_controller: bool,
}

/// How a URL's host is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Not at all.
    No,
    /// Only at public addresses.
    Public,
    /// Named explicitly: at any address.
    Explicit,
}

/// Loopback, private, link-local, shared, unspecified, broadcast or
/// multicast: addresses inside the machine or its network.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// `path` made absolute against the current directory, with `.` and `..`
/// removed without touching the file system.
fn lexical_absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Reads the canonical `file` (named `shown` in messages), at most `max` bytes.
async fn read_path(file: &Path, shown: &str, max: usize) -> Result<Bytes, OpsError> {
    let meta = tokio::fs::metadata(file).await.map_err(|e| {
        OpsError::ArtifactNotFound(format!(
            "cannot read artifact file `{shown}` on the base's machine: {e}. Paths are resolved by the base, \
             not the client: pass an absolute path the base can read, or upload the file \
             from where it is: `berth deploy FILE.wasm`"
        ))
    })?;
    if !meta.is_file() {
        return Err(OpsError::ArtifactNotFound(format!(
            "artifact path `{shown}` is not a regular file; point it at the module's .wasm file"
        )));
    }
    if meta.len() > max as u64 {
        return Err(too_large(&format!("file {shown}"), meta.len(), max));
    }
    let bytes = tokio::fs::read(file).await.map_err(|e| {
        OpsError::ArtifactNotFound(format!("cannot read artifact file `{shown}`: {e}"))
    })?;
    Ok(bytes.into())
}

pub(crate) fn too_large(what: &str, len: u64, max: usize) -> OpsError {
    OpsError::PayloadTooLarge(format!(
        "artifact from {what} is {len} bytes or more, above this base's limit of {max} bytes; \
         build the module in release mode, or raise the base's --max-artifact-bytes"
    ))
}

/// `e` and its sources, joined (reqwest hides the useful part in the chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn hosts_are_granted_by_the_list() {
        let mut config = BaseConfig::new("unused");
        let open = Sources::new(&config).unwrap();
        assert_eq!(open.grant("example.com", 443), Grant::Public);
        config.artifact_hosts = vec![
            "artifacts.example.com".into(),
            "*.cdn.example".into(),
            "127.0.0.1:8000".into(),
        ];
        let listed = Sources::new(&config).unwrap();
        assert_eq!(listed.grant("artifacts.example.com", 443), Grant::Explicit);
        assert_eq!(listed.grant("eu.cdn.example", 443), Grant::Public);
        assert_eq!(listed.grant("cdn.example", 443), Grant::No);
        assert_eq!(listed.grant("example.com", 443), Grant::No);
        assert_eq!(listed.grant("127.0.0.1", 8000), Grant::Explicit);
        assert_eq!(listed.grant("127.0.0.1", 8001), Grant::No);
    }

    #[test]
    fn lexical_paths_drop_dot_dot() {
        assert_eq!(
            lexical_absolute(Path::new("/a/b/../../etc/shadow")),
            PathBuf::from("/etc/shadow")
        );
    }
}
