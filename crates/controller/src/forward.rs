//! What a follower does with a request: reads (GET, HEAD) it serves from
//! the shared store itself; every write (apply, delete, rollout steps,
//! base heartbeats, …) it forwards to the leader's advertised URL and
//! relays the answer, so a client may talk to any controller.
//!
//! When no leader is known (an election is under way, or this controller
//! cannot reach the store), or the leader does not answer, the write is
//! refused with 503 and a message naming the leader (if known); the failover
//! client ([`berth_api::failover`]) then tries the next controller.
//!
//! `GET /v1/leader` answers who leads ([`LeaderInfo`]), from any controller.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_api::{ErrorBody, ErrorDetail};
use serde::{Deserialize, Serialize};

use crate::leader::Leadership;

/// Set on a forwarded request: a follower that receives one answers 503
/// instead of forwarding again (no loops while the leader changes).
pub const FORWARDED: &str = "x-berth-forwarded-by";
/// Set on every answer of a follower: the leader's URL, when known.
pub const LEADER_HEADER: &str = "x-berth-leader";
/// Largest request body a follower forwards.
const MAX_BODY: usize = 64 << 20;

/// The answer of `GET /v1/leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderInfo {
    /// Whether the controller that answers leads.
    pub leader: bool,
    /// Its id.
    pub id: String,
    /// Its advertised URL.
    pub url: String,
    /// The leader's URL, when known.
    pub leader_url: Option<String>,
}

#[derive(Clone)]
struct Forwarder {
    leadership: Leadership,
    http: reqwest::Client,
}

/// `router`, with writes forwarded to the leader while this controller
/// follows, and `GET /v1/leader`.
pub fn wrap(router: Router, leadership: Leadership) -> Router {
    let http = berth_api::tls::with_trusted_ca(reqwest::Client::builder())
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .expect("an HTTP client");
    router.layer(axum::middleware::from_fn_with_state(
        Forwarder { leadership, http },
        forward,
    ))
}

fn refuse(code: &str, message: String, leader: Option<&str>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message,
        },
    };
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    if let Some(url) = leader.and_then(|u| HeaderValue::from_str(u).ok()) {
        response.headers_mut().insert(LEADER_HEADER, url);
    }
    response
}

async fn forward(State(f): State<Forwarder>, request: Request, next: Next) -> Response {
    let me = f.leadership.me().clone();
    if request.uri().path() == "/v1/leader" && request.method() == Method::GET {
        let info = LeaderInfo {
            leader: f.leadership.is_leader(),
            id: me.id,
            url: me.url,
            leader_url: f.leadership.leader().map(|l| l.url),
        };
        return axum::Json(info).into_response();
    }
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if read || f.leadership.is_leader() {
        return next.run(request).await;
    }
    let Some(leader) = f.leadership.leader() else {
        return refuse(
            "no_leader",
            format!(
                "the controller at {} follows and knows no leader right now (an election is \
                 under way, or it cannot reach the store); retry in a moment, or use another \
                 controller (--controller takes a comma-separated list)",
                me.url
            ),
            None,
        );
    };
    if request.headers().contains_key(FORWARDED) {
        return refuse(
            "no_leader",
            format!(
                "the controller at {} was sent a forwarded write but does not lead (the \
                 leadership is moving to {}); retry in a moment",
                me.url, leader.url
            ),
            Some(&leader.url),
        );
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the request to forward it: {e}"),
            )
                .into_response();
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = format!("{}{path}", leader.url.trim_end_matches('/'));
    let mut sent = f.http.request(parts.method.clone(), &target).body(body);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            sent = sent.header(name, value);
        }
    }
    sent = sent.header(FORWARDED, &me.url);
    let answer = match sent.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return refuse(
                "leader_unreachable",
                format!(
                    "the leader at {} does not answer ({e}); a new one is elected within the \
                     leader TTL, retry in a moment",
                    leader.url
                ),
                Some(&leader.url),
            );
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = match answer.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => {
            return refuse(
                "leader_unreachable",
                format!("the leader at {} broke off its answer: {e}", leader.url),
                Some(&leader.url),
            );
        }
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    if let Ok(url) = HeaderValue::from_str(&leader.url) {
        response.headers_mut().insert(LEADER_HEADER, url);
    }
    response
}
