//! Settings of a base, with defaults that run on one machine with no setup.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_runtime::RuntimeConfig;

/// Settings of a [`Base`](crate::Base).
#[derive(Debug, Clone)]
pub struct BaseConfig {
    /// Where module traffic is served.
    pub ingress_addr: SocketAddr,
    /// Where the ops API listens.
    pub ops_addr: SocketAddr,
    /// Directory holding the installed set (`base.redb`) and the module cache (`cache/`).
    pub data_dir: PathBuf,
    /// Runtime settings; [`BaseConfig::new`] puts its cache and key-value
    /// store in the data directory.
    pub runtime: RuntimeConfig,
    /// Largest artifact the base accepts (upload or download), in bytes.
    pub max_artifact_bytes: usize,
    /// How long downloading an artifact from a URL may take.
    pub fetch_timeout: Duration,
    /// Add `x-berth-module: name@version` to every module response.
    pub version_header: bool,
    /// Per-module metrics, recent-traffic stats and log capture. Off, only
    /// request counters run and guest output goes to the base's stdout
    /// (for measuring their cost: `bench/throughput.py`).
    pub observability: bool,
    /// Most connections each listener (ingress, ops API) keeps open; more
    /// are answered `503` and closed (`--max-connections`).
    pub max_connections: usize,
    /// Ingress threads (`--ingress-threads`), each with its own
    /// single-threaded runtime and its own connections (a new one goes to
    /// the thread with the fewest open: `berth_api::threads`), so a request
    /// and its guest never leave the thread that took its connection; 0: the ingress is served on the caller's
    /// work-stealing runtime. See `crate::server`.
    pub ingress_threads: usize,
    /// Longest a client may take to send a request's headers before the
    /// connection is closed: slowloris protection (`--header-read-timeout`).
    pub header_read_timeout: Duration,
    /// Most installs in progress or waiting at once; more are answered
    /// `503 too_many_installs` with `Retry-After` and change nothing
    /// (`--max-pending-installs`). As many prepare at once as there are cores.
    pub max_pending_installs: usize,
    /// Directories install may read artifact files from (`--artifact-dir`).
    /// A path is canonicalized (symlinks, `..`) before the check. Empty:
    /// no artifact is read by path; uploads and URLs still work.
    pub artifact_dirs: Vec<PathBuf>,
    /// Hosts artifact URLs may name (`--artifact-host`): `host`,
    /// `host:port`, `*.domain` or `*`. Empty: any host at a public address.
    /// Loopback, link-local and private addresses are fetched only from a
    /// host named exactly (not by a wildcard); the controller's host is
    /// named implicitly.
    pub artifact_hosts: Vec<String>,
    /// Public keys artifacts must be signed with (`--trust-key`). None
    /// trusted: signatures are not required.
    pub trust_keys: berth_runtime::TrustKeys,
    /// The controller to register with and heartbeat to, if any.
    pub controller: Option<ControllerLink>,
    /// Export a span per request hop to this OTLP/HTTP collector (e.g.
    /// `http://127.0.0.1:4318`; spans go to `/v1/traces`). `None` exports
    /// nothing and starts nothing.
    pub otlp_endpoint: Option<String>,
    /// The secret a fleet gateway proves itself with: a request carrying it
    /// may pin the version it serves (the gateway chose it by the
    /// deployment's rules). `None`: pins are ignored, the base's own rules
    /// decide.
    pub gateway_secret: Option<String>,
    /// The token gate in front of the ops API (`berth base` sets it up from
    /// its data directory). `None`: the ops API is open and unaudited.
    pub auth: Option<std::sync::Arc<berth_api::auth::Gate>>,
    /// TLS both listeners serve over (`--tls-cert`/`--tls-key`); `None`:
    /// plain HTTP.
    pub tls: Option<berth_api::tls::ServerTls>,
}

