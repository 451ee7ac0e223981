//! Getting an artifact's bytes: a path on the base's machine, an http(s)
//! URL, or the body of the install request. Each failure says where the
//! bytes were looked for and what to do instead.

use bytes::Bytes;
use futures::StreamExt as _;

use crate::error::OpsError;

/// Where an install's bytes come from.
pub(crate) enum Source {
    /// A file on the base's machine.
    Path(String),
    /// An `http://` or `https://` URL.
    Url(String),
    /// Uploaded as the request body.
    Upload(Bytes),
}

impl Source {
    /// A short description for messages (`file ./x.wasm`, `https://…`, `the uploaded body`).
    pub fn describe(&self) -> String {
        match self {
            Source::Path(p) => format!("file {p}"),
            Source::Url(u) => u.clone(),
            Source::Upload(_) => "the uploaded body".into(),
        }
    }

    /// Reads or downloads the bytes, refusing more than `max` bytes.
    pub async fn fetch(self, client: &reqwest::Client, max: usize) -> Result<Bytes, OpsError> {
        match self {
            Source::Upload(bytes) => Ok(bytes),
            Source::Path(path) => read_path(&path, max).await,
            Source::Url(url) => download(client, &url, max).await,
        }
    }
}

async fn read_path(path: &str, max: usize) -> Result<Bytes, OpsError> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| {
        OpsError::ArtifactNotFound(format!(
            "cannot read artifact file `{path}` on the base's machine: {e}. Paths are resolved by the base, \
             not the client: pass an absolute path the base can read, or upload the file \
             from where it is: `berth deploy FILE.wasm`"
        ))
    })?;
    if !meta.is_file() {
        return Err(OpsError::ArtifactNotFound(format!(
            "artifact path `{path}` is not a regular file; point it at the module's .wasm file"
        )));
    }
    if meta.len() > max as u64 {
        return Err(too_large(&format!("file {path}"), meta.len(), max));
    }
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        OpsError::ArtifactNotFound(format!("cannot read artifact file `{path}`: {e}"))
    })?;
    Ok(bytes.into())
}

async fn download(client: &reqwest::Client, url: &str, max: usize) -> Result<Bytes, OpsError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| OpsError::InvalidRequest(format!("artifact.url `{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(OpsError::InvalidRequest(format!(
            "artifact.url `{url}` has scheme `{}`; only http and https are supported \
             (use artifact.path for a local file)",
            parsed.scheme()
        )));
    }
    let unreachable = |reason: String| {
        OpsError::ArtifactUnreachable(format!(
            "cannot download artifact from {url}: {reason}. Check that the URL is right and reachable from the base"
        ))
    };
    let response = client
        .get(parsed)
        .send()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(unreachable(format!("the server answered {status}")));
    }
    if let Some(len) = response.content_length()
        && len > max as u64
    {
        return Err(too_large(url, len, max));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreachable(error_chain(&e)))?;
        if body.len() + chunk.len() > max {
            return Err(too_large(url, (body.len() + chunk.len()) as u64, max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
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
