//! `berth logs NAME`: what a module wrote (stdout, stderr, `berth:base/log`).

use anyhow::{Context as _, Result, bail};
use berth_api::{ErrorBody, LogEntry, LogList};
use futures::StreamExt as _;

use crate::commands::Output;

/// What to show.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// The module.
    pub name: String,
    /// Keep printing new lines as the module writes them.
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines from this long ago on (e.g. 30s, 5m, 1h).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this version's lines.
    #[arg(long)]
    pub version: Option<String>,
    /// Ops API of the base.
    #[arg(long, default_value = "http://127.0.0.1:1238", env = "BERTH_BASE")]
    pub base: String,
    /// Output format (`json`: one JSON object per line; `yaml`: a list item per line).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

fn print(entry: &LogEntry, output: Output) {
    match output {
        Output::Json => println!("{}", serde_json::to_string(entry).expect("serializable")),
        Output::Yaml => print!(
            "{}",
            serde_yaml_ng::to_string(&[entry]).expect("serializable")
        ),
        Output::Table | Output::Wide => println!(
            "{} {}@{} {:<5} [{}] {}",
            entry.at,
            entry.module,
            entry.version,
            entry.level,
            entry.request_id.as_deref().unwrap_or("-"),
            entry.message
        ),
    }
}

/// `berth logs`.
pub async fn run(args: LogsArgs) -> Result<()> {
    let client = crate::client::OpsClient::new(&args.base)?;
    let mut url = client.url(&format!("/v1/modules/{}/logs", args.name));
    {
        let mut query = url.query_pairs_mut();
        if let Some(since) = &args.since {
            query.append_pair("since", since);
        }
        if let Some(version) = &args.version {
            query.append_pair("version", version);
        }
        if args.follow {
            query.append_pair("follow", "true");
        }
    }
    // Checks the base answers (clear error otherwise) before a long poll.
    client.health().await?;
    let response = crate::auth::client_builder()
        .build()?
        .get(url)
        .send()
        .await
        .context("cannot reach the base")?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => return Err(crate::error::ApiError::from(err.error).into()),
            Err(_) => bail!("the base answered {status}"),
        }
    }
    if !args.follow {
        let list: LogList = response.json().await.context("reading the logs")?;
        if list.lines.is_empty() && !args.output.is_data() {
            // On stderr: stdout stays the module's lines only.
            eprintln!("no lines yet");
        }
        for entry in &list.lines {
            print(entry, args.output);
        }
        return Ok(());
    }
    let mut stream = response.bytes_stream();
    let mut pending = Vec::new();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.context("the log stream broke")?);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let entry: LogEntry =
                serde_json::from_slice(&line).context("the base sent a malformed log line")?;
            print(&entry, args.output);
        }
    }
    Ok(())
}
