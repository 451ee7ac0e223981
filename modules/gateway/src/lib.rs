//! `gateway`: a module that calls other modules (and, if granted, the network).
//!
//! - `GET /gateway` calls `hello` and `echo` in the same base
//!   (`http://hello.berth/hello`, `http://echo.berth/echo/…`) and answers
//!   `{"hello": <text>, "echo": <echo's JSON>}`;
//! - `GET /gateway/call?module=NAME&path=/p` calls one module and passes its
//!   status and body through;
//! - `GET /gateway/fetch?url=URL` fetches any URL (only works for hosts the
//!   module was granted) and passes the status and body through, or answers
//!   502 with the error;
//! - `GET /gateway/loop` calls itself, forever: the base's hop limit cuts it;
//! - `GET /gateway/probe` reports what the module can see of the machine:
//!   environment variables and the root directory (both denied by default).
use berth_guest::http;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wasip2::http::proxy::export!(Gateway);

struct Gateway;

fn query<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn pass_through(out: ResponseOutparam, result: Result<http::Response, String>) {
    match result {
        Ok(response) => {
            let content_type = response.header("content-type").unwrap_or("text/plain").to_string();
            http::respond(out, response.status, &content_type, &response.body)
        }
        Err(e) => http::respond(out, 502, "text/plain", format!("gateway: {e}\n").as_bytes()),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Gateway {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let route = path.split('?').next().unwrap_or_default();
        if route.ends_with("/probe") {
            let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            let fs = match std::fs::read_dir("/") {
                Ok(entries) => format!("listed {} entries", entries.count()),
                Err(e) => format!("denied: {e}"),
            };
            let body = serde_json::json!({ "env": env, "fs": fs });
            return http::respond(out, 200, "application/json", body.to_string().as_bytes());
        }
        if route.ends_with("/loop") {
            return pass_through(out, http::get("http://gateway.berth/gateway/loop"));
        }
        if route.ends_with("/call") {
            let module = query(&path, "module").unwrap_or("hello");
            let target = query(&path, "path").unwrap_or("/");
            return pass_through(out, http::get(&format!("http://{module}.berth{target}")));
        }
        if route.ends_with("/fetch") {
            let Some(url) = query(&path, "url") else {
                return http::respond(out, 400, "text/plain", b"gateway: give ?url=\n");
            };
            return pass_through(out, http::get(url));
        }
        let hello = http::get("http://hello.berth/hello");
        let echo = http::send("POST", "http://echo.berth/echo/from-gateway", &[("x-from", "gateway")], Some(b"hi echo"));
        match (hello, echo) {
            (Ok(hello), Ok(echo)) => {
                let echo: serde_json::Value = serde_json::from_slice(&echo.body).unwrap_or_default();
                let body = serde_json::json!({ "hello": hello.text(), "echo": echo });
                http::respond(out, 200, "application/json", body.to_string().as_bytes())
            }
            (Err(e), _) | (_, Err(e)) => http::respond(out, 502, "text/plain", format!("gateway: {e}\n").as_bytes()),
        }
    }
}