impl BaseConfig {
    /// Defaults: ingress on 127.0.0.1:8080, ops on 127.0.0.1:1238, state in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            ingress_addr: berth_api::DEFAULT_INGRESS_ADDR
                .parse()
                .expect("valid default"),
            ops_addr: berth_api::DEFAULT_OPS_ADDR.parse().expect("valid default"),
            runtime: RuntimeConfig::new(&data_dir),
            data_dir,
            max_artifact_bytes: 256 << 20,
            fetch_timeout: Duration::from_secs(60),
            version_header: true,
            observability: true,
            max_connections: 4096,
            ingress_threads: 0,
            header_read_timeout: Duration::from_secs(10),
            max_pending_installs: 64,
            artifact_dirs: Vec::new(),
            artifact_hosts: Vec::new(),
            trust_keys: berth_runtime::TrustKeys::none(),
            controller: None,
            otlp_endpoint: None,
            gateway_secret: None,
            auth: None,
            tls: None,
        }
    }

    /// The same settings with both listeners on ephemeral localhost ports (for tests).
    pub fn on_ephemeral_ports(mut self) -> Self {
        self.ingress_addr = "127.0.0.1:0".parse().expect("valid");
        self.ops_addr = "127.0.0.1:0".parse().expect("valid");
        self
    }
}

/// How a base reaches its controller.
#[derive(Debug, Clone)]
pub struct ControllerLink {
    /// The controller API, e.g. `http://127.0.0.1:1239`; with several
    /// controllers on one etcd, their URLs separated by commas: the base
    /// talks to the one that answered last and fails over to the next
    /// ([`berth_api::failover::Controllers`]).
    pub url: String,
    /// This base's name in the fleet.
    pub name: String,
    /// Labels deployments select bases by.
    pub labels: BTreeMap<String, String>,
    /// Most module versions this base takes.
    pub capacity_modules: u32,
    /// Time between heartbeats.
    pub interval: Duration,
    /// Load the code the controller compiled for this engine, when it has
    /// some, instead of compiling each module here.
    pub controller_code: bool,
    /// How long an install waits for the controller's code before it
    /// compiles the module with Winch here and serves on that, the
    /// controller's code taking over when it arrives (only with the Winch
    /// tier: a Cranelift-only base waits for it). Default 250 ms: a small
    /// module's code is usually ready by then, a large one's takes seconds.
    pub code_wait: Duration,
    /// The ingress address reported to the controller (what gateways
    /// connect to); `None`: the address the ingress is bound to.
    pub advertise: Option<String>,
    /// The controller's join token (`--join-token`), sent as a bearer
    /// token on every call to the controller; `None`: none is sent (a
    /// controller running with `--insecure-no-auth`).
    pub join_token: Option<String>,
}

impl ControllerLink {
    /// A link to the controller at `url` (`http://` is added when it names
    /// no scheme; several comma separated fail over) for the base `name`, labelled by `KEY=VALUE` pairs, with
    /// `berth base`'s defaults: 500 modules, a heartbeat every 2 s, and the
    /// controller's compiled code. Every base binary parses its flags here.
    pub fn new(
        url: &str,
        name: impl Into<String>,
        labels: &[String],
    ) -> Result<Self, crate::BaseError> {
        let labels = labels
            .iter()
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| crate::BaseError::InvalidLabel(pair.clone()))
            })
            .collect::<Result<_, _>>()?;
        let controllers = berth_api::failover::Controllers::parse(url)?;
        Ok(Self {
            url: controllers.urls().join(","),
            name: name.into(),
            labels,
            capacity_modules: 500,
            interval: Duration::from_secs(2),
            controller_code: true,
            code_wait: Duration::from_millis(250),
            advertise: None,
            join_token: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ControllerLink;

    #[test]
    fn a_controller_link_parses_labels_and_adds_a_scheme() {
        let link = ControllerLink::new(
            "127.0.0.1:1239",
            "a",
            &["group=online".into(), " zone = b ".into()],
        )
        .unwrap();
        assert_eq!(link.url, "http://127.0.0.1:1239");
        assert_eq!(link.labels["group"], "online");
        assert_eq!(link.labels["zone"], "b");
        let kept = ControllerLink::new("https://ctl.example", "a", &[]).unwrap();
        assert_eq!(kept.url, "https://ctl.example");
        let several =
            ControllerLink::new("127.0.0.1:1239,http://10.0.0.2:1239/", "a", &[]).unwrap();
        assert_eq!(several.url, "http://127.0.0.1:1239,http://10.0.0.2:1239");
        let bad = ControllerLink::new("127.0.0.1:1239,", "a", &[]).unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("--controller: `` is not a controller address"),
            "{bad}"
        );
    }

    #[test]
    fn a_label_without_a_value_is_refused_naming_it() {
        let err = ControllerLink::new("127.0.0.1:1239", "a", &["group".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--labels `group` is not KEY=VALUE (e.g. group=online)"
        );
    }
}
