//! The artifact check at apply: a manifest whose module the controller can
//! fetch is refused unless the artifact is readable, matches its digest and
//! is a WebAssembly component.
//!
//! Why at apply: the bases fetch the artifact only once they are assigned
//! it, so a bad path or digest used to be accepted (`created`) and then
//! fail on every base, leaving the deployment in force half-replaced. The
//! controller checks what it can reach — a `file:` path on its own machine,
//! an `http(s)://` URL — so the mistake is a 422 naming the field, and
//! nothing changes. A `file:` path must be absolute: the controller does not
//! know the directory of the manifest (`berth apply` resolves relative paths
//! against it before sending).

use berth_api::manifest::ModuleRef;
use berth_runtime::{Digest, TrustKeys};

/// Largest artifact the controller fetches to check.
pub const MAX_ARTIFACT: usize = 256 << 20;

/// The 8-byte preamble of a component (magic + version 0x0d, layer 1).
const COMPONENT_HEADER: [u8; 8] = *b"\0asm\x0d\0\x01\0";
/// The 8-byte preamble of a core wasm module (magic + version 1).
const CORE_MODULE_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

/// Why an artifact was refused: the manifest field at fault and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ArtifactError {
    /// `spec.module.artifact` or `spec.module.digest`.
    pub field: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn artifact_error(message: String) -> ArtifactError {
    ArtifactError {
        field: "spec.module.artifact",
        message,
    }
}

/// The local path of a `file:` artifact (`file:/abs`, `file:///abs`), or
/// `None` for a URL. A relative path is an error: it has no meaning here.
pub fn file_path(artifact: &str) -> Result<Option<String>, ArtifactError> {
    let Some(rest) = artifact.strip_prefix("file:") else {
        return Ok(None);
    };
    let path = match rest.strip_prefix("//") {
        // `file:///abs`; `file://host/…` names another machine.
        Some(after) if after.starts_with('/') => after,
        Some(_) => {
            return Err(artifact_error(format!(
                "`{artifact}` names a host; use file:/absolute/path or an http(s):// URL"
            )));
        }
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(artifact_error(format!(
            "`{artifact}` is a relative path, which the controller cannot resolve; use an absolute path (`berth apply -f` resolves a relative one against the manifest's directory)"
        )));
    }
    Ok(Some(path.to_string()))
}

fn http() -> &'static reqwest::Client {
    static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    HTTP.get_or_init(reqwest::Client::new)
}

/// Fetches `module`'s artifact and checks it: readable, `module.digest`,
/// a component, and, when the controller trusts signing keys, signed by
/// one of them (the detached `.sig` beside the artifact).
pub async fn check(module: &ModuleRef, trust: &TrustKeys) -> Result<(), ArtifactError> {
    let bytes = fetch(&module.artifact, http()).await?;
    let got = Digest::of(&bytes);
    let wanted: Digest = module.digest.parse().map_err(|e| ArtifactError {
        field: "spec.module.digest",
        message: format!("{e}"),
    })?;
    if got != wanted {
        return Err(ArtifactError {
            field: "spec.module.digest",
            message: format!(
                "`{}` has digest {got}, not {wanted}; set digest: \"{got}\" if this is the artifact you mean",
                module.artifact
            ),
        });
    }
    let head = &bytes[..bytes.len().min(8)];
    if head != COMPONENT_HEADER {
        let what = if head == CORE_MODULE_HEADER {
            "a core WebAssembly module, not a component; build it for wasm32-wasip2 (berth build)"
        } else if head.starts_with(b"\0asm") {
            "WebAssembly of an unsupported version, not a component"
        } else {
            "not WebAssembly"
        };
        return Err(artifact_error(format!("`{}` is {what}", module.artifact)));
    }
    if trust.is_enforced() {
        let signature = signature(&module.artifact).await?;
        trust
            .check(
                &got,
                signature.as_deref(),
                &format!("`{}`", module.artifact),
                "controller",
            )
            .map_err(|e| artifact_error(e.to_string()))?;
    }
    Ok(())
}

/// The detached signature beside `artifact` (`PATH.sig`, `URL.sig`), if
/// there is one.
pub async fn signature(artifact: &str) -> Result<Option<String>, ArtifactError> {
    let beside = format!("{artifact}.sig");
    if let Some(path) = file_path(&beside)? {
        return match tokio::fs::read_to_string(&path).await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(artifact_error(format!("cannot read {path}: {e}"))),
        };
    }
    let response = http()
        .get(&beside)
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| artifact_error(format!("cannot download {beside}: {e}")))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let response = response
        .error_for_status()
        .map_err(|e| artifact_error(format!("cannot download {beside}: {e}")))?;
    let text = response
        .text()
        .await
        .map_err(|e| artifact_error(format!("cannot download {beside}: {e}")))?;
    Ok(Some(text))
}

/// The bytes of `artifact`, checked against `digest` (what the controller
/// serves its bases at `/v1/artifacts/{digest}`).
pub async fn fetch_checked(artifact: &str, digest: &str) -> Result<Vec<u8>, ArtifactError> {
    let bytes = fetch(artifact, http()).await?;
    let wanted: Digest = digest.parse().map_err(|e| ArtifactError {
        field: "spec.module.digest",
        message: format!("{e}"),
    })?;
    let got = Digest::of(&bytes);
    if got != wanted {
        return Err(ArtifactError {
            field: "spec.module.digest",
            message: format!("`{artifact}` now has digest {got}, not {wanted}"),
        });
    }
    Ok(bytes)
}

async fn fetch(artifact: &str, http: &reqwest::Client) -> Result<Vec<u8>, ArtifactError> {
    if let Some(path) = file_path(artifact)? {
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| artifact_error(format!("cannot read {path}: {e}")))?;
        if meta.len() > MAX_ARTIFACT as u64 {
            return Err(artifact_error(format!(
                "{path} is larger than {MAX_ARTIFACT} bytes"
            )));
        }
        return tokio::fs::read(&path)
            .await
            .map_err(|e| artifact_error(format!("cannot read {path}: {e}")));
    }
    let unreachable =
        |e: reqwest::Error| artifact_error(format!("cannot download {artifact}: {e}"));
    let response = http
        .get(artifact)
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(unreachable)?;
    if response.content_length().unwrap_or(0) > MAX_ARTIFACT as u64 {
        return Err(artifact_error(format!(
            "{artifact} is larger than {MAX_ARTIFACT} bytes"
        )));
    }
    let bytes = response.bytes().await.map_err(unreachable)?;
    if bytes.len() > MAX_ARTIFACT {
        return Err(artifact_error(format!(
            "{artifact} is larger than {MAX_ARTIFACT} bytes"
        )));
    }
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_must_be_absolute() {
        assert_eq!(
            file_path("file:/a/b.wasm").unwrap().as_deref(),
            Some("/a/b.wasm")
        );
        assert_eq!(
            file_path("file:///a/b.wasm").unwrap().as_deref(),
            Some("/a/b.wasm")
        );
        assert_eq!(file_path("https://x/b.wasm").unwrap(), None);
        let err = file_path("file:./orders.wasm").unwrap_err();
        assert_eq!(err.field, "spec.module.artifact");
        assert!(err.message.contains("relative path"), "{err}");
        assert!(file_path("file://host/b.wasm").is_err());
    }
}
