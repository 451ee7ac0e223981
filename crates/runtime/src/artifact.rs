//! Artifact identity and the cheap checks that run before compilation.
//!
//! Every artifact is named by the sha256 of its bytes ([`Digest`]); the
//! header check tells a user who uploaded the wrong file *which* wrong file
//! (not wasm at all, or a core module instead of a component) before
//! Cranelift spends any time on it.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

use crate::error::LoadError;

/// The sha256 digest of an artifact, written `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The 64 hex characters, without the `sha256:` prefix (used in file names).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The 32 raw bytes (what a signature covers).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a digest: expected `sha256:` followed by 64 hex characters")]
pub struct ParseDigestError {
    input: String,
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Accepts `sha256:<hex>` or bare `<hex>` (64 hex characters, any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDigestError {
            input: s.to_string(),
        };
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
        if hex_part.len() != 64 {
            return Err(err());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut bytes).map_err(|_| err())?;
        Ok(Self(bytes))
    }
}

/// The 8-byte preamble of a core wasm module (magic + version 1).
const CORE_MODULE_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";
/// The 8-byte preamble of a component (magic + version 0x0d, layer 1).
const COMPONENT_HEADER: [u8; 8] = *b"\0asm\x0d\0\x01\0";

/// Checks that `bytes` start like a WebAssembly component.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    let head = &bytes[..bytes.len().min(8)];
    if !head.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm { len: bytes.len() });
    }
    if head == CORE_MODULE_HEADER {
        return Err(LoadError::CoreModule);
    }
    if head != COMPONENT_HEADER {
        return Err(LoadError::Invalid {
            // The version and layer are named, not echoed: the bytes stay private.
            reason: format!(
                "unsupported WebAssembly version or layer (expected a component, version 0x0d layer 1, \
                 written by wasm32-wasip2 builds; {} bytes in all)",
                bytes.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_garbage() {
        let d = Digest::of(b"hello");
        let text = d.to_string();
        assert!(text.starts_with("sha256:2cf24dba"));
        assert_eq!(text.parse::<Digest>().unwrap(), d);
        assert_eq!(d.hex().parse::<Digest>().unwrap(), d);
        assert_eq!(
            text.to_uppercase()
                .replace("SHA256", "sha256")
                .parse::<Digest>()
                .unwrap(),
            d
        );
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("md5:2cf24dba".parse::<Digest>().is_err());
        assert!(
            format!("sha256:{}", "z".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
    }

    #[test]
    fn header_check_names_the_problem() {
        assert!(matches!(
            check_header(b"PK\x03\x04zip"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(check_header(b""), Err(LoadError::NotWasm { .. })));
        assert!(matches!(
            check_header(&CORE_MODULE_HEADER),
            Err(LoadError::CoreModule)
        ));
        assert!(matches!(
            check_header(b"\0asm\x02\0\0\0"),
            Err(LoadError::Invalid { .. })
        ));
        assert!(check_header(&COMPONENT_HEADER).is_ok());
    }
}
