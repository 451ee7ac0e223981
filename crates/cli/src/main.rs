//! `berth`: the one command of berth.
//!
//! Each subcommand is a thin layer over the crates: `berth base` runs a base
//! ([`berth_base`]), `berth up` runs a local base with the example modules
//! installed, ready to curl.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use berth_api::InstallRequest;
use berth_base::{Base, BaseConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: hot-deployable WebAssembly modules on a long-running base"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format of the base's own logs.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
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
}

#[derive(Args)]
struct BaseArgs {
    /// Address of the ingress (module traffic).
    #[arg(long, default_value = berth_api::DEFAULT_INGRESS_ADDR, env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Address of the ops API.
    #[arg(long, default_value = berth_api::DEFAULT_OPS_ADDR, env = "BERTH_OPS")]
    ops: SocketAddr,
    /// Directory for the installed set and the module cache
    /// [default: `berth base`: $XDG_DATA_HOME/berth/base; `berth up`: ./.berth]
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Concurrent module instances across the base (pooling allocator slots).
    #[arg(long, default_value_t = 1000)]
    max_instances: u32,
    /// Linear memory one instance may use, in MiB.
    #[arg(long, default_value_t = 128)]
    max_memory_mib: usize,
    /// Deadline of one request inside a module (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Largest artifact accepted by install, in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    max_artifact_bytes: usize,
}

impl BaseArgs {
    fn config(&self, default_data_dir: PathBuf) -> BaseConfig {
        let mut config = BaseConfig::new(self.data_dir.clone().unwrap_or(default_data_dir));
        config.ingress_addr = self.listen;
        config.ops_addr = self.ops;
        config.runtime.max_instances = self.max_instances;
        config.runtime.max_memory_bytes = self.max_memory_mib << 20;
        config.runtime.request_timeout = self.request_timeout;
        config.max_artifact_bytes = self.max_artifact_bytes;
        config
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Base(args) => run_base(args.config(default_data_dir()), false).await,
            Command::Up(args) => run_base(args.config(PathBuf::from(".berth")), true).await,
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("berth/base");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/berth/base"),
        None => PathBuf::from(".berth"),
    }
}

/// The example modules `berth up` installs: (name, route prefix, bytes).
const EXAMPLES: &[(&str, &str, &[u8])] = &[
    ("hello", "/hello", berth_example_modules::HELLO_BYTES),
    ("echo", "/echo", berth_example_modules::ECHO_BYTES),
];

async fn run_base(config: BaseConfig, with_examples: bool) -> Result<()> {
    let data_dir = config.data_dir.clone();
    let running = Base::start(config).await?;
    if with_examples {
        for (name, prefix, bytes) in EXAMPLES {
            if running.base.list(Some(name)).is_ok() {
                continue; // installed before (possibly another version): leave it as the user set it
            }
            let request = InstallRequest {
                name: (*name).into(),
                version: env!("CARGO_PKG_VERSION").into(),
                route: Some(berth_api::Route {
                    host: None,
                    path_prefix: Some((*prefix).into()),
                }),
                artifact: None,
                digest: None,
            };
            running
                .base
                .install(request, Some(bytes::Bytes::from_static(bytes)))
                .await
                .with_context(|| format!("cannot install the example module `{name}`"))?;
        }
    }
    let ingress = running.ingress_addr;
    println!("berth base serving");
    println!("  ingress  http://{ingress}");
    println!("  ops API  http://{}/v1/modules", running.ops_addr);
    println!("  data     {}", data_dir.display());
    for module in running.base.list(None)?.modules {
        println!(
            "  module   {}@{} {:?} at {} ({:.1} ms install)",
            module.name, module.version, module.state, module.route, module.install_duration_ms
        );
    }
    if with_examples {
        println!("try:  curl http://{ingress}/hello");
        println!("      curl -d 'hi there' http://{ingress}/echo/anything");
    }
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("shutting down");
    running.shutdown().await;
    Ok(())
}
