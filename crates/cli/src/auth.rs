//! Tokens on the CLI side: the token every client command sends
//! (`BERTH_TOKEN`, else the file `~/.config/berth/token`), and the token
//! gate `berth base`, `berth controller` set up at start (generated and
//! printed once, supplied, or `--insecure-no-auth`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use berth_api::audit::{AUDIT_FILE, AuditLog};
use berth_api::auth::{ADMIN_TOKEN_FILE, Gate, JOIN_TOKEN_FILE, Supplied, TOKEN_ENV};

/// The authentication flags of `berth base` and `berth controller`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerAuthArgs {
    /// Serve the API with no authentication at all (anyone who reaches it
    /// may deploy). For tests and closed networks only; a warning is logged.
    #[arg(long, env = "BERTH_INSECURE_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_no_auth: bool,
    /// Read the admin token from this file (first line) instead of
    /// BERTH_TOKEN or the one generated at first start.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// The token client commands send: `BERTH_TOKEN`, else the first line of
/// `$XDG_CONFIG_HOME/berth/token` (`~/.config/berth/token`).
pub fn client_token() -> Option<String> {
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        let token = token.trim().to_string();
        if !token.is_empty() {
            return Some(token);
        }
    }
    berth_api::auth::read_token_file(&config_token_file()?).ok()
}

/// `$XDG_CONFIG_HOME/berth/token`, else `~/.config/berth/token`.
fn config_token_file() -> Option<PathBuf> {
    let dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(dir.join("berth").join("token"))
}

/// An HTTP client builder that sends the client token.
pub fn client_builder() -> reqwest::ClientBuilder {
    berth_api::tls::with_trusted_ca(reqwest::Client::builder())
        .default_headers(berth_api::auth::bearer_headers(client_token().as_deref()))
}

/// What a server is: names it in the messages.
pub struct Server<'a> {
    /// `berth base`, `berth controller`.
    pub command: &'a str,
    /// Its data directory.
    pub data_dir: &'a Path,
    /// Where its API listens.
    pub api: SocketAddr,
    /// Whether it takes fleet members (the controller): it has a join token.
    pub join: Option<Option<String>>,
}

/// The gate of a server started with `args` (printing a generated token
/// once, or the warning of `--insecure-no-auth`), and whether it is open.
pub fn server_gate(server: Server<'_>, args: &ServerAuthArgs) -> Result<Arc<Gate>> {
    let Server {
        command,
        data_dir,
        api,
        join,
    } = server;
    if args.insecure_no_auth {
        tracing::warn!(
            "{command} runs WITHOUT authentication (--insecure-no-auth): anyone who reaches \
             http://{api} may deploy and change what runs; writes are still audited to {}",
            data_dir.join(AUDIT_FILE).display()
        );
        return Ok(Arc::new(Gate::open(Some(open_audit(data_dir)?))));
    }
    let admin = match &args.token_file {
        Some(path) => Some(berth_api::auth::read_token_file(path)?),
        None => std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
    };
    let setup = Gate::setup(
        data_dir,
        Supplied {
            admin,
            wants_join: join.is_some(),
            join: join.flatten(),
        },
    )
    .with_context(|| format!("{command} cannot set up its tokens"))?;
    if let Some(token) = &setup.new_admin {
        println!(
            "  auth     admin token (shown this once; kept in {}, mode 0600):",
            data_dir.join(ADMIN_TOKEN_FILE).display()
        );
        println!("           {token}");
        println!("           use it with: export BERTH_TOKEN={token}");
    }
    if let Some(token) = &setup.new_join {
        println!(
            "  join     token for bases and gateways (shown this once; kept in {}, mode 0600):",
            data_dir.join(JOIN_TOKEN_FILE).display()
        );
        println!("           {token}");
        println!("           use it with: export BERTH_JOIN_TOKEN={token}");
    }
    Ok(Arc::new(setup.gate))
}

/// The gate of `berth up`: open (loopback only), auditing to its data dir.
pub fn up_gate(data_dir: &Path, ops: SocketAddr) -> Result<Arc<Gate>> {
    if !ops.ip().is_loopback() {
        bail!(
            "berth up runs without authentication, so its ops API listens on loopback only, not {ops}\n\
             hint: use `berth base --ops {ops}` (it requires tokens) to serve the ops API beyond this machine"
        );
    }
    tracing::warn!(
        "berth up runs without authentication (local development): its ops API on http://{ops} \
         is open to anyone on this machine; use `berth base` for anything else"
    );
    Ok(Arc::new(Gate::open(Some(open_audit(data_dir)?))))
}

fn open_audit(data_dir: &Path) -> Result<AuditLog> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let path = data_dir.join(AUDIT_FILE);
    AuditLog::open(&path).with_context(|| format!("cannot open the audit log {}", path.display()))
}
