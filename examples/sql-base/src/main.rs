//! `sql-base`: a custom berth base with a shared SQLite database
//! (`berth:sql/query`), built with [`berth_base::Base::builder`]. It serves
//! and joins a controller exactly like `berth base` (same ops API, same
//! `--controller` agent), and reports `berth:sql/query@0.1.0` among its
//! capabilities, so the controller places SQL modules only on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_base::{Base, BaseConfig, ControllerLink};
use berth_sql_base::SqlCapability;
use clap::Parser;

/// A berth base that shares a SQLite database with its modules, one per module.
#[derive(Parser)]
#[command(name = "sql-base", version)]
struct Args {
    /// Where module traffic is served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the ops API listens (`berth` commands talk to it).
    #[arg(long, default_value = "127.0.0.1:1238")]
    ops: SocketAddr,
    /// State, module cache, key-value store and the modules' SQL databases.
    #[arg(long, default_value = "sql-base-data")]
    data_dir: PathBuf,
    /// Idle SQLite connections kept per module.
    #[arg(long, default_value_t = 4)]
    pool_size: usize,
    /// Register with this controller and run what it assigns.
    #[arg(long)]
    controller: Option<String>,
    /// This base's name in the fleet (default: `sql-base-<port>`).
    #[arg(long)]
    name: Option<String>,
    /// Labels deployments select bases by, KEY=VALUE (repeatable).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Most module versions this base takes.
    #[arg(long, default_value_t = 500)]
    capacity_modules: u32,
    /// Time between heartbeats to the controller.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
}

impl Args {
    fn controller_link(&self) -> Result<Option<ControllerLink>> {
        let Some(url) = &self.controller else {
            return Ok(None);
        };
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("sql-base-{}", self.listen.port()));
        let mut link = ControllerLink::new(url, name, &self.labels)?;
        link.capacity_modules = self.capacity_modules;
        link.interval = self.heartbeat_interval;
        Ok(Some(link))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = BaseConfig::new(&args.data_dir);
    config.ingress_addr = args.listen;
    config.ops_addr = args.ops;
    config.controller = args.controller_link()?;
    let running = Base::builder()
        .config(config)
        .capability(SqlCapability::new(
            args.data_dir.join("sql"),
            args.pool_size,
        ))
        .start()
        .await
        .context("the SQL base cannot start")?;
    println!("sql-base serving");
    println!("  ingress  http://{}", running.ingress_addr);
    println!("  ops API  http://{}", running.ops_addr);
    println!("  data     {}", args.data_dir.display());
    println!(
        "  offers   {}",
        running.base.runtime().interfaces().join(", ")
    );
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    running.shutdown().await;
    Ok(())
}
