//! `berth`: the one command of berth, in the style of cargo and kubectl.
//!
//! Each subcommand is a thin layer over the crates: `berth base` / `berth up`
//! run a base ([`berth_base`]); `new`, `build`, `deploy`, `dev`, `list`,
//! `status`, `undeploy` and `invoke` are the module developer's loop against
//! a base's ops API. Failures print one `error:` line (plus a `hint:` when
//! there is an obvious fix) and exit with status 1; under `-o json` the
//! failure is `{"error": {"code", "message", "hint"}}` on stdout instead.

/// mimalloc instead of glibc malloc: per-request allocations on the
/// ingress and gateway paths are small and short-lived, which mimalloc's
/// thread-local free lists serve without locks (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod auth;
mod client;
mod commands;
mod error;
mod project;
mod tls;
mod toolchain;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};

use commands::Output;
use commands::base::BaseArgs;
use commands::deploy::DeployArgs;
use commands::dev::DevArgs;
use commands::invoke::InvokeArgs;
use commands::new::Template;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: hot-deployable WebAssembly modules on a long-running base",
    after_help = "Your first module:\n  berth up &                 # a local base\n  berth new greeter && cd greeter\n  berth deploy               # build and install\n  berth invoke greeter       # call it\n  berth dev                  # redeploy on every save"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Trust the CA certificate(s) in this PEM file (or a self-signed
    /// server certificate) when talking to a base, controller or gateway
    /// over https, besides the public roots.
    #[arg(long, global = true, env = berth_api::tls::CA_FILE_ENV, value_name = "PATH")]
    ca_file: Option<PathBuf>,
}

