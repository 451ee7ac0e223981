//! Errors of the base: [`OpsError`] for the ops API (each a stable code, an
//! HTTP status and a message that says what to do), [`BaseError`] for start-up.

use berth_api::{ErrorBody, ErrorDetail};
use berth_runtime::LoadError;

/// An ops API failure. The running modules are untouched by any of these.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request itself is malformed (bad JSON, bad name, bad route, ...).
    #[error("{0}")]
    InvalidRequest(String),
    /// The artifact bytes differ from the expected digest.
    #[error(
        "digest mismatch for {source_desc}: expected {expected}, got {actual}. \
         The artifact changed since the digest was taken: rebuild or re-download it and use its new digest"
    )]
    DigestMismatch {
        /// Where the bytes came from.
        source_desc: String,
        /// The digest asked for.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A local artifact path does not exist or cannot be read.
    #[error("{0}")]
    ArtifactNotFound(String),
    /// The artifact's path or URL is outside what this base may read.
    #[error("{0}")]
    ArtifactForbidden(String),
    /// The base trusts signing keys and the artifact's signature is
    /// missing, unreadable or made with another key.
    #[error(transparent)]
    Signature(#[from] berth_runtime::SignatureError),
    /// Downloading the artifact failed.
    #[error("{0}")]
    ArtifactUnreachable(String),
    /// The artifact is larger than the base accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The artifact is not a valid berth module.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No such ops endpoint, or no such thing in general.
    #[error("{0}")]
    NotFound(String),
    /// No module of that name is installed.
    #[error(
        "no module named `{name}` is installed{}",
        if installed.is_empty() {
            String::from(" (this base has no modules)")
        } else {
            format!("; installed modules: {}", installed.join(", "))
        }
    )]
    ModuleNotFound {
        /// The name asked for.
        name: String,
        /// The modules that are installed.
        installed: Vec<String>,
    },
    /// The module has no such version.
    #[error(
        "module `{name}` has no version `{version}`; installed versions: {}",
        installed.join(", ")
    )]
    VersionNotFound {
        /// The module.
        name: String,
        /// The version asked for.
        version: String,
        /// Its installed versions.
        installed: Vec<String>,
    },
    /// The route is taken by another module.
    #[error(
        "route `{route}` is already served by module `{owner}`; deploy `{name}` at another \
         route (`berth deploy --route /other`), or uninstall `{owner}` first"
    )]
    RouteConflict {
        /// The route asked for.
        route: String,
        /// The module serving it.
        owner: String,
        /// The module being installed.
        name: String,
    },
    /// The same name and version is installed with other bytes.
    #[error(
        "`{module}` is already installed with digest {installed}, and these bytes are {given}; \
         versions are immutable: give the new build a new version, or uninstall `{module}` first"
    )]
    VersionConflict {
        /// `name@version`.
        module: String,
        /// The digest installed.
        installed: String,
        /// The digest of the bytes given.
        given: String,
    },
    /// Traffic rules still send traffic to the version.
    #[error("{0}")]
    VersionInUse(String),
    /// A rule set is invalid.
    #[error("{0}")]
    InvalidRules(String),
    /// A rollback with no previous default.
    #[error("{0}")]
    NothingToRollBack(String),
    /// The installed-set database failed.
    #[error("the base's state store failed: {0}")]
    Store(String),
    /// The base has as many installs in progress or waiting as it takes.
    #[error(
        "this base has {pending} installs in progress or waiting, its limit; nothing was \
         changed: retry in a second (the limit is the base's --max-pending-installs)"
    )]
    TooManyInstalls {
        /// The limit (`--max-pending-installs`).
        pending: usize,
    },
}

impl OpsError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            OpsError::InvalidRequest(_) => "invalid_request",
            OpsError::DigestMismatch { .. } => "digest_mismatch",
            OpsError::ArtifactNotFound(_) => "artifact_not_found",
            OpsError::ArtifactUnreachable(_) => "artifact_unreachable",
            OpsError::ArtifactForbidden(_) => "artifact_forbidden",
            OpsError::Signature(e) => e.code(),
            OpsError::PayloadTooLarge(_) => "payload_too_large",
            OpsError::Load(e) => e.code(),
            OpsError::NotFound(_)
            | OpsError::ModuleNotFound { .. }
            | OpsError::VersionNotFound { .. } => "module_not_found",
            OpsError::RouteConflict { .. } => "route_conflict",
            OpsError::VersionConflict { .. } => "version_conflict",
            OpsError::VersionInUse(_) => "version_in_use",
            OpsError::InvalidRules(_) => "invalid_rules",
            OpsError::NothingToRollBack(_) => "nothing_to_roll_back",
            OpsError::Store(_) => "store_failed",
            OpsError::TooManyInstalls { .. } => "too_many_installs",
        }
    }

    /// The HTTP status of the ops API response.
    pub fn status(&self) -> u16 {
        match self {
            OpsError::InvalidRequest(_) => 400,
            OpsError::NotFound(_)
            | OpsError::ModuleNotFound { .. }
            | OpsError::VersionNotFound { .. } => 404,
            OpsError::RouteConflict { .. }
            | OpsError::VersionConflict { .. }
            | OpsError::VersionInUse(_)
            | OpsError::NothingToRollBack(_) => 409,
            OpsError::InvalidRules(_) => 422,
            OpsError::PayloadTooLarge(_) => 413,
            OpsError::DigestMismatch { .. } | OpsError::ArtifactNotFound(_) => 422,
            OpsError::Load(LoadError::Cache { .. }) | OpsError::Store(_) => 500,
            OpsError::Load(_) => 422,
            OpsError::ArtifactUnreachable(_) => 502,
            OpsError::ArtifactForbidden(_) => 403,
            OpsError::Signature(_) => 422,
            OpsError::TooManyInstalls { .. } => 503,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        }
    }
}

impl From<redb::Error> for OpsError {
    fn from(e: redb::Error) -> Self {
        OpsError::Store(e.to_string())
    }
}

/// Why a base could not start.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// The data directory cannot be created or used.
    #[error("cannot use data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A listener could not bind.
    #[error(
        "cannot listen on {addr} for the {what}: {reason}. Is another base running? Pick another address"
    )]
    Bind {
        /// ingress or ops API.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error (in the message, not as a source, so it is said once).
        reason: std::io::Error,
    },
    /// The OTLP endpoint is unusable.
    #[error("cannot export spans: {0}")]
    Otlp(String),
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] LoadError),
    /// An `--artifact-dir` that cannot be resolved.
    #[error("--artifact-dir {dir}: {reason}; name an existing directory")]
    ArtifactDir {
        /// The directory as given.
        dir: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A base label that is not `KEY=VALUE`.
    #[error("--labels `{0}` is not KEY=VALUE (e.g. group=online)")]
    InvalidLabel(String),
    /// A `--controller` list with an entry that is not a URL.
    #[error("--controller: {0}")]
    InvalidController(#[from] berth_api::failover::FailoverError),
}
