//! W3C Trace Context (`traceparent`) for requests and module calls.
//!
//! A request that arrives with a valid `traceparent` keeps its trace id; one
//! without gets a new trace. Each hop (ingress → module, module → module)
//! gets a new span id under the same trace id, so a trace id sent by a
//! client reaches every module the request touches and comes back in the
//! response's `traceparent`.

use std::fmt;

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent`: version 00, trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// 8-byte span id of the sender (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` if it is not valid version-00 syntax.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00"
            || parts.next().is_some()
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace (sampled), with a new span.
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        trace_id.iter_mut().for_each(|b| *b = fastrand::u8(..));
        trace_id[0] |= 1; // never all zero
        Self {
            trace_id,
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// The same trace, with a new span (for the next hop).
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The trace id as 32 hex characters.
    pub fn trace_id_hex(&self) -> String {
        String::from_utf8_lossy(&self.trace_id_bytes()).into_owned()
    }

    /// The trace id as a header value (a request id), built without an
    /// intermediate string: this runs on every request.
    pub fn trace_id_header(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.trace_id_bytes()).expect("hex is a valid header")
    }

    /// The `traceparent` header value of this span.
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.encode()).expect("hex is a valid header")
    }

    fn trace_id_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::encode_to_slice(self.trace_id, &mut out).expect("32 hex digits for 16 bytes");
        out
    }

    /// `00-<trace>-<span>-<flags>` in a stack buffer.
    fn encode(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        hex::encode_to_slice(self.trace_id, &mut out[3..35]).expect("32 hex digits");
        hex::encode_to_slice(self.span_id, &mut out[36..52]).expect("16 hex digits");
        hex::encode_to_slice([self.flags], &mut out[53..55]).expect("2 hex digits");
        out
    }
}

fn new_span_id() -> [u8; 8] {
    let mut id = fastrand::u64(1..).to_le_bytes();
    id[0] |= 1;
    id
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encoded = self.encode();
        f.write_str(std::str::from_utf8(&encoded).expect("hex is ASCII"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_like_the_spec() {
        let t =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let child = t.child();
        assert_eq!(child.trace_id, t.trace_id);
        assert_ne!(child.span_id, t.span_id);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        assert!(TraceParent::parse(&TraceParent::new_root().to_string()).is_some());
        assert_eq!(t.header_value(), t.to_string().as_str());
        assert_eq!(t.trace_id_header(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
