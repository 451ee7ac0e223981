//! `wants-missing`: a module that imports an interface no base provides.
//!
//! It exports `wasi:http/incoming-handler` like any module, but also imports
//! `berth:missing/ledger`, which no built-in capability offers, so a base
//! must refuse it at install with `unsupported_import`, naming the interface.
//! `GET /…/balance` calls the import (so the import is really in the
//! component); anything else answers a short text.

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package berth:missing;

            /// An interface no berth base offers.
            interface ledger {
                /// The balance of the ledger.
                balance: func() -> u64;
            }

            world wants-missing {
                import ledger;
            }
        ",
    });
}

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(WantsMissing);

struct WantsMissing;

impl wasip2::exports::http::incoming_handler::Guest for WantsMissing {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let text = if path.ends_with("/balance") {
            format!("balance {}\n", bindings::berth::missing::ledger::balance())
        } else {
            "wants-missing has no ledger to ask\n".to_string()
        };
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream is taken once");
        out.blocking_write_and_flush(text.as_bytes()).expect("write");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
