//! Bearer-token authentication shared by every berth server (base ops API,
//! controller API): scopes, the hashed token file, the constant-time check,
//! and the [`Gate`] a server puts in front of its router. The gate answers
//! 401 / 403 with JSON errors before anything runs, appends every
//! state-changing call to the [audit log](crate::audit), and serves the
//! token and audit endpoints (`berth token …`, `berth audit`) itself, so
//! each server only says which scope each of its routes needs.
//!
//! Scopes: `read` ⊂ `deploy` ⊂ `admin`, and `fleet` (the controller's join
//! token: what bases and gateways need — heartbeats, assignments, code and
//! artifacts, the endpoint table, load reports, activation — plus `read`).
//! `admin` may do everything.
//!
//! Tokens are stored as sha256 hashes with their name and scope in
//! `<data-dir>/tokens.json` (mode 0600); a token is 32 random bytes, hex,
//! prefixed `berth_`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::audit::{AuditList, AuditLog};
use crate::{ErrorBody, ErrorDetail, REQUEST_ID_HEADER};

/// The environment variable a client (and a starting server, for its admin
/// token) reads the token from.
pub const TOKEN_ENV: &str = "BERTH_TOKEN";
/// The environment variable bases and gateways read the controller's join
/// token from (and a starting controller, to use that one).
pub const JOIN_TOKEN_ENV: &str = "BERTH_JOIN_TOKEN";
/// The hashed tokens in a server's data directory.
pub const TOKENS_FILE: &str = "tokens.json";
/// The admin token a server generated at its first start (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The join token a controller generated at its first start (mode 0600).
pub const JOIN_TOKEN_FILE: &str = "join.token";
/// The name of the admin token a server generates or is given.
pub const ADMIN_NAME: &str = "admin";
/// The name of the controller's join token.
pub const JOIN_NAME: &str = "join";
/// Path of the token endpoint (`berth token`), served by the gate.
pub const TOKENS_PATH: &str = "/v1/tokens";
/// Path of the audit endpoint (`berth audit`), served by the gate.
pub const AUDIT_PATH: &str = "/v1/audit";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Look: list, show, status, metrics, logs.
    Read,
    /// Change what runs: install, switch, rules, apply, delete, rollouts.
    Deploy,
    /// Everything, including minting tokens and reading the audit log.
    Admin,
    /// A fleet member (base or gateway): heartbeats, assignments, code,
    /// artifacts, the endpoint table, load reports, activation, and reads.
    Fleet,
}

impl Scope {
    /// Whether a token of this scope may make a call that needs `need`.
    pub fn allows(self, need: Scope) -> bool {
        match need {
            Scope::Read => true,
            Scope::Deploy => matches!(self, Scope::Deploy | Scope::Admin),
            Scope::Fleet => matches!(self, Scope::Fleet | Scope::Admin),
            Scope::Admin => self == Scope::Admin,
        }
    }

    /// Its name: `read`, `deploy`, `admin` or `fleet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
            Scope::Fleet => "fleet",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = AuthError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        match given {
            "read" => Ok(Scope::Read),
            "deploy" => Ok(Scope::Deploy),
            "admin" => Ok(Scope::Admin),
            "fleet" => Ok(Scope::Fleet),
            other => Err(AuthError::UnknownScope(other.into())),
        }
    }
}

/// Why tokens could not be loaded, stored or minted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A token file cannot be read or written.
    #[error("cannot {what} {path}: {reason}")]
    Io {
        /// `read` or `write`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// `tokens.json` does not parse.
    #[error(
        "{path} is not a berth token file ({reason}); move it away and restart to generate a new admin token"
    )]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A token source holds no token.
    #[error("{origin} holds no token; put the token on its first line")]
    EmptyToken {
        /// Where it was read from.
        origin: String,
    },
    /// A scope that does not exist.
    #[error("no scope `{0}`; use read, deploy, admin or fleet")]
    UnknownScope(String),
    /// A token name that is empty, too long or not `[A-Za-z0-9._-]`.
    #[error(
        "token name `{0}` is not valid: use 1 to 64 letters, digits, `.`, `_` or `-` (e.g. --name ci)"
    )]
    BadName(String),
    /// A token of that name exists.
    #[error("a token named `{0}` exists already; pick another --name")]
    NameTaken(String),
    /// The server runs without authentication.
    #[error(
        "this server runs without authentication (--insecure-no-auth or `berth up`): it has no tokens to mint"
    )]
    Open,
}

