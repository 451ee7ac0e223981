//! `{{name}}`: a berth module (a `wasi:http` handler) answering plain text.
//!
//! Build: `berth build` · Run: `berth deploy` · Iterate: `berth dev`
use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Module);

struct Module;

impl wasip2::exports::http::incoming_handler::Guest for Module {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let body = format!("Hello from {{name}}! You asked for {path}\n");
        send(response_out, 200, "text/plain; charset=utf-8", body.as_bytes());
    }
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
