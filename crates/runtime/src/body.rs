//! The body type of module responses, shared by the request path
//! ([`crate::LoadedModule::handle`]) and module calls ([`crate::ModuleCaller`]).

use http_body_util::BodyExt;

/// The body of a response produced by a module (or by the base for one).
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A complete body made of `bytes`, typed like a module's response body.
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