/// Who made a call that was let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`anonymous` on an open server).
    pub name: String,
    /// The token's scope.
    pub scope: Scope,
}

/// Why a call was refused: 401 (no or unknown token) or 403 (under-scoped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer …` header.
    Missing {
        /// The scope the call needs.
        need: Scope,
    },
    /// A token this server does not know.
    Unknown {
        /// The scope the call needs.
        need: Scope,
    },
    /// A known token whose scope is not enough.
    Insufficient {
        /// The token's name.
        name: String,
        /// Its scope.
        have: Scope,
        /// The scope the call needs.
        need: Scope,
    },
}

const HOW_TO_GET: &str = "set BERTH_TOKEN (or write the token to ~/.config/berth/token); \
     the server printed its admin token at its first start and keeps it in its data directory \
     (admin.token), and `berth token create --scope SCOPE --name NAME` mints scoped ones";

impl Denied {
    /// The HTTP status: 401 or 403.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Missing { .. } | Denied::Unknown { .. } => 401,
            Denied::Insufficient { .. } => 403,
        }
    }

    /// The JSON error body, naming the scope needed and how to get a token.
    pub fn body(&self) -> ErrorBody {
        let (code, message) = match self {
            Denied::Missing { need } => (
                "unauthorized",
                format!(
                    "this call needs a token with the `{need}` scope and none was sent; {HOW_TO_GET}"
                ),
            ),
            Denied::Unknown { need } => (
                "unauthorized",
                format!(
                    "the token sent is not known to this server (this call needs the `{need}` scope); {HOW_TO_GET}"
                ),
            ),
            Denied::Insufficient { name, have, need } => (
                "forbidden",
                format!(
                    "token `{name}` has the `{have}` scope but this call needs `{need}`; \
                     an admin mints one with `berth token create --scope {need} --name NAME`"
                ),
            ),
        };
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message,
            },
        }
    }
}

/// A stored token: its name, scope and hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    name: String,
    scope: Scope,
    /// Hex sha256 of the token.
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Known {
    name: String,
    scope: Scope,
    hash: [u8; 32],
}

impl Known {
    fn entry(&self) -> Entry {
        Entry {
            name: self.name.clone(),
            scope: self.scope,
            sha256: hex::encode(self.hash),
        }
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: `berth_` and 64 hex digits.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the OS random source");
    format!("berth_{}", hex::encode(bytes))
}

/// Reads a token from the first line of `path` (`--token-file`).
pub fn read_token_file(path: &Path) -> Result<String, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthError::Io {
        what: "read",
        path: path.into(),
        reason: e.to_string(),
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(AuthError::EmptyToken {
            origin: path.display().to_string(),
        });
    }
    Ok(token)
}

