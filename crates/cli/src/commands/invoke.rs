//! `berth invoke NAME`: one request to a module through its base, for debugging.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use berth_api::{MODULE_HEADER, ModuleState, REQUEST_ID_HEADER};

use crate::client::OpsClient;
use crate::commands::Output;

/// What to send.
#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The module.
    pub name: String,
    /// Path below the module's route prefix (e.g. /items?limit=2).
    #[arg(long, default_value = "")]
    pub path: String,
    /// Request body; makes the default method POST.
    #[arg(short, long)]
    pub data: Option<String>,
    /// HTTP method [default: GET, or POST with --data]
    #[arg(short = 'X', long)]
    pub method: Option<String>,
    /// Extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Print the status line and response headers too.
    #[arg(short, long)]
    pub include: bool,
    /// Ops API of the base.
    #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
    pub base: String,
    /// Output format (`json`/`yaml`: status, headers, body and timing as
    /// one document on stdout).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// One response, for `-o json|yaml`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Invoked {
    method: String,
    url: String,
    status: u16,
    headers: std::collections::BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced).
    body: String,
    served_by: Option<String>,
    request_id: Option<String>,
    ms: f64,
}

/// Sends the request; the body goes to stdout, a summary to stderr. Fails
/// (non-zero exit) when the response status is 400 or above.
pub async fn run(args: InvokeArgs) -> Result<()> {
    let client = OpsClient::new(&args.base)?;
    let versions = client.module(&args.name).await?;
    let Some(active) = versions.iter().find(|m| m.state == ModuleState::Active) else {
        bail!(
            "module `{}` has no active version (all are inactive or failed)\nhint: see `berth status {}`",
            args.name,
            args.name
        );
    };
    let ingress = client.ingress().await?;
    let prefix = active.route.prefix().trim_end_matches('/');
    let path = if args.path.is_empty() || args.path.starts_with('/') || args.path.starts_with('?') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    let url = format!("{}{prefix}{path}", ingress.as_str().trim_end_matches('/'));
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| if args.data.is_some() { "POST" } else { "GET" }.into());
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
        .with_context(|| format!("`{method}` is not an HTTP method"))?;
    let http = berth_api::tls::with_trusted_ca(reqwest::Client::builder()).build()?;
    let mut request = http.request(method.clone(), &url);
    if let Some(host) = &active.route.host {
        request = request.header("host", host);
    }
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("header `{header}` is not `Name: value`");
        };
        request = request.header(name.trim(), value.trim());
    }
    if let Some(data) = &args.data {
        request = request.body(data.clone());
    }
    let started = Instant::now();
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the ingress at {url}"))?;
    let elapsed = started.elapsed();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .context("reading the response body")?;
    if args.output.is_data() {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        args.output.data(&Invoked {
            method: method.to_string(),
            url: url.clone(),
            status: status.as_u16(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("<binary>").to_string()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            served_by: header(MODULE_HEADER),
            request_id: header(REQUEST_ID_HEADER),
            ms: elapsed.as_secs_f64() * 1e3,
        });
        if status.as_u16() >= 400 {
            // The document above says what happened; the exit status says it failed.
            std::process::exit(1);
        }
        return Ok(());
    }
    if args.include {
        println!("HTTP {status}");
        for (name, value) in &headers {
            println!("{name}: {}", value.to_str().unwrap_or("<binary>"));
        }
        println!();
    }
    use std::io::Write as _;
    std::io::stdout().write_all(&body)?;
    let served_by = headers
        .get(MODULE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("the base");
    let id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    eprintln!(
        "{method} {url} → {status} in {:.1} ms, served by {served_by}, request id {id}",
        elapsed.as_secs_f64() * 1e3
    );
    if status.as_u16() >= 400 {
        bail!("the module answered {status}");
    }
    Ok(())
}
