//! `panic`: a module that misbehaves on purpose.
//!
//! `GET /…/ok` answers normally; `GET /…/after-head` sends its response
//! head and part of a body, then panics; any other path panics inside the
//! handler before answering (a wasm trap, since modules build with
//! `panic = "abort"`). Tests use it to prove a trapping module costs one
//! request a 500, never the base.
use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Panic);

struct Panic;

impl wasip2::exports::http::incoming_handler::Guest for Panic {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let after_head = path.ends_with("/after-head");
        if !after_head && !path.ends_with("/ok") {
            panic!("the panic module was asked for {path} and panics on purpose");
        }
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut out = body.write().expect("stream is taken once");
        let first: &[u8] = if after_head {
            b"the start of a body, then "
        } else {
            b"not panicking this time\n"
        };
        out.write_all(first).expect("write");
        out.flush().expect("flush");
        if after_head {
            panic!("the panic module panics after its response head, on purpose");
        }
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