/// Writes `text` to `path` with mode 0600 (replacing it atomically).
pub fn write_private(path: &Path, text: &str) -> Result<(), AuthError> {
    let io = |e: std::io::Error| AuthError::Io {
        what: "write",
        path: path.into(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The tokens a server is started with besides those in its data directory.
#[derive(Debug, Clone, Default)]
pub struct Supplied {
    /// The admin token (`BERTH_TOKEN` or `--token-file`): used instead of
    /// generating one.
    pub admin: Option<String>,
    /// Whether this server takes fleet members (a controller): it then has
    /// a join token, generated unless [`Supplied::join`] gives it.
    pub wants_join: bool,
    /// The join token (`--join-token` / `BERTH_JOIN_TOKEN`).
    pub join: Option<String>,
}

/// What [`Gate::setup`] did: the gate, and the tokens it generated (to be
/// printed once, at this first start only).
#[derive(Debug)]
pub struct Setup {
    /// The gate to put in front of the API.
    pub gate: Gate,
    /// The admin token generated now (also written to `admin.token`).
    pub new_admin: Option<String>,
    /// The join token generated now (also written to `join.token`).
    pub new_join: Option<String>,
}

/// Tokens, the audit log and the check in front of a server's API.
#[derive(Debug)]
pub struct Gate {
    /// `None`: open (every call is let through as `anonymous`).
    tokens: Option<RwLock<Vec<Known>>>,
    /// Where minted tokens are saved.
    file: Option<PathBuf>,
    audit: Option<AuditLog>,
}

impl Gate {
    /// A gate that lets everything through (`--insecure-no-auth`, `berth
    /// up`), still auditing writes to `audit` when given.
    pub fn open(audit: Option<AuditLog>) -> Self {
        Self {
            tokens: None,
            file: None,
            audit,
        }
    }

    /// A gate knowing exactly `tokens` (name, scope, token), nothing saved.
    pub fn with_tokens(tokens: &[(&str, Scope, &str)], audit: Option<AuditLog>) -> Self {
        Self {
            tokens: Some(RwLock::new(
                tokens
                    .iter()
                    .map(|(name, scope, token)| Known {
                        name: (*name).into(),
                        scope: *scope,
                        hash: hash(token),
                    })
                    .collect(),
            )),
            file: None,
            audit,
        }
    }

    /// The gate of a server on `data_dir`: loads `tokens.json`, puts the
    /// supplied admin (and join) token in place of the stored one, or
    /// generates them when there are none (writing `admin.token` /
    /// `join.token`, mode 0600), and opens the audit log.
    pub fn setup(data_dir: &Path, supplied: Supplied) -> Result<Setup, AuthError> {
        std::fs::create_dir_all(data_dir).map_err(|e| AuthError::Io {
            what: "write",
            path: data_dir.into(),
            reason: e.to_string(),
        })?;
        let file = data_dir.join(TOKENS_FILE);
        let mut known = load(&file)?;
        let mut new_admin = None;
        let mut new_join = None;
        let put = |known: &mut Vec<Known>, name: &str, scope: Scope, token: &str| {
            known.retain(|k| k.name != name);
            known.push(Known {
                name: name.into(),
                scope,
                hash: hash(token),
            });
        };
        match &supplied.admin {
            Some(token) => put(&mut known, ADMIN_NAME, Scope::Admin, token),
            None if !known.iter().any(|k| k.name == ADMIN_NAME) => {
                let token = generate();
                write_private(&data_dir.join(ADMIN_TOKEN_FILE), &format!("{token}\n"))?;
                put(&mut known, ADMIN_NAME, Scope::Admin, &token);
                new_admin = Some(token);
            }
            None => {}
        }
        if supplied.wants_join {
            match &supplied.join {
                Some(token) => put(&mut known, JOIN_NAME, Scope::Fleet, token),
                None if !known.iter().any(|k| k.name == JOIN_NAME) => {
                    let token = generate();
                    write_private(&data_dir.join(JOIN_TOKEN_FILE), &format!("{token}\n"))?;
                    put(&mut known, JOIN_NAME, Scope::Fleet, &token);
                    new_join = Some(token);
                }
                None => {}
            }
        }
        save(&file, &known)?;
        let audit = open_audit(data_dir)?;
        Ok(Setup {
            gate: Gate {
                tokens: Some(RwLock::new(known)),
                file: Some(file),
                audit: Some(audit),
            },
            new_admin,
            new_join,
        })
    }

    /// Whether every call is let through.
    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// The audit log, when it has one.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Checks the `Authorization` header value for a call needing `need`.
    /// The presented token is hashed and compared with every stored hash
    /// in constant time.
    pub fn check(&self, authorization: Option<&str>, need: Scope) -> Result<Caller, Denied> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller {
                name: "anonymous".into(),
                scope: Scope::Admin,
            });
        };
        let Some(token) = authorization.and_then(bearer) else {
            return Err(Denied::Missing { need });
        };
        let presented = hash(token);
        let tokens = tokens.read().unwrap_or_else(|e| e.into_inner());
        let mut found: Option<&Known> = None;
        for known in tokens.iter() {
            // No early exit: every stored hash is compared.
            if bool::from(presented.ct_eq(&known.hash)) {
                found = Some(known);
            }
        }
        let Some(known) = found else {
            return Err(Denied::Unknown { need });
        };
        if !known.scope.allows(need) {
            return Err(Denied::Insufficient {
                name: known.name.clone(),
                have: known.scope,
                need,
            });
        }
        Ok(Caller {
            name: known.name.clone(),
            scope: known.scope,
        })
    }

    /// Mints a token `name` with `scope`, saved (hashed) at once; returns it.
    pub fn create(&self, name: &str, scope: Scope) -> Result<String, AuthError> {
        let Some(tokens) = &self.tokens else {
            return Err(AuthError::Open);
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(AuthError::BadName(name.into()));
        }
        let mut tokens = tokens.write().unwrap_or_else(|e| e.into_inner());
        if tokens.iter().any(|k| k.name == name) {
            return Err(AuthError::NameTaken(name.into()));
        }
        let token = generate();
        let mut next = tokens.clone();
        next.push(Known {
            name: name.into(),
            scope,
            hash: hash(&token),
        });
        if let Some(file) = &self.file {
            save(file, &next)?;
        }
        *tokens = next;
        Ok(token)
    }

    /// The tokens' names and scopes.
    pub fn list(&self) -> Vec<TokenInfo> {
        self.tokens
            .as_ref()
            .map(|tokens| {
                tokens
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|k| TokenInfo {
                        name: k.name.clone(),
                        scope: k.scope,
                        token: None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Serves `request` through the gate: answers the token and audit
    /// endpoints itself, refuses a call `access` does not allow (401/403,
    /// nothing runs), otherwise runs `next`; audits every call `access`
    /// marks as a change, refused or not. Each answer carries the request
    /// id.
    pub async fn guard<B, R, F, Fut>(
        &self,
        request: http::Request<B>,
        access: Access,
        next: F,
    ) -> http::Response<R>
    where
        F: FnOnce(http::Request<B>) -> Fut,
        Fut: std::future::Future<Output = http::Response<R>>,
        R: From<String>,
    {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        let request_id = crate::header::client_request_id(request.headers())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| generate()[6..22].to_string());
        let (access, own) = if path == TOKENS_PATH || path == AUDIT_PATH {
            let changes = method != http::Method::GET;
            (Access::Need(Scope::Admin, changes), true)
        } else {
            (access, false)
        };
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (need, changes) = match access {
            Access::Open => (None, false),
            Access::Need(scope, changes) => (Some(scope), changes),
        };
        let action = format!("{method} {path}");
        let mut target = target_of(&path);
        if target.is_empty() {
            // An upload names its module in the query (`?name=…`).
            target = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|pair| pair.strip_prefix("name="))
                .map(percent_decode)
                .unwrap_or_default();
        }
        let caller = match need.map(|need| self.check(authorization, need)) {
            Some(Err(denied)) => {
                if changes {
                    let who = match &denied {
                        Denied::Insufficient { name, .. } => name.as_str(),
                        _ => "-",
                    };
                    self.record(who, &action, &target, denied.status(), &request_id);
                }
                return json(denied.status(), &denied.body(), &request_id);
            }
            Some(Ok(caller)) => Some(caller),
            None => None,
        };
        let who = caller.as_ref().map_or("-", |c| c.name.as_str()).to_string();
        let mut response = if own {
            let query = request.uri().query().unwrap_or("").to_string();
            self.own_endpoint(&method, &path, &query, &request_id)
        } else {
            let mut request = request;
            if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                request.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            next(request).await
        };
        if changes {
            self.record(
                &who,
                &action,
                &target,
                response.status().as_u16(),
                &request_id,
            );
        }
        if let Ok(value) = http::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }

    fn record(&self, who: &str, action: &str, target: &str, status: u16, request_id: &str) {
        if let Some(audit) = &self.audit {
            audit.append(who, action, target, status, request_id);
        }
    }

    /// `GET|POST /v1/tokens`, `GET /v1/audit`.
    fn own_endpoint<R: From<String>>(
        &self,
        method: &http::Method,
        path: &str,
        query: &str,
        request_id: &str,
    ) -> http::Response<R> {
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let fail = |status: u16, code: &str, message: String| {
            json(
                status,
                &ErrorBody {
                    error: ErrorDetail {
                        code: code.into(),
                        message,
                    },
                },
                request_id,
            )
        };
        match (path, method.as_str()) {
            (TOKENS_PATH, "GET") => json(
                200,
                &TokenList {
                    tokens: self.list(),
                },
                request_id,
            ),
            (TOKENS_PATH, "POST") => {
                let name = params.get("name").cloned().unwrap_or_default();
                let scope = match params.get("scope").map(|s| s.parse::<Scope>()) {
                    Some(Ok(scope)) => scope,
                    Some(Err(e)) => return fail(422, "invalid_token_request", e.to_string()),
                    None => {
                        return fail(
                            422,
                            "invalid_token_request",
                            "no scope given; use --scope read, deploy, admin or fleet".into(),
                        );
                    }
                };
                match self.create(&name, scope) {
                    Ok(token) => json(
                        201,
                        &TokenInfo {
                            name,
                            scope,
                            token: Some(token),
                        },
                        request_id,
                    ),
                    Err(AuthError::NameTaken(n)) => {
                        fail(409, "token_exists", AuthError::NameTaken(n).to_string())
                    }
                    Err(e @ (AuthError::BadName(_) | AuthError::Open)) => {
                        fail(422, "invalid_token_request", e.to_string())
                    }
                    Err(e) => fail(500, "token_store_failed", e.to_string()),
                }
            }
            (AUDIT_PATH, "GET") => {
                let since = match params.get("since").map(|s| crate::audit::parse_since(s)) {
                    Some(Err(e)) => return fail(400, "invalid_since", format!("--since: {e}")),
                    Some(Ok(at)) => Some(at),
                    None => None,
                };
                let after = params.get("after").and_then(|a| a.parse().ok());
                let Some(audit) = &self.audit else {
                    return json(200, &AuditList::default(), request_id);
                };
                match audit.read(since, after) {
                    Ok(records) => json(200, &AuditList { records }, request_id),
                    Err(e) => fail(
                        500,
                        "audit_unreadable",
                        format!("cannot read {}: {e}", audit.path().display()),
                    ),
                }
            }
            _ => fail(
                405,
                "method_not_allowed",
                format!("{method} is not served here; use `berth token` or `berth audit`"),
            ),
        }
    }
}

/// Which scope a route needs, and whether it changes state (is audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (liveness).
    Open,
    /// A token with this scope; `true`: the call changes state.
    Need(Scope, bool),
}

/// A token as `berth token` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// Its scope.
    pub scope: Scope,
    /// The token itself: only in the answer that minted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The answer of the token list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    /// Every token's name and scope.
    pub tokens: Vec<TokenInfo>,
}

