//! `berth list`, `berth status NAME`, `berth undeploy NAME`: look at and
//! remove what a base runs.

use anyhow::Result;
use berth_api::ModuleInfo;

use crate::client::OpsClient;
use crate::commands::table::Table;
use crate::commands::{Output, human_bytes};

/// `berth list`.
pub async fn list(client: &OpsClient, output: Output) -> Result<()> {
    let modules = client.list().await?;
    if output.data(&modules) {
        return Ok(());
    }
    if modules.is_empty() {
        println!("no modules installed");
        return Ok(());
    }
    let wide = output == Output::Wide;
    let mut header = vec![
        "NAME", "VERSION", "STATE", "ROUTE", "REQUESTS", "ERRORS", "DIGEST",
    ];
    if wide {
        header.extend(["SIZE", "INSTALLED"]);
    }
    let mut table = Table::new(header);
    for m in &modules {
        let mut row = vec![
            m.name.clone(),
            m.version.clone(),
            lower(&m.state),
            m.route.to_string(),
            m.requests.to_string(),
            m.errors.to_string(),
            short_digest(&m.digest),
        ];
        if wide {
            row.extend([human_bytes(m.size_bytes), m.installed_at.clone()]);
        }
        table.row(row);
    }
    table.print();
    Ok(())
}

/// A state or outcome as `list` and `status` print it: `active`, `miss`.
fn lower(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}").to_lowercase()
}

fn short_digest(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

/// One `label  value` line of `status`, values aligned in one column.
fn field(label: &str, value: impl std::fmt::Display) {
    println!("    {label:<13}{value}");
}

/// `berth status NAME`.
pub async fn status(client: &OpsClient, name: &str, output: Output) -> Result<()> {
    let versions = client.module(name).await?;
    if output.data(&versions) {
        return Ok(());
    }
    println!("{name}");
    for m in &versions {
        println!("  version {} ({})", m.version, lower(&m.state));
        field("route", &m.route);
        field("digest", &m.digest);
        field(
            "requests",
            format_args!("{} ({} failed)", m.requests, m.errors),
        );
        field(
            "installed",
            format_args!(
                "{} in {:.1} ms (compile cache {})",
                m.installed_at,
                m.install_duration_ms,
                lower(&m.compile_cache)
            ),
        );
        field("size", human_bytes(m.size_bytes));
        if let Some(tier) = &m.tier {
            field(
                "code",
                match tier {
                    berth_api::CodeTier::Winch => {
                        "winch (baseline; Cranelift's code takes over when compiled)"
                    }
                    berth_api::CodeTier::Cranelift => "cranelift (optimized)",
                },
            );
        }
        let l = &m.limits;
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
        field(
            "limits",
            format_args!(
                "memory {}, timeout {}, {} concurrent, request body {}, response body {}, cpu {}, instances {}",
                or_dash(l.memory_mib.map(|mib| human_bytes(mib << 20))),
                or_dash(l.timeout_ms.map(|ms| format!("{ms} ms"))),
                or_dash(l.max_concurrency.map(|n| n.to_string())),
                or_dash(l.max_request_bytes.map(human_bytes)),
                or_dash(l.max_response_bytes.map(human_bytes)),
                l.cpu.map_or("unlimited".to_string(), |c| format!(
                    "{c} cores (queue {})",
                    or_dash(l.cpu_queue_wait_ms.map(|ms| format!("{ms} ms")))
                )),
                match l.policy.unwrap_or_default() {
                    berth_api::InstancePolicy::Fresh => "fresh".to_string(),
                    berth_api::InstancePolicy::Pooled(p) => format!(
                        "pooled ({} requests, {} ms idle)",
                        p.max_requests, p.max_idle_ms
                    ),
                },
            ),
        );
        field(
            "in flight",
            format_args!(
                "{} ({} of instance memory)",
                m.in_flight,
                human_bytes(m.memory_in_use_bytes)
            ),
        );
        let r = &m.recent;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        field(
            &format!("last {:.0}s", r.window_seconds),
            format_args!(
                "{:.1} req/s, {:.1}% errors, p50 {}, p99 {}",
                r.requests_per_second,
                r.error_rate * 100.0,
                ms(r.p50_ms),
                ms(r.p99_ms)
            ),
        );
        for trap in &m.recent_traps {
            let panic = panic_message(client, m, &trap.request_id).await;
            let message = panic.as_deref().unwrap_or(&trap.message);
            field(
                "failure",
                format_args!("{} request {}: {message}", trap.at, trap.request_id),
            );
            for line in trap_frames(&trap.message, &trap.detail) {
                println!("{:17}{line}", "");
            }
        }
        if !m.allowed_hosts.is_empty() {
            field("may reach", m.allowed_hosts.join(", "));
        }
        if !m.config_keys.is_empty() {
            field("config", m.config_keys.join(", "));
        }
        if let Some(error) = &m.error {
            field("error", error);
        }
    }
    Ok(())
}

/// The message of the panic behind a failed request: what the module wrote
/// after `panicked at …` in its log lines of that request, if anything.
async fn panic_message(client: &OpsClient, m: &ModuleInfo, request_id: &str) -> Option<String> {
    let lines = client.logs(&m.name, &m.version).await.ok()?;
    let mine: Vec<&str> = lines
        .iter()
        .filter(|l| l.request_id.as_deref() == Some(request_id))
        .map(|l| l.message.as_str())
        .collect();
    let at = mine.iter().position(|l| l.contains("panicked at"))?;
    let location = mine[at]
        .split_once("panicked at ")
        .map(|(_, rest)| rest.trim_end_matches(':').to_string())?;
    let message = mine
        .get(at + 1)
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("note:"))
        .unwrap_or("(no message)");
    Some(format!("panicked at {location}: {message}"))
}

