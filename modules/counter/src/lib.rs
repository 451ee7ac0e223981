//! `counter`: counts its requests in the base's key-value store.
//!
//! `GET …` increments `hits` and answers `{"hits", "greeting", "module"}`
//! (`greeting` comes from the module's config); `GET …/peek` reads the count
//! without changing it. Two installs under different names count apart:
//! each module has its own kv namespace.
//!
//! `GET …/global` counts in a global of the instance instead and answers
//! `{"global": n}`: 1 on every request of a fresh instance, growing under
//! the `pooled` policy. `…/global/trap` counts and then panics (a trap),
//! `…/global/hog` counts and then allocates past any memory limit,
//! `…/global/spin` counts and then loops past any deadline: the same
//! answer must come back after each. `…/global/once` answers only on an
//! instance's first request and returns without a response after that, as
//! a component that cannot be reused does (componentize-js's, for one).
use std::sync::atomic::{AtomicU64, Ordering};

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// Requests this instance has served (`…/global`).
static GLOBAL: AtomicU64 = AtomicU64::new(0);

wasip2::http::proxy::export!(Counter);

struct Counter;

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if let Some((_, rest)) = path.split_once("/global") {
            let n = GLOBAL.fetch_add(1, Ordering::Relaxed) + 1;
            match rest {
                "/trap" => panic!("counter traps on purpose after counting {n}"),
                "/once" if n > 1 => return drop(out),
                "/hog" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "/spin" => {
                    let mut x: u64 = n;
                    loop {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                }
                _ => {
                    let body = serde_json::json!({ "global": n });
                    return berth_guest::http::respond(out, 200, "application/json", body.to_string().as_bytes());
                }
            }
        }
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
