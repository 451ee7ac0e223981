//! `{{name}}`: a berth module serving a small JSON API.
//!
//! `GET  {{prefix}}`            → what this API offers (the URL `berth deploy` prints)
//! `GET  {{prefix}}/items`      → the items
//! `POST {{prefix}}/items`      → echo a JSON item back with an id
//!
//! Build: `berth build` · Run: `berth deploy` · Iterate: `berth dev`
use std::io::{Read as _, Write as _};

use serde::{Deserialize, Serialize};
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Module);

struct Module;

#[derive(Serialize, Deserialize)]
struct Item {
    #[serde(default)]
    id: u32,
    name: String,
}

impl wasip2::exports::http::incoming_handler::Guest for Module {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default().to_string();
        // The route prefix itself (berth.toml's `pathPrefix`) is the index.
        let index = path.trim_end_matches('/') == "{{prefix}}";
        let (status, value) = match (request.method(), path.ends_with("/items")) {
            (Method::Get, false) if index => (
                200,
                serde_json::json!({
                    "module": "{{name}}",
                    "endpoints": ["GET {{prefix}}/items", "POST {{prefix}}/items"],
                }),
            ),
            (Method::Get, true) => (200, serde_json::json!([{ "id": 1, "name": "first" }])),
            (Method::Post, true) => match serde_json::from_slice::<Item>(&read_body(&request)) {
                Ok(mut item) => {
                    item.id = 2;
                    (201, serde_json::to_value(item).expect("item serializes"))
                }
                Err(e) => (400, serde_json::json!({ "error": e.to_string() })),
            },
            _ => (404, serde_json::json!({ "error": format!("no route for {path}") })),
        };
        let body = serde_json::to_vec(&value).expect("json serializes");
        send(response_out, status, "application/json", &body);
    }
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(body) = request.consume() {
        {
            let mut stream = body.stream().expect("stream is taken once");
            stream.read_to_end(&mut bytes).expect("read body");
        }
        IncomingBody::finish(body);
    }
    bytes
}

/// Sends a complete response.
fn send(response_out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
        .expect("valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let outgoing = response.body().expect("body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut stream = outgoing.write().expect("stream is taken once");
    stream.write_all(body).expect("write body");
    stream.flush().expect("flush body");
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("finish body");
}