/// The lines of a trap's detail worth showing: the module's own frames of
/// the wasm backtrace as `at FUNCTION` (not the standard library's panic
/// machinery), and nothing that only repeats `message`.
fn trap_frames(message: &str, detail: &str) -> Vec<String> {
    const RUNTIME: [&str; 9] = [
        "std::",
        "core::",
        "alloc::",
        "<std::",
        "<core::",
        "<alloc::",
        "__rustc::",
        "abort",
        "wit_bindgen",
    ];
    let frames: Vec<String> = detail
        .lines()
        .filter_map(frame_name)
        .filter(|name| !RUNTIME.iter().any(|r| name.starts_with(r)))
        .map(|name| format!("at {name}"))
        .take(4)
        .collect();
    if detail.contains("wasm backtrace") {
        return frames;
    }
    // No wasm backtrace (a memory or deadline failure): the detail is the
    // message again, or adds a line or two to it.
    detail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !message.contains(l) && !l.contains(message))
        .take(4)
        .map(str::to_string)
        .collect()
}

/// The function of a wasm backtrace line, without crate hashes
/// (`  3: 0x1a2b - m.wasm!std[d123]::process::abort` → `std::process::abort`).
fn frame_name(line: &str) -> Option<String> {
    let (number, rest) = line.trim().split_once(':')?;
    number.parse::<u32>().ok()?;
    let (_, function) = rest.split_once(" - ")?;
    let function = function.split_once('!').map_or(function, |(_, f)| f).trim();
    let mut name = String::new();
    let mut depth = 0;
    for c in function.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => name.push(c),
            _ => {}
        }
    }
    Some(name)
}

/// `berth undeploy NAME [--version V]`.
pub async fn undeploy(
    client: &OpsClient,
    name: &str,
    version: Option<&str>,
    output: Output,
) -> Result<()> {
    let removed = client.uninstall(name, version).await?;
    if !output.data(&removed) {
        for m in &removed.removed {
            println!("undeployed {}@{}", m.name, m.version);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PANIC: &str = "error while executing at wasm backtrace:
    0:   0xb141 - panic.wasm!abort
    1:   0x6930 - panic.wasm!std[d123b7a1a2ed1472]::sys::pal::wasi::helpers::abort_internal
    3:   0x5a3d - panic.wasm!__rustc[b7974e8690430dd9]::__rust_abort
    8:   0x76c0 - panic.wasm!std[d123b7a1a2ed1472]::sys::backtrace::__rust_end_short_backtrace::<std[d123b7a1a2ed1472]::panicking::panic_handler::{closure#0}, !>
   10:   0x2b86 - panic.wasm!core[6d9e98711c484d2e]::panicking::panic_fmt
   11:   0x2870 - panic.wasm!wasi:http/incoming-handler@0.2.12#handle

Caused by:
    wasm trap: wasm `unreachable` instruction executed";

    #[test]
    fn a_panic_shows_the_modules_frame_not_the_standard_librarys() {
        assert_eq!(
            trap_frames("wasm trap: wasm `unreachable` instruction executed", PANIC),
            ["at wasi:http/incoming-handler@0.2.12#handle"]
        );
    }

    #[test]
    fn a_failure_without_backtrace_prints_its_text_once() {
        let message = "the module ran past its 500 ms deadline";
        assert!(trap_frames(message, message).is_empty());
    }
}
