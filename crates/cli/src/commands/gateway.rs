//! `berth gateway`: run the fleet gateway in the foreground.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use berth_gateway::{Gateway, GatewayConfig};

/// Flags of `berth gateway`.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// The controller API, or several (comma-separated) tried in turn.
    #[arg(long, default_value = super::controller::DEFAULT_CONTROLLER, env = "BERTH_CONTROLLER")]
    controller: String,
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:8000", env = "BERTH_GATEWAY_LISTEN")]
    listen: SocketAddr,
    /// The secret the bases trust (`berth base --gateway-secret`): with it
    /// the gateway pins the version its rules chose on each request.
    #[arg(long, env = "BERTH_GATEWAY_SECRET", hide_env_values = true)]
    gateway_secret: Option<String>,
    /// This gateway's name in its load reports [default: gateway-<port>]
    #[arg(long)]
    name: Option<String>,
    /// Largest request body forwarded, in bytes (bodies are buffered so a
    /// failed attempt can be retried on another replica).
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// First ejection of a failing replica; doubles with each failure in a row.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ejection: Duration,
    /// Requests held per deployment while it has no ready replica
    /// (scale from zero); more are answered 503.
    #[arg(long, default_value_t = 1000)]
    hold_queue: usize,
    /// How long a held request waits for a ready replica before a 503.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    hold_timeout: Duration,
    /// How often the gateway reports each deployment's load to the
    /// controller (the autoscaler's input), from 10ms to 4s, e.g. 250ms,
    /// 1s: a traffic step reaches the autoscaler within about two of them.
    #[arg(long, default_value = "250ms", value_parser = load_report_interval)]
    load_report_interval: Duration,
    /// Listener threads, each with its own single-threaded runtime, its
    /// own client connections (a new one goes to the thread with the
    /// fewest open) and its own connections to the bases [default: one per core]; 0 serves on one
    /// work-stealing runtime (TOKIO_WORKER_THREADS workers) instead.
    #[arg(long, env = "BERTH_GATEWAY_THREADS")]
    threads: Option<usize>,
    /// The HTTP version requests go to bases in: http2 (cleartext, one
    /// connection per listener thread and base, requests multiplexed on
    /// it) or http1 (a pool of keep-alive connections, for a base that
    /// does not speak HTTP/2; every berth base does).
    #[arg(long, default_value = "http2")]
    base_protocol: berth_gateway::BaseProtocol,
    /// Format of the gateway's logs.
    #[arg(long, value_enum, default_value_t = crate::LogFormat::Text)]
    pub log_format: crate::LogFormat,
    /// The controller's join token (its `fleet` scope covers what a gateway
    /// calls: the endpoint table, load reports, activation).
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Talk to a controller started with --insecure-no-auth (send no token).
    #[arg(long, env = "BERTH_INSECURE_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    insecure_no_auth: bool,
    /// HTTPS for clients (`--tls-cert`, `--tls-key`).
    #[command(flatten)]
    tls: crate::tls::ServerTlsArgs,
}

/// `--load-report-interval`: a duration within the gateway's bounds.
fn load_report_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); give e.g. 250ms or 1s"))?;
    berth_gateway::check_report_interval(interval).map_err(|e| e.to_string())?;
    Ok(interval)
}

/// `berth gateway`.
pub async fn run(args: GatewayArgs) -> Result<()> {
    let mut config = GatewayConfig::new(&args.controller, args.listen)?;
    config.secret = args.gateway_secret.filter(|s| !s.is_empty());
    config.max_body_bytes = args.max_body_bytes;
    config.ejection = args.ejection;
    config.hold_queue = args.hold_queue;
    config.hold_timeout = args.hold_timeout;
    config.report_interval = args.load_report_interval;
    config.threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    config.base_protocol = args.base_protocol;
    config.name = args.name.unwrap_or_default();
    config.token = args.join_token.filter(|t| !t.trim().is_empty());
    config.tls = args.tls.load()?;
    let scheme = berth_api::tls::scheme(config.tls.as_ref());
    let gateway = Gateway::start(config.clone()).await?;
    if config.token.is_none() && !args.insecure_no_auth {
        // Checked once the address is bound, so a port clash is named first.
        gateway.shutdown().await;
        anyhow::bail!(
            "berth gateway needs the controller's join token to read the endpoint table and \
             report load: pass --join-token (or set BERTH_JOIN_TOKEN); the controller printed it \
             at its first start and keeps it in its data directory as join.token\n\
             hint: for a controller started with --insecure-no-auth, pass --insecure-no-auth"
        );
    }
    if args.insecure_no_auth && config.token.is_none() {
        tracing::warn!("berth gateway sends no token to the controller (--insecure-no-auth)");
    }
    let addr = gateway.addr;
    if args.log_format == crate::LogFormat::Json {
        tracing::info!(listen = %format!("{scheme}://{addr}"), controllers = %config.controllers.join(","), "berth gateway serving");
    } else {
        println!("berth gateway serving on {scheme}://{addr}");
        println!("  controller {}", config.controllers.join(", "));
        println!(
            "  pins       {}",
            if config.secret.is_some() {
                "versions pinned for bases started with the same --gateway-secret"
            } else {
                "none (no --gateway-secret): each base's own rules choose the version"
            }
        );
        println!("  metrics    {scheme}://{addr}/metrics");
    }
    tokio::signal::ctrl_c().await?;
    gateway.shutdown().await;
    Ok(())
}
