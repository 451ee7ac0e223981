//! The header names berth's processes exchange, as [`HeaderName`]
//! constants for the request path.
//!
//! Each is the `&str` constant of the same name (`REQUEST_ID_HEADER`, …),
//! which clients and tests use. A `&str` name is parsed and validated
//! again on every header-map operation; the base and the gateway do
//! dozens per request, so their hot paths use these.

use http::{HeaderMap, HeaderName, HeaderValue};

/// [`crate::REQUEST_ID_HEADER`].
pub const REQUEST_ID: HeaderName = HeaderName::from_static(crate::REQUEST_ID_HEADER);
/// [`crate::MODULE_HEADER`].
pub const MODULE: HeaderName = HeaderName::from_static(crate::MODULE_HEADER);
/// [`crate::TRAFFIC_UNIT_HEADER`].
pub const TRAFFIC_UNIT: HeaderName = HeaderName::from_static(crate::TRAFFIC_UNIT_HEADER);
/// [`crate::endpoints::PIN_VERSION_HEADER`].
pub const PIN_VERSION: HeaderName = HeaderName::from_static(crate::endpoints::PIN_VERSION_HEADER);
/// [`crate::endpoints::GATEWAY_SECRET_HEADER`].
pub const GATEWAY_SECRET: HeaderName =
    HeaderName::from_static(crate::endpoints::GATEWAY_SECRET_HEADER);
/// [`crate::endpoints::NOT_HERE_HEADER`].
pub const NOT_HERE: HeaderName = HeaderName::from_static(crate::endpoints::NOT_HERE_HEADER);
/// The W3C trace context header. (`berth_runtime`, which does not depend
/// on this crate, names it for its own module calls.)
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request id a client sent, if it is one to keep and pass on: 1 to
/// 128 visible ASCII characters. Otherwise the receiver makes its own.
pub fn client_request_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .get(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn a_client_request_id_is_kept_only_when_short_and_printable() {
        assert_eq!(client_request_id(&with_id(b"abc-123")).unwrap(), "abc-123");
        assert!(client_request_id(&with_id(&[b'a'; 128])).is_some());
        assert!(client_request_id(&with_id(&[b'a'; 129])).is_none());
        assert!(client_request_id(&with_id(b"")).is_none());
        assert!(client_request_id(&with_id("caf\u{e9}".as_bytes())).is_none());
        assert!(client_request_id(&HeaderMap::new()).is_none());
    }
}
