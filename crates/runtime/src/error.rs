//! Errors of the runtime, each with a stable machine-readable code.
//!
//! [`LoadError`] is everything that can be wrong with an artifact (the base
//! turns it into a 422 for the ops API); [`HandleError`] is everything that
//! can go wrong while a module serves one request (a 500 or 503 at ingress).

/// Why an artifact could not become a [`LoadedModule`](crate::LoadedModule).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes do not start with the wasm magic number.
    ///
    /// The message gives the size and a hint, never the artifact's bytes:
    /// an artifact path or URL pointed at a secret must not echo it.
    #[error(
        "the artifact is not WebAssembly: its {len} bytes do not start with the `\\0asm` magic \
         (is it a text file, an archive, or an HTML error page?). \
         Build the module with `cargo build --release --target wasm32-wasip2` and install the .wasm file it writes"
    )]
    NotWasm {
        /// Total length.
        len: usize,
    },
    /// A core wasm module, not a component.
    #[error(
        "the artifact is a core WebAssembly module, not a component: berth runs WASI 0.2 components. \
         Build for `wasm32-wasip2` (not wasm32-unknown-unknown or wasm32-wasip1), \
         or wrap a wasip1 module with `wasm-tools component new --adapt`"
    )]
    CoreModule,
    /// The component does not export `wasi:http/incoming-handler`.
    #[error(
        "the component does not export `wasi:http/incoming-handler` (it exports: {exports}). \
         A berth module implements the `wasi:http/proxy` world: in Rust, a `cdylib` that calls \
         `wasip2::http::proxy::export!` (a `fn main` command is not an HTTP module)"
    )]
    MissingHttpExport {
        /// The exports it has, comma separated.
        exports: String,
    },
    /// The component imports something this base does not provide.
    #[error(
        "the component imports `{import}`, which this base does not provide: {reason}. \
         Remove the import from the module, or install it on a base that offers that capability"
    )]
    UnsupportedImport {
        /// The import's name.
        import: String,
        /// wasmtime's explanation.
        reason: String,
    },
    /// A capability refused the module's settings at install.
    #[error("capability {capability}: {reason}")]
    Refused {
        /// The capability's name.
        capability: String,
        /// Its explanation (the error chain of its `configure`).
        reason: String,
    },
    /// The base's key-value store could not be opened.
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
    /// The component failed validation or compilation.
    #[error("the artifact is not a valid component: {reason}")]
    Invalid {
        /// wasmtime's explanation.
        reason: String,
    },
    /// Reading or writing the module cache failed.
    #[error("module cache I/O failed at {path}: {source}")]
    Cache {
        /// The file involved.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The artifact is not in the cache and no bytes were given.
    #[error(
        "artifact {digest} is not in the module cache at {path}; install it again from its source"
    )]
    ArtifactMissing {
        /// The digest looked up.
        digest: String,
        /// Where it was expected.
        path: String,
    },
}

impl LoadError {
    /// The stable code for the ops API.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::NotWasm { .. } => "not_wasm",
            LoadError::CoreModule => "not_a_component",
            LoadError::MissingHttpExport { .. } => "missing_http_export",
            LoadError::UnsupportedImport { .. } => "unsupported_import",
            LoadError::Refused { .. } => "refused_by_capability",
            LoadError::Invalid { .. } => "invalid_wasm",
            LoadError::Cache { .. } | LoadError::Kv(_) => "cache_io",
            LoadError::ArtifactMissing { .. } => "artifact_missing",
        }
    }
}

/// Why a request to a module produced no response of its own.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// No instance slot or memory was free (the pooling allocator is full).
    #[error("no instance could be created: {0}")]
    Instantiate(String),
    /// The guest trapped (panic, unreachable, out-of-bounds, ...) before responding.
    #[error("the module trapped: {message}")]
    Trap {
        /// A short description, safe to show to the client.
        message: String,
        /// The full error with the wasm backtrace, for the base's log.
        detail: String,
    },
    /// The guest ran past its CPU deadline.
    #[error("the module exceeded its {0:?} deadline")]
    Deadline(std::time::Duration),
    /// The guest tried to grow its memory past its limit, and trapped.
    #[error("the module exceeded its memory limit of {} MiB", .0 >> 20)]
    MemoryLimit(usize),
    /// The module already serves as many requests as it may at once.
    #[error("the module is at its limit of {0} concurrent requests; retry shortly")]
    Overloaded(u32),
    /// The module is over its CPU share and this request would wait for
    /// its turn longer than its queue wait.
    #[error(
        "the module is over its CPU share of {share} cores and its queue is full; retry after {retry_after_secs} s",
        share = *share_millis as f64 / 1000.0
    )]
    CpuThrottled {
        /// Its share, thousandths of a core.
        share_millis: u32,
        /// When to retry, seconds.
        retry_after_secs: u64,
    },
    /// The request body is larger than the module accepts.
    #[error("the request body is larger than the module's limit of {0} bytes")]
    RequestTooLarge(u64),
    /// The response body the guest wrote is larger than its limit, found
    /// before the response head went out (later, the body is cut off).
    #[error(
        "the response body is larger than the module's limit of {0} bytes (limits.maxResponseBytes)"
    )]
    ResponseTooLarge(u64),
    /// The guest returned without setting a response.
    #[error("the module returned without sending a response")]
    NoResponse,
    /// The guest answered with a `wasi:http` error code instead of a response.
    #[error("the module answered with error code {0}")]
    GuestError(String),
    /// The request could not be handed to the guest.
    #[error("the request could not be passed to the module: {0}")]
    BadRequest(String),
}

impl HandleError {
    /// The full description for logs (with the wasm backtrace of a trap).
    pub fn detail(&self) -> String {
        match self {
            HandleError::Trap { detail, .. } => detail.clone(),
            other => other.to_string(),
        }
    }

    /// Seconds a client should wait before it retries (the `Retry-After`
    /// of a 503), when the error says.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            HandleError::CpuThrottled {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            HandleError::Instantiate(_) | HandleError::Overloaded(_) => Some(1),
            _ => None,
        }
    }

    /// HTTP status the ingress answers with.
    pub fn status(&self) -> u16 {
        match self {
            HandleError::Instantiate(_)
            | HandleError::Overloaded(_)
            | HandleError::CpuThrottled { .. } => 503,
            HandleError::Deadline(_) => 504,
            HandleError::RequestTooLarge(_) => 413,
            HandleError::BadRequest(_) => 400,
            _ => 500,
        }
    }
}
