//! Signed artifacts: ed25519 signatures over an artifact's sha256 digest.
//!
//! `berth sign ARTIFACT --key KEYFILE` writes a detached `ARTIFACT.sig`; a
//! base or controller started with `--trust-key PUBKEY` accepts only
//! artifacts signed by one of its keys ([`TrustKeys::check`]).
//!
//! Formats (all text, one base64 line, standard alphabet with padding):
//!
//! - a **signing key** file holds the 32-byte ed25519 seed (written 0600 by
//!   `berth sign --generate-key PATH`, which also writes `PATH.pub`);
//! - a **public key** is the 32-byte ed25519 public key, given as a file or
//!   inline as base64;
//! - a **signature** (`ARTIFACT.sig`) is the 64-byte signature of the
//!   message `berth-artifact-v1:` followed by the 32 raw bytes of the
//!   artifact's sha256 digest. Signing the digest, not the bytes, lets a
//!   verifier that already knows the digest check without re-reading a large
//!   artifact; the prefix keeps a berth signature from meaning anything
//!   else.

use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::artifact::Digest;

/// What a signature covers, before the digest's 32 bytes.
const CONTEXT: &[u8] = b"berth-artifact-v1:";

/// Why a key or signature could not be used, or a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A key or signature text is not what it should be.
    #[error("{what} is not valid: {reason}")]
    Malformed {
        /// What was read (`the signing key file k.key`, `the signature`, …).
        what: String,
        /// Why, with the expected shape.
        reason: String,
    },
    /// The base trusts keys and the artifact came without a signature.
    #[error(
        "{artifact} is not signed, and this {server} accepts only artifacts signed by one of its \
         {keys} trusted key(s). Sign it with `berth sign FILE.wasm --key KEYFILE` and ship the \
         FILE.wasm.sig written beside it"
    )]
    Unsigned {
        /// The artifact's description.
        artifact: String,
        /// `base` or `controller`.
        server: &'static str,
        /// How many keys are trusted.
        keys: usize,
    },
    /// The signature verifies with none of the trusted keys.
    #[error(
        "the signature of {artifact} ({digest}) does not verify with any of this {server}'s {keys} \
         trusted key(s): it was made with another key or for other bytes. Sign the artifact again \
         with `berth sign FILE.wasm --key KEYFILE` using a key the {server} trusts (`--trust-key`)"
    )]
    Mismatch {
        /// The artifact's description.
        artifact: String,
        /// Its digest.
        digest: String,
        /// `base` or `controller`.
        server: &'static str,
        /// How many keys are trusted.
        keys: usize,
    },
}

impl SignatureError {
    /// The stable code for APIs: `unsigned_artifact`, `bad_signature` or
    /// `invalid_signature` (unreadable).
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Malformed { .. } => "invalid_signature",
            SignatureError::Unsigned { .. } => "unsigned_artifact",
            SignatureError::Mismatch { .. } => "bad_signature",
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn decode<const N: usize>(text: &str, what: &str) -> Result<[u8; N], SignatureError> {
    let malformed = |reason: String| SignatureError::Malformed {
        what: what.to_string(),
        reason,
    };
    let bytes = b64()
        .decode(text.trim())
        .map_err(|e| malformed(format!("not base64 ({e})")))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| malformed(format!("{} bytes once decoded, expected {N}", bytes.len())))
}

fn message(digest: &Digest) -> Vec<u8> {
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(digest.as_bytes());
    message
}

/// A fresh signing key: (the signing key file's text, the public key's text).
pub fn generate_key() -> Result<(String, String), SignatureError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| SignatureError::Malformed {
        what: "the system's random source".into(),
        reason: e.to_string(),
    })?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        format!("{}\n", b64().encode(seed)),
        format!("{}\n", b64().encode(key.verifying_key().as_bytes())),
    ))
}

/// The signature text (for `ARTIFACT.sig`) of `digest` with the signing
/// key `key_text` (a signing key file's content).
pub fn sign(digest: &Digest, key_text: &str) -> Result<String, SignatureError> {
    let seed = decode::<32>(key_text, "the signing key")?;
    let key = SigningKey::from_bytes(&seed);
    Ok(format!(
        "{}\n",
        b64().encode(key.sign(&message(digest)).to_bytes())
    ))
}

