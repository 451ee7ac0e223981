//! `berth list`, `berth status NAME`, `berth undeploy NAME`: look at and
//! remove what a base runs.

use anyhow::Result;
use berth_api::ModuleInfo;

use crate::client::OpsClient;
use crate::commands::{Output, print_json};

/// `berth list`.
pub async fn list(client: &OpsClient, output: Output) -> Result<()> {
    let modules = client.list().await?;
    match output {
        Output::Json => print_json(&modules),
        Output::Text if modules.is_empty() => println!("no modules installed"),
        Output::Text => table(&modules),
    }
    Ok(())
}

fn table(modules: &[ModuleInfo]) {
    let rows: Vec<[String; 7]> = modules
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.version.clone(),
                format!("{:?}", m.state).to_lowercase(),
                m.route.to_string(),
                m.requests.to_string(),
                m.errors.to_string(),
                short_digest(&m.digest),
            ]
        })
        .collect();
    let header = [
        "NAME", "VERSION", "STATE", "ROUTE", "REQUESTS", "ERRORS", "DIGEST",
    ]
    .map(String::from);
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn short_digest(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

/// `berth status NAME`.
pub async fn status(client: &OpsClient, name: &str, output: Output) -> Result<()> {
    let versions = client.module(name).await?;
    if output == Output::Json {
        print_json(&versions);
        return Ok(());
    }
    println!("{name}");
    for m in &versions {
        println!("  version {} ({:?})", m.version, m.state);
        println!("    route        {}", m.route);
        println!("    digest       {}", m.digest);
        println!("    requests     {} ({} failed)", m.requests, m.errors);
        println!(
            "    installed    {} in {:.1} ms (cache {:?})",
            m.installed_at, m.install_duration_ms, m.compile_cache
        );
        println!("    size         {} bytes", m.size_bytes);
        let l = &m.limits;
        let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "    limits       memory {} MiB, timeout {} ms, {} concurrent, request body {} B, response body {} B",
            show(l.memory_mib),
            show(l.timeout_ms),
            show(l.max_concurrency.map(u64::from)),
            show(l.max_request_bytes),
            show(l.max_response_bytes)
        );
        println!(
            "    in flight    {} ({} KiB of instance memory)",
            m.in_flight,
            m.memory_in_use_bytes / 1024
        );
        let r = &m.recent;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        println!(
            "    last {:.0}s     {:.1} req/s, {:.1}% errors, p50 {}, p99 {}",
            r.window_seconds,
            r.requests_per_second,
            r.error_rate * 100.0,
            ms(r.p50_ms),
            ms(r.p99_ms)
        );
        for trap in &m.recent_traps {
            println!(
                "    failure      {} request {}: {}",
                trap.at, trap.request_id, trap.message
            );
            for line in trap
                .detail
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(12)
            {
                println!("                   {line}");
            }
        }
        if !m.allowed_hosts.is_empty() {
            println!("    may reach    {}", m.allowed_hosts.join(", "));
        }
        if !m.config_keys.is_empty() {
            println!("    config       {}", m.config_keys.join(", "));
        }
        if let Some(error) = &m.error {
            println!("    error        {error}");
        }
    }
    Ok(())
}

/// `berth undeploy NAME [--version V]`.
pub async fn undeploy(
    client: &OpsClient,
    name: &str,
    version: Option<&str>,
    output: Output,
) -> Result<()> {
    let removed = client.uninstall(name, version).await?;
    match output {
        Output::Json => print_json(&removed),
        Output::Text => {
            for m in &removed.removed {
                println!("undeployed {}@{}", m.name, m.version);
            }
        }
    }
    Ok(())
}