/// The token of an `Authorization: Bearer …` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a path names: the third segment of `/v1/<kind>/<name>/…`.
fn target_of(path: &str) -> String {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(_), Some(name)) => percent_decode(name),
        _ => String::new(),
    }
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json<R: From<String>, T: Serialize>(
    status: u16,
    body: &T,
    request_id: &str,
) -> http::Response<R> {
    let mut response =
        http::Response::new(R::from(serde_json::to_string(body).expect("serializes")));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = http::HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

fn load(file: &Path) -> Result<Vec<Known>, AuthError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(AuthError::Io {
                what: "read",
                path: file.into(),
                reason: e.to_string(),
            });
        }
    };
    let bad = |reason: String| AuthError::BadFile {
        path: file.into(),
        reason,
    };
    let parsed: TokenFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    parsed
        .tokens
        .into_iter()
        .map(|e| {
            let bytes = hex::decode(&e.sha256)
                .map_err(|_| bad(format!("token `{}` has a sha256 that is not hex", e.name)))?;
            let hash = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                bad(format!(
                    "token `{}` has a sha256 that is not 32 bytes",
                    e.name
                ))
            })?;
            Ok(Known {
                name: e.name,
                scope: e.scope,
                hash,
            })
        })
        .collect()
}

fn save(file: &Path, known: &[Known]) -> Result<(), AuthError> {
    let body = TokenFile {
        tokens: known.iter().map(Known::entry).collect(),
    };
    write_private(
        file,
        &serde_json::to_string_pretty(&body).expect("serializes"),
    )
}

