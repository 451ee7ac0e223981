//! The ops agent: the base's JSON HTTP API (Koupleless' Arklet).
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/v1/health` | liveness and a summary ([`Health`](berth_api::Health)) |
//! | GET | `/metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | GET | `/v1/modules` | every installed version ([`ModuleList`](berth_api::ModuleList)) |
//! | GET | `/v1/modules/{name}` | the versions of one module |
//! | POST | `/v1/modules` | install: JSON [`InstallRequest`], or the `.wasm` as the body with `Content-Type: application/wasm` and `name`, `version`, `pathPrefix`, `host`, `digest`, `signature` as query parameters |
//! | DELETE | `/v1/modules/{name}` | uninstall every version |
//! | DELETE | `/v1/modules/{name}/versions/{version}` | uninstall one version (refused while rules send it traffic) |
//! | POST | `/v1/modules/{name}/switch` | make `{"version"}` the default, atomically |
//! | POST | `/v1/modules/{name}/rollback` | switch back to the previous default |
//! | GET | `/v1/modules/{name}/logs?since=5m&version=V&follow=true` | lines the module wrote (stdout, stderr, `berth:base/log`); `follow` streams NDJSON |
//! | GET, PUT | `/v1/modules/{name}/rules` | the module's [`TrafficRules`], replaced whole |
//! | POST | `/{command}` | Koupleless' Arklet commands (`installBiz`, `queryAllBiz`, …), see [`crate::arklet`] |
//!
//! Every error is JSON `{"error": {"code", "message"}}` with a fitting
//! status: bad requests are rejected before anything is touched, and a
//! failed install leaves the running modules as they were.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use berth_api::{InstallRequest, Route, SwitchRequest, TrafficRules};
use serde::Deserialize;

use crate::base::Base;
use crate::error::OpsError;
use crate::source::too_large;

impl IntoResponse for OpsError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.body())).into_response();
        if let OpsError::TooManyInstalls { .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The ops API router for `base`.
pub fn router(base: Base) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/modules", get(list).post(install))
        .route("/v1/modules/{name}", get(show).delete(uninstall_all))
        .route(
            "/v1/modules/{name}/versions/{version}",
            delete(uninstall_version),
        )
        .route("/v1/modules/{name}/switch", post(switch))
        .route("/v1/modules/{name}/rollback", post(rollback))
        .route("/v1/modules/{name}/rules", get(get_rules).put(put_rules))
        .route("/v1/modules/{name}/logs", get(logs))
        .fallback(not_found)
        // Bodies are size-checked by `install` itself, with a JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(base.clone())
        // Arklet's `POST /<command>` beside the native API.
        .merge(crate::arklet::router(base))
}

async fn health(State(base): State<Base>) -> Response {
    axum::Json(base.health()).into_response()
}

async fn metrics(State(base): State<Base>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        base.metrics_text(),
    )
        .into_response()
}

async fn list(State(base): State<Base>) -> Result<Response, OpsError> {
    Ok(axum::Json(base.list(None)?).into_response())
}

async fn show(State(base): State<Base>, Path(name): Path<String>) -> Result<Response, OpsError> {
    Ok(axum::Json(base.list(Some(&name))?).into_response())
}

async fn uninstall_all(
    State(base): State<Base>,
    Path(name): Path<String>,
) -> Result<Response, OpsError> {
    Ok(axum::Json(base.uninstall(&name, None).await?).into_response())
}

