//! `echo`: answers with a JSON description of the request it received.
//!
//! The body is `{"method", "path", "headers": [[name, value]…], "body"}` so a
//! caller (or a test) can see exactly what the base handed the module.
use std::io::{Read as _, Write as _};

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};

wasip2::http::proxy::export!(Echo);

struct Echo;

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let Ok(body) = request.consume() else {
        return Vec::new();
    };
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().expect("stream is taken once");
        stream.read_to_end(&mut bytes).expect("read request body");
    }
    IncomingBody::finish(body);
    bytes
}

impl wasip2::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let headers: Vec<(String, String)> = request
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let description = serde_json::json!({
            "method": method_name(&request.method()),
            "path": request.path_with_query().unwrap_or_default(),
            "headers": headers,
            "body": String::from_utf8_lossy(&read_body(&request)),
        });
        let payload = serde_json::to_vec(&description).expect("json");

        let response_headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"application/json".to_vec(),
        )])
        .expect("static header is valid");
        let response = OutgoingResponse::new(response_headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut out = body.write().expect("stream is taken once");
        // blocking writes are capped at 4096 bytes per call by wasi:io; write_all loops.
        out.write_all(&payload).expect("write echo");
        out.flush().expect("flush echo");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