/// The public keys a base or controller accepts signatures from.
#[derive(Clone, Default, Debug)]
pub struct TrustKeys {
    keys: Vec<VerifyingKey>,
}

impl TrustKeys {
    /// Trusts nothing: [`TrustKeys::check`] accepts every artifact.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses each `--trust-key` value: a file holding a public key, or the
    /// key itself in base64.
    pub fn parse(values: &[String]) -> Result<Self, SignatureError> {
        let mut keys = Vec::new();
        for value in values {
            let path = Path::new(value);
            let (text, what) = if path.is_file() {
                let text =
                    std::fs::read_to_string(path).map_err(|e| SignatureError::Malformed {
                        what: format!("--trust-key {value}"),
                        reason: format!("cannot read the file: {e}"),
                    })?;
                (text, format!("--trust-key file {value}"))
            } else {
                (
                    value.clone(),
                    format!("--trust-key `{value}` (neither a file nor a base64 public key)"),
                )
            };
            let bytes = decode::<32>(&text, &what)?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|e| SignatureError::Malformed {
                what,
                reason: format!("not an ed25519 public key ({e})"),
            })?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// Whether any key is trusted (if not, signatures are not required).
    pub fn is_enforced(&self) -> bool {
        !self.keys.is_empty()
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Accepts the artifact `digest` (described as `artifact` in errors) if
    /// no key is trusted, or if `signature` (the `.sig` text) verifies with
    /// one of the trusted keys. `server` names who refuses (`base`,
    /// `controller`).
    pub fn check(
        &self,
        digest: &Digest,
        signature: Option<&str>,
        artifact: &str,
        server: &'static str,
    ) -> Result<(), SignatureError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let Some(signature) = signature else {
            return Err(SignatureError::Unsigned {
                artifact: artifact.to_string(),
                server,
                keys: self.keys.len(),
            });
        };
        let signature = Signature::from_bytes(&decode::<64>(
            signature,
            &format!("the signature of {artifact}"),
        )?);
        let message = message(digest);
        if self
            .keys
            .iter()
            .any(|key| key.verify(&message, &signature).is_ok())
        {
            Ok(())
        } else {
            Err(SignatureError::Mismatch {
                artifact: artifact.to_string(),
                digest: digest.to_string(),
                server,
                keys: self.keys.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let (secret, public) = generate_key().unwrap();
        let (_, other) = generate_key().unwrap();
        let digest = Digest::of(b"module bytes");
        let sig = sign(&digest, &secret).unwrap();
        let trusted = TrustKeys::parse(&[public.trim().to_string()]).unwrap();
        trusted
            .check(&digest, Some(&sig), "m.wasm", "base")
            .unwrap();
        // Other bytes, another key, no signature, garbage.
        let err = trusted
            .check(&Digest::of(b"other"), Some(&sig), "m.wasm", "base")
            .unwrap_err();
        assert_eq!(err.code(), "bad_signature");
        let untrusted = TrustKeys::parse(&[other.trim().to_string()]).unwrap();
        assert_eq!(
            untrusted
                .check(&digest, Some(&sig), "m.wasm", "base")
                .unwrap_err()
                .code(),
            "bad_signature"
        );
        let err = trusted.check(&digest, None, "m.wasm", "base").unwrap_err();
        assert_eq!(err.code(), "unsigned_artifact");
        assert!(err.to_string().contains("berth sign"), "{err}");
        assert_eq!(
            trusted
                .check(&digest, Some("not base64!"), "m.wasm", "base")
                .unwrap_err()
                .code(),
            "invalid_signature"
        );
        // Trusting nothing accepts anything.
        TrustKeys::none()
            .check(&digest, None, "m.wasm", "base")
            .unwrap();
    }

    #[test]
    fn a_bad_trust_key_is_refused_naming_it() {
        let err = TrustKeys::parse(&["nope".into()]).unwrap_err();
        assert!(err.to_string().contains("--trust-key `nope`"), "{err}");
        let short = b64().encode([1u8; 5]);
        let err = TrustKeys::parse(&[short]).unwrap_err();
        assert!(err.to_string().contains("expected 32"), "{err}");
    }
}