async fn uninstall_version(
    State(base): State<Base>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, OpsError> {
    Ok(axum::Json(base.uninstall(&name, Some(&version)).await?).into_response())
}

async fn switch(
    State(base): State<Base>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, OpsError> {
    let request: SwitchRequest = json_body(body, "the switch request").await?;
    Ok(axum::Json(base.switch(&name, &request.version).await?).into_response())
}

async fn rollback(
    State(base): State<Base>,
    Path(name): Path<String>,
) -> Result<Response, OpsError> {
    Ok(axum::Json(base.rollback(&name).await?).into_response())
}

/// Query of `GET /v1/modules/{name}/logs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    follow: bool,
}

/// The module's recent lines as JSON; with `follow=true`, newline-delimited
/// JSON that keeps streaming new lines until the client disconnects.
async fn logs(
    State(base): State<Base>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, OpsError> {
    let query: LogQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).map_err(|e| {
            OpsError::InvalidRequest(format!(
                "logs query is not valid: {e}; expected since, version, follow"
            ))
        })?;
    let since = query
        .since
        .as_deref()
        .map(crate::logs::since)
        .transpose()
        .map_err(OpsError::InvalidRequest)?;
    // Subscribe before reading the ring, so no line falls between the two.
    let live = query.follow.then(|| base.follow_logs());
    let lines = base.logs(&name, query.version.as_deref(), since)?;
    let Some(live) = live else {
        return Ok(axum::Json(berth_api::LogList { lines }).into_response());
    };
    let version = query.version;
    let backlog = futures::stream::iter(lines.into_iter().map(ndjson));
    let follow = futures::stream::unfold(live, move |mut live| {
        let (name, version) = (name.clone(), version.clone());
        async move {
            loop {
                match live.recv().await {
                    Ok(line) => {
                        let entry = &line.1;
                        if entry.module == name
                            && version.as_ref().is_none_or(|v| *v == entry.version)
                        {
                            return Some((ndjson(entry.clone()), live));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let body = Body::from_stream(futures::StreamExt::chain(backlog, follow));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn ndjson(entry: berth_api::LogEntry) -> Result<bytes::Bytes, std::convert::Infallible> {
    let mut line = serde_json::to_vec(&entry).expect("log entries serialize");
    line.push(b'\n');
    Ok(line.into())
}

async fn get_rules(
    State(base): State<Base>,
    Path(name): Path<String>,
) -> Result<Response, OpsError> {
    Ok(axum::Json(base.rules(&name)?).into_response())
}

async fn put_rules(
    State(base): State<Base>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, OpsError> {
    let rules: TrafficRules = json_body(body, "the rules document").await?;
    Ok(axum::Json(base.set_rules(&name, rules).await?).into_response())
}

/// Reads a small JSON body into `T`, naming `what` on failure.
async fn json_body<T: serde::de::DeserializeOwned>(body: Body, what: &str) -> Result<T, OpsError> {
    let bytes = read_body(body, 1 << 20, what).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OpsError::InvalidRequest(format!("{what} is not valid: {e}")))
}

async fn not_found() -> OpsError {
    OpsError::NotFound(
        "no such ops endpoint; the API is GET /v1/health, GET|POST /v1/modules, \
         GET|DELETE /v1/modules/{name}, DELETE /v1/modules/{name}/versions/{version}, \
         POST /v1/modules/{name}/switch, POST /v1/modules/{name}/rollback, GET|PUT /v1/modules/{name}/rules"
            .into(),
    )
}

/// Query parameters of an upload install.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UploadParams {
    name: String,
    version: String,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    activate: Option<bool>,
    #[serde(default)]
    signature: Option<String>,
}

async fn install(
    State(base): State<Base>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, OpsError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let max = base.config().max_artifact_bytes;
    // Refused before a byte of the body is read when its declared length
    // is over the limit (a 1 GB upload costs the base nothing).
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large("the uploaded body", len, max));
    }
    let (request, upload) = match content_type.as_str() {
        "application/json" => {
            // Install requests are small; the artifact travels by path or URL.
            (json_body(body, "the install request").await?, None)
        }
        "application/wasm" | "application/octet-stream" => {
            let request = match headers.get(INSTALL_HEADER) {
                Some(json) => upload_options_from_header(json)?,
                None => upload_options_from_query(query.as_deref().unwrap_or(""))?,
            };
            let bytes = read_body(body, max, "the uploaded body").await?;
            (request, Some(bytes))
        }
        other => {
            return Err(OpsError::InvalidRequest(format!(
                "Content-Type `{other}` is not accepted: send application/json (an install request) \
                 or application/wasm (the module itself, with name and version as query parameters)"
            )));
        }
    };
    let response = base.install(request, upload).await?;
    let status = if response.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(response)).into_response())
}

/// Header carrying a JSON [`InstallRequest`] (without `artifact`) when the
/// artifact is the body: the way to pass limits, grants and config with an
/// upload.
pub const INSTALL_HEADER: &str = "x-berth-install";

fn upload_options_from_header(json: &axum::http::HeaderValue) -> Result<InstallRequest, OpsError> {
    let request: InstallRequest = serde_json::from_slice(json.as_bytes()).map_err(|e| {
        OpsError::InvalidRequest(format!(
            "the {INSTALL_HEADER} header is not a valid install request: {e}"
        ))
    })?;
    if request.artifact.is_some() {
        return Err(OpsError::InvalidRequest(format!(
            "the {INSTALL_HEADER} header names an artifact, but the artifact is the uploaded body; drop `artifact`"
        )));
    }
    Ok(request)
}

fn upload_options_from_query(query: &str) -> Result<InstallRequest, OpsError> {
    let params: UploadParams = serde_urlencoded::from_str(query).map_err(|e| {
        OpsError::InvalidRequest(format!(
            "upload query parameters are not valid: {e}; expected name, version and optionally \
             pathPrefix, host, digest, activate, signature (or a JSON install request in the {INSTALL_HEADER} header)"
        ))
    })?;
    let route = (params.path_prefix.is_some() || params.host.is_some()).then_some(Route {
        host: params.host,
        path_prefix: params.path_prefix,
    });
    Ok(InstallRequest {
        route,
        digest: params.digest,
        activate: params.activate,
        signature: params.signature,
        ..InstallRequest::new(params.name, params.version)
    })
}

/// Reads at most `max` bytes of `body`, into one buffer sized from its
/// Content-Length: each chunk is copied once and dropped, so the
/// connection's read buffer is reused. (Collecting the chunks and joining
/// them at the end held a whole upload twice, in freshly faulted memory:
/// ~3% of a cold install's CPU for an 18 MB module, before its compile
/// could start.)
async fn read_body(mut body: Body, max: usize, what: &str) -> Result<bytes::Bytes, OpsError> {
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    let announced = body.size_hint().lower();
    if announced > max as u64 {
        return Err(too_large(what, announced, max));
    }
    let mut buffer = bytes::BytesMut::with_capacity(announced as usize);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| OpsError::InvalidRequest(format!("cannot read {what}: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > max {
                return Err(too_large(what, max as u64 + 1, max));
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body of chunks, streamed with no length known up front.
    struct Chunks(VecDeque<&'static [u8]>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c)))),
            )
        }
    }

    fn streamed(chunks: &[&'static [u8]]) -> Body {
        Body::new(Chunks(chunks.iter().copied().collect()))
    }

    #[tokio::test]
    async fn an_upload_is_read_whole_up_to_the_limit_and_refused_past_it() {
        let read = read_body(streamed(&[b"abc", b"def", b"g"]), 7, "the body").await;
        assert_eq!(read.unwrap(), Bytes::from_static(b"abcdefg"));

        // Streamed past the limit: refused once the limit is crossed.
        let over = read_body(streamed(&[b"abc", b"def", b"gh"]), 7, "the body").await;
        let Err(OpsError::PayloadTooLarge(message)) = over else {
            panic!("an 8-byte body over a 7-byte limit was read: {over:?}")
        };
        assert!(message.contains("limit of 7 bytes"), "{message}");

        // A length announced past the limit: refused before any byte is read.
        let announced = read_body(Body::from(vec![0u8; 8]), 7, "the body").await;
        let Err(OpsError::PayloadTooLarge(message)) = announced else {
            panic!("an announced 8-byte body over a 7-byte limit was read: {announced:?}")
        };
        assert!(message.contains("is 8 bytes or more"), "{message}");

        assert_eq!(
            read_body(Body::from(vec![1u8; 7]), 7, "the body")
                .await
                .unwrap()
                .len(),
            7
        );
    }
}
