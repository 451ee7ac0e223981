//! The ops API behind the shared token gate ([`berth_api::auth::Gate`]):
//! which scope each route of the base needs. Liveness is open; reads and
//! metrics need `read`; installs, switches, rules and uninstalls need
//! `deploy` and are audited; Arklet's query commands (`queryAllBiz`,
//! `queryBizOps`, `health`, `help`) are reads, its other commands deploys.
//! The ingress (module traffic) is never behind the gate.

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

/// What the base's ops API call `method path` needs.
pub fn access(method: &Method, path: &str) -> Access {
    if matches!(path, "/v1/health" | "/healthz") {
        return Access::Open;
    }
    let read = matches!(*method, Method::GET | Method::HEAD);
    if read {
        return Access::Need(Scope::Read, false);
    }
    if !path.starts_with("/v1/")
        && matches!(
            path.trim_start_matches('/'),
            "queryAllBiz" | "queryBizOps" | "health" | "help"
        )
    {
        return Access::Need(Scope::Read, false);
    }
    Access::Need(Scope::Deploy, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_scope_their_effect_calls_for() {
        assert_eq!(access(&Method::GET, "/v1/health"), Access::Open);
        assert_eq!(
            access(&Method::GET, "/v1/modules"),
            Access::Need(Scope::Read, false)
        );
        assert_eq!(
            access(&Method::POST, "/v1/modules"),
            Access::Need(Scope::Deploy, true)
        );
        assert_eq!(
            access(&Method::POST, "/queryAllBiz"),
            Access::Need(Scope::Read, false)
        );
        assert_eq!(
            access(&Method::POST, "/installBiz"),
            Access::Need(Scope::Deploy, true)
        );
        assert_eq!(
            access(&Method::DELETE, "/v1/modules/x"),
            Access::Need(Scope::Deploy, true)
        );
    }
}
