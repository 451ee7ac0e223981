//! `hello`: the smallest berth module, answering every request with a fixed text.
//!
//! It is what the README's first command serves at `/hello` and what the
//! benchmarks drive, so it does as little as a `wasi:http` handler can.
use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

/// The response body; tests compare against it.
#[cfg(not(feature = "v2"))]
const GREETING: &[u8] = b"Hello from berth!\n";
/// The response body of the `v2` build.
#[cfg(feature = "v2")]
const GREETING: &[u8] = b"Hello from berth, version 2!\n";

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("static header is valid");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut out = body.write().expect("stream is taken once");
        out.write_all(GREETING).expect("write greeting");
        out.flush().expect("flush greeting");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
