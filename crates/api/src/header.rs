//! The header names berth's processes exchange, as [`HeaderName`]
//! constants for the request path.
//!
//! Each is the `&str` constant of the same name (`REQUEST_ID_HEADER`, …),
//! which clients and tests use. A `&str` name is parsed and validated
//! again on every header-map operation; the base and the gateway do
//! dozens per request, so their hot paths use these.

use http::HeaderName;

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
