//! `counter`: counts its requests in the base's key-value store.
//!
//! `GET …` increments `hits` and answers `{"hits", "greeting", "module"}`
//! (`greeting` comes from the module's config); `GET …/peek` reads the count
//! without changing it. Two installs under different names count apart:
//! each module has its own kv namespace.
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wasip2::http::proxy::export!(Counter);

struct Counter;

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let hits = if path.ends_with("/peek") {
            berth_guest::kv::get("hits").map(|v| {
                v.and_then(|bytes| bytes.try_into().ok()).map_or(0, i64::from_le_bytes)
            })
        } else {
            berth_guest::kv::increment("hits", 1)
        };
        match hits {
            Ok(hits) => {
                berth_guest::log::info(&format!("counted hit {hits}"));
                let body = serde_json::json!({
                    "hits": hits,
                    "greeting": berth_guest::config::get("greeting"),
                    "config": berth_guest::config::all(),
                });
                berth_guest::http::respond(out, 200, "application/json", body.to_string().as_bytes());
            }
            Err(e) => {
                berth_guest::log::error(&format!("kv failed: {e}"));
                berth_guest::http::respond(out, 500, "text/plain", e.as_bytes());
            }
        }
    }
}