fn open_audit(data_dir: &Path) -> Result<AuditLog, AuthError> {
    let path = data_dir.join(crate::audit::AUDIT_FILE);
    AuditLog::open(&path).map_err(|e| AuthError::Io {
        what: "write",
        path,
        reason: e.to_string(),
    })
}

/// The default headers of a client that sends `token` (none: no header).
pub fn bearer_headers(token: Option<&str>) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token
        && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
    {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_fleet_is_apart() {
        use Scope::*;
        assert!(Admin.allows(Deploy) && Admin.allows(Fleet) && Admin.allows(Read));
        assert!(Deploy.allows(Read) && !Deploy.allows(Admin) && !Deploy.allows(Fleet));
        assert!(Read.allows(Read) && !Read.allows(Deploy));
        assert!(Fleet.allows(Read) && Fleet.allows(Fleet) && !Fleet.allows(Deploy));
        assert_eq!("deploy".parse::<Scope>().unwrap(), Deploy);
        assert!(
            "root"
                .parse::<Scope>()
                .unwrap_err()
                .to_string()
                .contains("use read, deploy, admin or fleet")
        );
    }

    #[test]
    fn check_answers_401_for_missing_or_unknown_and_403_for_under_scoped() {
        let gate = Gate::with_tokens(
            &[
                ("ci", Scope::Read, "t-read"),
                ("admin", Scope::Admin, "t-admin"),
            ],
            None,
        );
        assert_eq!(
            gate.check(None, Scope::Read),
            Err(Denied::Missing { need: Scope::Read })
        );
        assert_eq!(
            gate.check(Some("Basic dXNlcg=="), Scope::Read),
            Err(Denied::Missing { need: Scope::Read })
        );
        assert_eq!(
            gate.check(Some("Bearer nope"), Scope::Read),
            Err(Denied::Unknown { need: Scope::Read })
        );
        let denied = gate
            .check(Some("Bearer t-read"), Scope::Deploy)
            .unwrap_err();
        assert_eq!(denied.status(), 403);
        assert!(denied.body().error.message.contains("needs `deploy`"));
        assert!(
            denied
                .body()
                .error
                .message
                .contains("berth token create --scope deploy")
        );
        assert_eq!(
            gate.check(Some("bearer t-admin"), Scope::Admin)
                .unwrap()
                .name,
            "admin"
        );
        assert_eq!(Denied::Missing { need: Scope::Read }.status(), 401);
    }

    #[test]
    fn setup_generates_once_and_takes_supplied_tokens() {
        let dir = std::env::temp_dir().join(format!("berth-auth-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = Gate::setup(
            &dir,
            Supplied {
                wants_join: true,
                ..Supplied::default()
            },
        )
        .unwrap();
        let admin = first.new_admin.clone().unwrap();
        let join = first.new_join.clone().unwrap();
        assert!(admin.starts_with("berth_") && admin.len() == 70);
        let on_disk = std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE)).unwrap();
        assert_eq!(on_disk.trim(), admin);
        #[cfg(unix)]
        for file in [ADMIN_TOKEN_FILE, JOIN_TOKEN_FILE, TOKENS_FILE] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let stored = std::fs::read_to_string(dir.join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&admin), "tokens.json holds hashes only");
        let minted = first.gate.create("ci", Scope::Read).unwrap();
        assert!(matches!(
            first.gate.create("ci", Scope::Read),
            Err(AuthError::NameTaken(_))
        ));
        assert!(matches!(
            first.gate.create("a b", Scope::Read),
            Err(AuthError::BadName(_))
        ));
        drop(first);
        let again = Gate::setup(
            &dir,
            Supplied {
                wants_join: true,
                ..Supplied::default()
            },
        )
        .unwrap();
        assert!(again.new_admin.is_none() && again.new_join.is_none());
        let bearer = |t: &str| format!("Bearer {t}");
        assert!(
            again
                .gate
                .check(Some(&bearer(&admin)), Scope::Admin)
                .is_ok()
        );
        assert_eq!(
            again
                .gate
                .check(Some(&bearer(&join)), Scope::Fleet)
                .unwrap()
                .scope,
            Scope::Fleet
        );
        assert!(
            again
                .gate
                .check(Some(&bearer(&minted)), Scope::Read)
                .is_ok()
        );
        let supplied = Gate::setup(
            &dir,
            Supplied {
                admin: Some("operator-token".into()),
                ..Supplied::default()
            },
        )
        .unwrap();
        assert!(supplied.new_admin.is_none());
        assert!(
            supplied
                .gate
                .check(Some(&bearer(&admin)), Scope::Read)
                .is_err()
        );
        assert!(
            supplied
                .gate
                .check(Some("Bearer operator-token"), Scope::Admin)
                .is_ok()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn targets_come_from_the_path() {
        assert_eq!(target_of("/v1/modules/hello/switch"), "hello");
        assert_eq!(target_of("/v1/apply"), "");
        assert_eq!(target_of("/installBiz"), "");
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