/// Format of the logs of the long-running commands (`base`, `up`, `controller`).
#[derive(Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, banner included.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a base: ingress for module traffic plus the ops API.
    ///
    /// Reinstalls the modules recorded in its data directory on start.
    ///
    /// Examples:
    ///   berth base
    ///   berth base --listen 0.0.0.0:8080 --ops 127.0.0.1:1238 --data-dir /var/lib/berth
    #[command(verbatim_doc_comment)]
    Base(BaseArgs),
    /// Run a local base in the foreground with the example modules installed.
    ///
    /// Installs `hello` at /hello and `echo` at /echo (embedded in this
    /// binary) unless they are already installed, then serves.
    ///
    /// Examples:
    ///   berth up
    ///   curl http://127.0.0.1:8080/hello
    #[command(verbatim_doc_comment)]
    Up(BaseArgs),
    /// Scaffold a module project that builds as-is.
    ///
    /// Examples:
    ///   berth new greeter
    ///   berth new orders --template json --dir services/orders
    ///   berth new greeter-py --lang python
    ///   berth new greeter-js --lang js
    #[command(verbatim_doc_comment)]
    New {
        /// Module name (lowercase letters, digits, `-`).
        name: String,
        /// Language: rust, python (componentize-py) or js (componentize-js);
        /// the Python and JavaScript toolchains install on first build.
        #[arg(long, value_enum, default_value_t = project::Language::Rust)]
        lang: project::Language,
        /// Starting point (Rust: http or json; Python and JavaScript: http).
        #[arg(long, value_enum, default_value_t = Template::Http)]
        template: Template,
        /// Folder to create [default: ./NAME]
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build a module for wasm32-wasip2 and check it is a valid berth module.
    ///
    /// Examples:
    ///   berth build
    ///   berth build services/orders -o json
    #[command(verbatim_doc_comment)]
    Build {
        /// The module folder [default: .]
        path: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Build if needed and install a module into a base.
    ///
    /// Examples:
    ///   berth deploy
    ///   berth deploy services/orders --base http://10.0.0.5:1238
    ///   berth deploy target/wasm32-wasip2/release/orders.wasm --version 1.4.0 --route /orders
    #[command(verbatim_doc_comment)]
    Deploy(DeployArgs),
    /// Watch a module's sources; rebuild and hot-redeploy on every save.
    ///
    /// A failed build keeps the previous version serving. Prints the
    /// save-to-serving latency (excluding compile time) after each redeploy.
    ///
    /// Examples:
    ///   berth dev
    ///   berth dev services/orders --base http://127.0.0.1:1238
    #[command(verbatim_doc_comment)]
    Dev(DevArgs),
    /// List the modules installed on a base.
    ///
    /// Examples:
    ///   berth list
    ///   berth list -o json
    #[command(verbatim_doc_comment)]
    List {
        /// Ops API of the base.
        #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
        base: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show one module's versions, routes, digests and request counts.
    ///
    /// Examples:
    ///   berth status greeter
    #[command(verbatim_doc_comment)]
    Status {
        /// The module.
        name: String,
        /// Ops API of the base.
        #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
        base: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Uninstall a module (every version, or one).
    ///
    /// Examples:
    ///   berth undeploy greeter
    ///   berth undeploy greeter --version 0.1.0
    #[command(verbatim_doc_comment)]
    Undeploy {
        /// The module.
        name: String,
        /// Only this version.
        #[arg(long)]
        version: Option<String>,
        /// Ops API of the base.
        #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
        base: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Make another installed version the module's default, atomically.
    ///
    /// Requests in flight finish on the old version; the old version stays
    /// installed for `berth rollback`.
    ///
    /// Examples:
    ///   berth deploy --version 2.0.0 --no-activate   # install beside the default
    ///   berth switch greeter 2.0.0
    #[command(verbatim_doc_comment)]
    Switch {
        /// The module.
        name: String,
        /// The version to make the default.
        version: String,
        /// Ops API of the base.
        #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
        base: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Switch a module back to its previous default version.
    ///
    /// Examples:
    ///   berth rollback greeter
    #[command(verbatim_doc_comment)]
    Rollback {
        /// The module.
        name: String,
        /// Ops API of the base.
        #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
        base: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Read or replace a module's traffic rules (header/query/cookie/IP/path
    /// matches, weighted and sticky splits, traffic units).
    ///
    /// Examples:
    ///   berth rules get greeter
    ///   berth rules set greeter -f gray.yaml
    ///
    /// gray.yaml:
    ///   rules:
    ///     - name: testers
    ///       match: [{on: header, name: x-beta, exact: "yes"}]
    ///       version: 2.0.0
    ///     - name: gray
    ///       split: [{version: 1.0.0, weight: 90}, {version: 2.0.0, weight: 10}]
    ///       stickyBy: {on: cookie, name: uid}
    ///   trafficUnits: {blue: 2.0.0}
    #[command(verbatim_doc_comment)]
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Run the controller: ModuleDeployments in a durable store, placed onto
    /// the bases that heartbeat to it, version changes rolled out in batches.
    ///
    /// Examples:
    ///   berth controller
    ///   berth controller --listen 127.0.0.1:1239 --data-dir /var/lib/berth/controller
    ///   berth controller --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 \
    ///       --listen 0.0.0.0:1239 --advertise http://10.0.0.5:1239
    #[command(verbatim_doc_comment)]
    Controller {
        /// Address of the controller API.
        #[arg(long, default_value = commands::controller::DEFAULT_CONTROLLER)]
        listen: std::net::SocketAddr,
        /// Directory of the controller's store [default: $XDG_DATA_HOME/berth/controller]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where desired state lives: `redb:PATH`, or an etcd cluster as
        /// `etcd://HOST:PORT[,HOST:PORT…]` [default: redb: controller.redb in the data dir]
        #[arg(long)]
        store: Option<berth_controller::start::StoreSpec>,
        /// A base silent for longer than this is NotReady.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        heartbeat_timeout: std::time::Duration,
        /// Do not compile deployed modules for the bases (each base then
        /// compiles every module itself).
        #[arg(long)]
        no_code: bool,
        /// The URL other controllers on the same etcd forward writes to
        /// [default: http:// (https:// with --tls-cert) and the listen address]
        #[arg(long)]
        advertise: Option<String>,
        /// On etcd: the leader's lease; a new leader takes over within it
        /// (whole seconds, at least 2).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        leader_ttl: std::time::Duration,
        /// Accept only manifests whose artifact is signed by this ed25519
        /// public key (a file or the base64 key; repeatable): the `.sig`
        /// beside the artifact, written by `berth sign`.
        #[arg(long = "trust-key", value_name = "PUBKEY")]
        trust_keys: Vec<String>,
        /// How long a replica being removed from a Ready base (scale-in,
        /// reschedule, delete) stays assigned, marked draining so gateways
        /// stop sending it requests, before the base uninstalls it (0s: at once).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        drain_grace: std::time::Duration,
        /// Format of the controller's logs and banner.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Authentication of the API.
        #[command(flatten)]
        auth: auth::ServerAuthArgs,
        /// HTTPS for the API (`--tls-cert`, `--tls-key`).
        #[command(flatten)]
        tls: tls::ServerTlsArgs,
        /// The join token bases and gateways must present (instead of the
        /// one generated at first start and kept in the data directory).
        #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
        join_token: Option<String>,
    },
    /// The controller's store: move its whole state between backends.
    ///
    /// Examples:
    ///   berth store copy --from redb:/var/lib/berth/controller/controller.redb \
    ///       --to etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
    ///   berth store copy --from etcd://10.0.0.1:2379 --to redb:backup.redb
    #[command(verbatim_doc_comment)]
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Sign an artifact for bases and controllers started with --trust-key.
    ///
    /// Writes ARTIFACT.sig beside it: an ed25519 signature of its sha256
    /// digest. Bases and controllers read the .sig beside a path or URL;
    /// `berth deploy FILE.wasm` sends FILE.wasm.sig with the upload.
    ///
    /// Examples:
    ///   berth sign --generate-key release.key     # writes release.key (0600) and release.key.pub
    ///   berth sign orders.wasm --key release.key  # writes orders.wasm.sig
    ///   berth base --trust-key release.key.pub
    #[command(verbatim_doc_comment)]
    Sign {
        /// The artifact to sign.
        #[arg(required_unless_present = "generate_key")]
        artifact: Option<PathBuf>,
        /// The signing key file (from `berth sign --generate-key`).
        #[arg(long, required_unless_present = "generate_key")]
        key: Option<PathBuf>,
        /// Write a new signing key to PATH (mode 0600) and its public key
        /// to PATH.pub, then exit.
        #[arg(long, value_name = "PATH", conflicts_with_all = ["artifact", "key"])]
        generate_key: Option<PathBuf>,
    },
    /// Run the fleet gateway: one front door for every base of a controller.
    ///
    /// Routes each request by host and path prefix to a ModuleDeployment,
    /// chooses the version (and traffic cell) by its rules, and forwards it
    /// to the least busy of two random ready replicas over pooled
    /// connections. A replica that fails before answering is ejected and
    /// the request retried once on another; replicas being removed are
    /// drained first. Its own metrics are at /metrics.
    ///
    /// Examples:
    ///   berth gateway --controller http://127.0.0.1:1239 --listen 0.0.0.0:8000
    ///   berth gateway --controller http://ctl-a:1239,http://ctl-b:1239
    ///   BERTH_GATEWAY_SECRET=s3cret berth gateway   # bases: berth base --gateway-secret s3cret
    ///   curl http://127.0.0.1:8000/orders           # routed like the deployment's route
    ///
    /// Rules under a ModuleDeployment's spec: a traffic cell (only bases
    /// labelled group=gold) and a version:
    ///   rules:
    ///     rules:
    ///       - { name: gold, match: [{ on: header, name: x-tier, exact: gold }], cell: { group: gold } }
    ///       - { name: beta, match: [{ on: header, name: x-beta }], version: 2.0.0 }
    #[command(verbatim_doc_comment)]
    Gateway(commands::gateway::GatewayArgs),
    /// Create or update resources from a manifest (YAML or JSON; `-f -` reads stdin).
    ///
    /// A bad field is reported with its path, e.g.
    /// `spec.replicas: invalid type: string "six", expected u32, or …`.
    ///
    /// A relative `file:` artifact is resolved against the manifest's
    /// directory. The controller checks the artifact (readable, its digest, a
    /// component) and refuses the manifest otherwise, changing nothing.
    ///
    /// Examples:
    ///   berth apply -f orders.yaml
    ///   BERTH_CONTROLLER=10.0.0.5:1239 berth apply -f orders.yaml
    ///
    /// orders.yaml:
    ///   apiVersion: berth.dev/v1
    ///   kind: ModuleDeployment
    ///   metadata: { name: orders }
    ///   spec:
    ///     module:
    ///       name: orders
    ///       version: 1.4.0
    ///       artifact: file:./orders.wasm    # or file:/abs/path, https://…
    ///       digest: sha256:…                # what `berth build` prints
    ///     replicas: 3                       # or all: one on every matching base
    ///     baseSelector: { group: online }   # bases started with --labels group=online
    ///     scaleToZero: { idleAfter: 5m }    # optional: none while no request comes
    ///     priority: standard                # or critical, besteffort: who keeps a full group
    ///     strategy: { batches: 3, pauseBetween: 5s, needConfirm: false }
    ///     route: { pathPrefix: /orders }
    #[command(verbatim_doc_comment)]
    Apply {
        /// The manifest.
        #[arg(short, long)]
        file: PathBuf,
        /// The controller API; several, comma separated, fail over to each other.
        #[arg(long, default_value = commands::controller::DEFAULT_CONTROLLER, env = "BERTH_CONTROLLER")]
        controller: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// List resources: `berth get deployments`, `berth get bases`.
    ///
    /// Examples:
    ///   berth get deployments
    ///   berth get deployments -o yaml
    ///   berth get deployments -o yaml --as koupleless
    #[command(verbatim_doc_comment)]
    Get {
        /// The kind: deployments or bases.
        #[arg(value_parser = ["deployments", "deployment", "moduledeployments", "bases", "base"])]
        kind: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// With `-o yaml|json`: show the manifests in berth's form or as
        /// Koupleless' `koupleless.io/v1alpha1` ModuleDeployment.
        #[arg(long = "as", value_parser = ["berth", "koupleless"], default_value = "berth")]
        form: String,
        /// The controller API; several, comma separated, fail over to each other.
        #[arg(long, default_value = commands::controller::DEFAULT_CONTROLLER, env = "BERTH_CONTROLLER")]
        controller: String,
    },
    /// Show one resource: `berth describe deployment NAME`.
    ///
    /// Examples:
    ///   berth describe deployment orders
    #[command(verbatim_doc_comment)]
    Describe(NamedResource),
    /// Delete one resource: `berth delete deployment NAME`.
    ///
    /// Examples:
    ///   berth delete deployment orders
    #[command(verbatim_doc_comment)]
    Delete(NamedResource),
    /// Follow and steer a deployment's batched rollout.
    ///
    /// Examples:
    ///   berth rollout status orders      # exits 1 if the rollout failed
    ///   berth rollout status orders --watch   # follow it until done or failed
    ///   berth rollout confirm orders     # let the next batch go (needConfirm)
    ///   berth rollout pause orders
    ///   berth rollout resume orders
    ///   berth rollout undo orders        # back to the last version that ran
    #[command(verbatim_doc_comment)]
    Rollout {
        /// status, confirm, pause, resume or undo.
        #[arg(value_parser = ["status", "confirm", "pause", "resume", "undo"])]
        action: String,
        /// The deployment.
        name: String,
        /// Keep following (status): print each change until the rollout is
        /// done (exit 0) or failed (exit 1).
        #[arg(short, long)]
        watch: bool,
        /// The controller API; several, comma separated, fail over to each other.
        #[arg(long, default_value = commands::controller::DEFAULT_CONTROLLER, env = "BERTH_CONTROLLER")]
        controller: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show what a module wrote: stdout, stderr and berth:base/log lines,
    /// with time, version and request id.
    ///
    /// Examples:
    ///   berth logs counter
    ///   berth logs counter --follow --since 5m
    ///   berth logs counter --version 1.2.0 -o json
    #[command(verbatim_doc_comment)]
    Logs(commands::logs::LogsArgs),
    /// Send one request to a module through its base and print the response.
    ///
    /// Examples:
    ///   berth invoke greeter
    ///   berth invoke orders --path /items -d '{"name":"pen"}' -H 'content-type: application/json'
    #[command(verbatim_doc_comment)]
    Invoke(InvokeArgs),
    /// Mint and list API tokens (an admin token is needed).
    ///
    /// Clients send BERTH_TOKEN, else the first line of
    /// ~/.config/berth/token ($XDG_CONFIG_HOME/berth/token).
    ///
    /// Examples:
    ///   berth token create --scope read --name ci
    ///   berth token list
    #[command(verbatim_doc_comment)]
    Token {
        #[command(subcommand)]
        command: commands::token::TokenCommand,
    },
    /// Print the audit log: every state-changing API call, who made it and
    /// how it ended (an admin token is needed).
    ///
    /// Examples:
    ///   berth audit --since 1h
    ///   berth audit -f
    ///   berth audit --base http://127.0.0.1:1238 -o json
    #[command(verbatim_doc_comment)]
    Audit(commands::token::AuditArgs),
}

/// One controller resource by kind and name.
#[derive(clap::Args)]
struct NamedResource {
    /// The kind: deployment.
    #[arg(value_parser = ["deployment", "deployments", "moduledeployment"])]
    kind: String,
    /// Its name.
    name: String,
    /// The controller API; several, comma separated, fail over to each other.
    #[arg(long, default_value = commands::controller::DEFAULT_CONTROLLER, env = "BERTH_CONTROLLER")]
    controller: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy every key of one store into another: deployments, events,
    /// bases (each granted a fresh lease of its TTL), with progress. Stop
    /// the controllers on both first. A destination that holds anything is
    /// refused unless --force, which replaces everything there.
    Copy {
        /// The store to read: `redb:PATH` or `etcd://HOST:PORT[,HOST:PORT…]`.
        #[arg(long)]
        from: berth_controller::start::StoreSpec,
        /// The store to write, in the same form.
        #[arg(long)]
        to: berth_controller::start::StoreSpec,
        /// Replace whatever the destination holds.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Print the rules (YAML, or JSON with -o json).
    Get {
        /// The module.
        name: String,
        /// Ops API of the base.
        #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
        base: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Replace the rules with a YAML or JSON document (`-f -` reads stdin).
    Set {
        /// The module.
        name: String,
        /// The rules document.
        #[arg(short, long)]
        file: PathBuf,
        /// Ops API of the base.
        #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
        base: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// Keeps `RUST_BACKTRACE=1` (a common setting, for panics) from making
/// every error capture a host backtrace: wasmtime would walk the stack on
/// each guest trap, and anything that printed such an error with `{:?}`
/// would symbolize it against this binary's debug info, hundreds of ms on
/// the thread serving requests. berth's logs and error replies never show
/// those backtraces; panics keep theirs. Set `RUST_LIB_BACKTRACE=1` to
/// have errors capture them anyway.
fn no_error_backtraces_unless_asked() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the first thing `main` does, before any thread exists.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RUST_LIB_BACKTRACE", "0");
        }
    }
}

fn main() -> std::process::ExitCode {
    no_error_backtraces_unless_asked();
    let cli = Cli::parse();
    let (log_format, output) = (cli.command.log_format(), cli.command.output());
    init_logging(log_format);
    let trusted = match &cli.ca_file {
        Some(path) => berth_api::tls::trust_ca_file(path).map_err(anyhow::Error::from),
        None => Ok(()),
    };
    match trusted.and_then(|()| run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if output == Output::Json {
                // A script asked for JSON: it reads one JSON document on
                // stdout whether the command worked or not.
                commands::print_json(&error::to_json(&e));
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The output format the command was asked for (Table when it has none).
    fn output(&self) -> Output {
        match self {
            Command::Build { output, .. }
            | Command::List { output, .. }
            | Command::Status { output, .. }
            | Command::Undeploy { output, .. }
            | Command::Switch { output, .. }
            | Command::Rollback { output, .. }
            | Command::Apply { output, .. }
            | Command::Get { output, .. }
            | Command::Rollout { output, .. }
            | Command::Rules {
                command: RulesCommand::Get { output, .. } | RulesCommand::Set { output, .. },
            } => *output,
            Command::Describe(r) | Command::Delete(r) => r.output,
            Command::Deploy(args) => args.output,
            Command::Invoke(args) => args.output,
            Command::Logs(args) => args.output,
            Command::Token { command } => command.output(),
            Command::Audit(args) => args.output,
            Command::Base(_)
            | Command::Up(_)
            | Command::New { .. }
            | Command::Dev(_)
            | Command::Controller { .. }
            | Command::Store { .. }
            | Command::Sign { .. }
            | Command::Gateway(_) => Output::Table,
        }
    }

    /// The log format of the commands that log (`base`, `up`, `controller`).
    fn log_format(&self) -> LogFormat {
        match self {
            Command::Base(args) | Command::Up(args) => args.log_format,
            Command::Controller { log_format, .. } => *log_format,
            Command::Gateway(args) => args.log_format,
            _ => LogFormat::Text,
        }
    }
}

fn run(command: Command) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            Command::Base(args) => commands::base::base(args).await,
            Command::Up(args) => commands::base::up(args).await,
            Command::New {
                name,
                lang,
                template,
                dir,
            } => {
                let dir = commands::new::run(&name, dir, template, lang)?;
                println!("created module `{name}` in {}", dir.display());
                println!("next: cd {} && berth deploy", dir.display());
                Ok(())
            }
            Command::Build { path, output } => {
                commands::build::run(&path.unwrap_or_else(|| PathBuf::from(".")), output).map(drop)
            }
            Command::Deploy(args) => commands::deploy::run(args).await,
            Command::Dev(args) => commands::dev::run(args).await,
            Command::List { base, output } => {
                commands::list::list(&client::OpsClient::new(&base)?, output).await
            }
            Command::Status { name, base, output } => {
                commands::list::status(&client::OpsClient::new(&base)?, &name, output).await
            }
            Command::Undeploy {
                name,
                version,
                base,
                output,
            } => {
                commands::list::undeploy(
                    &client::OpsClient::new(&base)?,
                    &name,
                    version.as_deref(),
                    output,
                )
                .await
            }
            Command::Invoke(args) => commands::invoke::run(args).await,
            Command::Sign {
                artifact,
                key,
                generate_key,
            } => commands::sign::run(artifact, key, generate_key),
            Command::Logs(args) => commands::logs::run(args).await,
            Command::Controller {
                listen,
                data_dir,
                store,
                heartbeat_timeout,
                no_code,
                advertise,
                leader_ttl,
                trust_keys,
                drain_grace,
                log_format,
                auth,
                tls,
                join_token,
            } => {
                commands::controller::serve(
                    commands::controller::ServeOptions {
                        listen,
                        data_dir,
                        store,
                        heartbeat_timeout,
                        compile_for_bases: !no_code,
                        advertise,
                        leader_ttl,
                        trust_keys: berth_runtime::TrustKeys::parse(&trust_keys)?,
                        drain_grace,
                        auth,
                        tls,
                        join_token: join_token.filter(|t| !t.trim().is_empty()),
                    },
                    log_format == LogFormat::Json,
                )
                .await
            }
            Command::Gateway(args) => commands::gateway::run(args).await,
            Command::Token { command } => commands::token::token(command).await,
            Command::Audit(args) => commands::token::audit(args).await,
            Command::Apply {
                file,
                controller,
                output,
            } => commands::controller::apply(&file, &controller, output).await,
            Command::Get {
                kind,
                output,
                controller,
                ..
            } if kind.starts_with("base") => {
                commands::controller::get_bases(&controller, output).await
            }
            Command::Get {
                output,
                controller,
                form,
                ..
            } => commands::controller::get(&controller, output, form == "koupleless").await,
            Command::Rollout {
                action,
                name,
                watch,
                controller,
                output,
            } => commands::controller::rollout(&controller, &action, &name, watch, output).await,
            Command::Describe(r) => {
                commands::controller::describe(&r.controller, &r.name, r.output).await
            }
            Command::Delete(r) => {
                commands::controller::delete(&r.controller, &r.name, r.output).await
            }
            Command::Switch {
                name,
                version,
                base,
                output,
            } => {
                let client = client::OpsClient::new(&base)?;
                commands::traffic::switch(&client, &name, &version, output).await
            }
            Command::Rollback { name, base, output } => {
                commands::traffic::rollback(&client::OpsClient::new(&base)?, &name, output).await
            }
            Command::Store {
                command: StoreCommand::Copy { from, to, force },
            } => commands::store::copy(from, to, force).await,
            Command::Rules {
                command: RulesCommand::Get { name, base, output },
            } => commands::traffic::get(&client::OpsClient::new(&base)?, &name, output).await,
            Command::Rules {
                command:
                    RulesCommand::Set {
                        name,
                        file,
                        base,
                        output,
                    },
            } => {
                let client = client::OpsClient::new(&base)?;
                commands::traffic::set(&client, &name, &file, output).await
            }
        }
    })
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,notify=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only for a person at a terminal, never into a file or pipe.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
