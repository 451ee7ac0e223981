//! The controller API behind the shared token gate
//! ([`berth_api::auth::Gate`]): which scope each route needs.
//!
//! | calls | scope | audited |
//! |---|---|---|
//! | liveness (`/v1/health`), who leads | none | no |
//! | deployments, bases, endpoint table, metrics (reads) | `read` | no |
//! | apply, delete, rollout steps | `deploy` | yes |
//! | a base's heartbeat, its assignments, compiled code, artifacts | `fleet` (the join token) | no (heartbeats are telemetry; what they change shows in status) |
//! | a gateway's load report | `fleet` | no |
//! | activating a deployment scaled to zero | `fleet` | yes |
//! | minting tokens, reading the audit log | `admin` | minting |
//!
//! `admin` may do all of it. The gate sits inside the leader forwarding
//! ([`crate::forward`]): a follower checks reads itself and relays writes
//! with their `Authorization` header, so the leader checks and audits them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use berth_api::auth::{Access, Gate, Scope};

/// `router` behind `gate`.
pub fn wrap(router: Router, gate: Arc<Gate>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(gate, guard))
}

async fn guard(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let access = access(request.method(), request.uri().path());
    gate.guard(request, access, |request| next.run(request))
        .await
}

/// What the controller API call `method path` needs.
pub fn access(method: &Method, path: &str) -> Access {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = matches!(*method, Method::GET | Method::HEAD);
    match segments.as_slice() {
        ["v1", "health"] | ["v1", "leader"] => Access::Open,
        ["v1", "bases", _] if !read => Access::Need(Scope::Fleet, false),
        ["v1", "bases", _, "assignments"] | ["v1", "code", _] | ["v1", "artifacts", _] => {
            Access::Need(Scope::Fleet, false)
        }
        ["v1", "gateways", _, "load"] => Access::Need(Scope::Fleet, false),
        ["v1", "deployments", _, "activate"] if !read => Access::Need(Scope::Fleet, true),
        _ if read => Access::Need(Scope::Read, false),
        _ => Access::Need(Scope::Deploy, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_scope_their_effect_calls_for() {
        let need = |method: Method, path: &str| access(&method, path);
        assert_eq!(need(Method::GET, "/v1/health"), Access::Open);
        assert_eq!(
            need(Method::GET, "/v1/deployments"),
            Access::Need(Scope::Read, false)
        );
        assert_eq!(
            need(Method::GET, "/v1/endpoints"),
            Access::Need(Scope::Read, false)
        );
        assert_eq!(
            need(Method::POST, "/v1/apply"),
            Access::Need(Scope::Deploy, true)
        );
        assert_eq!(
            need(Method::DELETE, "/v1/deployments/x"),
            Access::Need(Scope::Deploy, true)
        );
        assert_eq!(
            need(Method::PUT, "/v1/bases/a"),
            Access::Need(Scope::Fleet, false)
        );
        assert_eq!(
            need(Method::GET, "/v1/bases/a/assignments"),
            Access::Need(Scope::Fleet, false)
        );
        assert_eq!(
            need(Method::GET, "/v1/bases"),
            Access::Need(Scope::Read, false)
        );
        assert_eq!(
            need(Method::GET, "/v1/code/abc"),
            Access::Need(Scope::Fleet, false)
        );
        assert_eq!(
            need(Method::POST, "/v1/deployments/x/activate"),
            Access::Need(Scope::Fleet, true)
        );
        assert_eq!(
            need(Method::PUT, "/v1/gateways/g/load"),
            Access::Need(Scope::Fleet, false)
        );
    }
}
