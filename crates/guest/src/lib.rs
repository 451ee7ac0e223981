//! `berth-guest`: what a berth module author calls instead of raw bindings.
//!
//! ```ignore
//! let hits = berth_guest::kv::increment("hits", 1)?;
//! let greeting = berth_guest::config::get("greeting").unwrap_or_default();
//! berth_guest::log::info(&format!("hit {hits}"));
//! let hello = berth_guest::http::get("http://hello.berth/hello")?; // another module, in-process
//! berth_guest::http::respond(out, 200, "text/plain", greeting.as_bytes());
//! ```
//!
//! `config`, `kv` and `log` wrap the base's `berth:base` interfaces
//! (`wit/base.wit`); `http` wraps `wasi:http` for outgoing calls (to other
//! modules at `http://NAME.berth/…`, or to hosts the module was granted) and
//! for writing a complete response.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "berth:base/host",
    });
}

use bindings::berth::base as host;

/// The module's configuration values, set at install.
pub mod config {
    use super::host::config;

    /// The value of `key`, if it was set.
    pub fn get(key: &str) -> Option<String> {
        config::get(key)
    }

    /// Every key and value, sorted by key.
    pub fn all() -> Vec<(String, String)> {
        config::get_all()
    }
}

/// The module's own durable key-value namespace.
pub mod kv {
    use super::host::kv;

    /// The value of `key`.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
        kv::get(key)
    }

    /// Sets `key` to `value`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        kv::set(key, value)
    }

    /// Removes `key`.
    pub fn delete(key: &str) -> Result<(), String> {
        kv::delete(key)
    }

    /// Adds `delta` to the counter at `key` and returns the new value, atomically.
    pub fn increment(key: &str, delta: i64) -> Result<i64, String> {
        kv::increment(key, delta)
    }

    /// Keys starting with `prefix`, sorted.
    pub fn list_keys(prefix: &str) -> Result<Vec<String>, String> {
        kv::list_keys(prefix)
    }
}

/// Log lines tagged by the base with the module, version and request id.
pub mod log {
    use super::host::log::{Level, log};

    /// A trace line.
    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }
    /// A debug line.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// An info line.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// A warning.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// An error.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Outgoing HTTP (other modules and granted hosts) and complete responses.
pub mod http {
    use std::io::{Read as _, Write as _};

    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
        ResponseOutparam, Scheme,
    };

    /// A response received from an outgoing request.
    #[derive(Debug, Clone)]
    pub struct Response {
        /// Status code.
        pub status: u16,
        /// Headers, in order.
        pub headers: Vec<(String, String)>,
        /// The whole body.
        pub body: Vec<u8>,
    }

    impl Response {
        /// The body as text (lossy).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The first value of header `name` (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// `GET url`.
    pub fn get(url: &str) -> Result<Response, String> {
        send("GET", url, &[], None)
    }

    /// Sends a request and waits for the whole response. `url` is
    /// `http(s)://host[:port]/path?query`; `http://NAME.berth/…` calls module
    /// NAME in the same base. A host the module was not granted fails with
    /// an error naming `HttpRequestDenied`.
    pub fn send(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, String> {
        let (scheme, rest) = match url.split_once("://") {
            Some(("http", rest)) => (Scheme::Http, rest),
            Some(("https", rest)) => (Scheme::Https, rest),
            _ => return Err(format!("`{url}` is not an http(s) URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let fields = Fields::new();
        for (name, value) in headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| format!("header `{name}`: {e:?}"))?;
        }
        let request = OutgoingRequest::new(fields);
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_string()),
        };
        request.set_method(&method).map_err(|()| "invalid method".to_string())?;
        request.set_scheme(Some(&scheme)).map_err(|()| "invalid scheme".to_string())?;
        request
            .set_authority(Some(authority))
            .map_err(|()| format!("invalid authority `{authority}`"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| format!("invalid path `{path}`"))?;
        let outgoing_body = request.body().map_err(|()| "request body taken".to_string())?;
        if let Some(bytes) = body {
            let mut stream = outgoing_body.write().map_err(|()| "body stream taken".to_string())?;
            stream.write_all(bytes).map_err(|e| e.to_string())?;
            stream.flush().map_err(|e| e.to_string())?;
        }
        let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        OutgoingBody::finish(outgoing_body, None).map_err(|e| format!("{e:?}"))?;
        pending.subscribe().block();
        let incoming = pending
            .get()
            .ok_or("the response never arrived")?
            .map_err(|()| "the response was already taken".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        let status = incoming.status();
        let headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let mut bytes = Vec::new();
        let body = incoming.consume().map_err(|()| "response body taken".to_string())?;
        {
            let mut stream = body.stream().map_err(|()| "response stream taken".to_string())?;
            stream.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        }
        IncomingBody::finish(body);
        Ok(Response { status, headers, body: bytes })
    }

    /// Sends a complete response with `status`, `content_type` and `body`.
    pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
        let headers = Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
            .expect("content type is a valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(status).expect("valid status");
        let outgoing = response.body().expect("body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let mut stream = outgoing.write().expect("stream is taken once");
        stream.write_all(body).expect("write body");
        stream.flush().expect("flush body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("finish body");
    }
}
