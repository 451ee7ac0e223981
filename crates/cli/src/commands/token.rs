//! `berth token create|list` and `berth audit`: minting scoped tokens and
//! reading the audit log, on the controller (default) or on one base
//! (`--base`). Both need an admin token.

use std::time::Duration;

use anyhow::{Result, bail};
use berth_api::ErrorBody;
use berth_api::audit::{AuditList, AuditRecord};
use berth_api::auth::{AUDIT_PATH, Scope, TOKENS_PATH, TokenInfo, TokenList};

use crate::commands::Output;
use crate::commands::table::Table;

/// Which server a token or audit command talks to.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// The controller API; several, comma separated, fail over to each other.
    #[arg(long, default_value = super::controller::DEFAULT_CONTROLLER, env = "BERTH_CONTROLLER")]
    controller: String,
    /// Talk to this base's ops API instead of the controller, e.g.
    /// http://127.0.0.1:1238.
    #[arg(long)]
    base: Option<String>,
}

/// `berth token …`.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Mint a token with a scope; it is printed once and stored hashed.
    ///
    /// Scopes: read (look), deploy (change what runs), admin (everything,
    /// tokens and the audit log too), fleet (what bases and gateways need).
    ///
    /// Examples:
    ///   berth token create --scope read --name ci
    ///   berth token create --scope deploy --name release --base http://127.0.0.1:1238
    #[command(verbatim_doc_comment)]
    Create {
        /// The scope: read, deploy, admin or fleet.
        #[arg(long)]
        scope: String,
        /// Its name, as the audit log shows who acted.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The tokens' names and scopes (never the tokens).
    List {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

impl TokenCommand {
    /// Its `-o`.
    pub fn output(&self) -> Output {
        match self {
            TokenCommand::Create { output, .. } | TokenCommand::List { output, .. } => *output,
        }
    }
}

/// `berth audit` flags.
#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only records since then: a duration back (10m, 2h) or a time
    /// (2026-01-31T12:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Keep printing new records as they come.
    #[arg(short, long)]
    follow: bool,
    #[command(flatten)]
    target: Target,
    /// Output format (json: one record per line).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Sends `method path?query` to the target and decodes its JSON answer.
async fn call(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, String)],
) -> Result<serde_json::Value> {
    let Some(base) = &target.base else {
        return super::controller::call(&target.controller, path, |http, url| {
            http.request(method.clone(), url).query(query)
        })
        .await;
    };
    let client = crate::client::OpsClient::new(base)?;
    let response = crate::auth::client_builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?
        .request(method, client.url(path))
        .query(query)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the base at {base}: {e}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => return Err(crate::error::ApiError::from(err.error).into()),
            Err(_) => bail!("the base answered {status}"),
        }
    }
    Ok(serde_json::from_slice(&body)?)
}

/// `berth token`.
pub async fn token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create {
            scope,
            name,
            target,
            output,
        } => {
            let scope: Scope = scope.parse()?;
            let answer = call(
                &target,
                reqwest::Method::POST,
                TOKENS_PATH,
                &[("name", name), ("scope", scope.to_string())],
            )
            .await?;
            let info: TokenInfo = serde_json::from_value(answer)?;
            if output.data(&info) {
                return Ok(());
            }
            let token = info.token.unwrap_or_default();
            println!(
                "token `{}` ({} scope), shown this once:",
                info.name, info.scope
            );
            println!("  {token}");
            println!("use it with: export BERTH_TOKEN={token}");
        }
        TokenCommand::List { target, output } => {
            let answer = call(&target, reqwest::Method::GET, TOKENS_PATH, &[]).await?;
            let list: TokenList = serde_json::from_value(answer)?;
            if output.data(&list) {
                return Ok(());
            }
            let mut table = Table::new(["NAME", "SCOPE"]);
            for token in &list.tokens {
                table.row([token.name.clone(), token.scope.to_string()]);
            }
            table.print();
        }
    }
    Ok(())
}

/// `berth audit`.
pub async fn audit(args: AuditArgs) -> Result<()> {
    let mut query = Vec::new();
    if let Some(since) = &args.since {
        berth_api::audit::parse_since(since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        query.push(("since", since.clone()));
    }
    let fetch = |query: Vec<(&'static str, String)>| {
        let target = args.target.clone();
        async move {
            let answer = call(&target, reqwest::Method::GET, AUDIT_PATH, &query).await?;
            Ok::<_, anyhow::Error>(serde_json::from_value::<AuditList>(answer)?.records)
        }
    };
    let records = fetch(query.clone()).await?;
    let json = args.output == Output::Json;
    let mut table = Table::new(["TIME", "WHO", "ACTION", "TARGET", "STATUS", "REQUEST"]);
    let mut last = None;
    for record in &records {
        print_record(record, json, &mut table);
        last = Some(record.seq);
    }
    if !json {
        if records.is_empty() && !args.follow {
            println!(
                "no audited calls{}",
                if args.since.is_some() {
                    " in that time"
                } else {
                    ""
                }
            );
            return Ok(());
        }
        print!("{}", table.render());
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut query = query.clone();
        if let Some(seq) = last {
            query.push(("after", seq.to_string()));
        }
        for record in fetch(query).await? {
            if last.is_some_and(|seq| record.seq <= seq) {
                continue;
            }
            let mut table = Table::new(["TIME", "WHO", "ACTION", "TARGET", "STATUS", "REQUEST"]);
            print_record(&record, json, &mut table);
            if !json {
                // Each followed record on its own line, without a header.
                if let Some(line) = table.render().lines().nth(1) {
                    println!("{line}");
                }
            }
            last = Some(record.seq);
        }
    }
}

fn print_record(record: &AuditRecord, json: bool, table: &mut Table) {
    if json {
        println!(
            "{}",
            serde_json::to_string(record).expect("a record serializes")
        );
        return;
    }
    table.row([
        record.time.clone(),
        record.who.clone(),
        record.action.clone(),
        if record.target.is_empty() {
            "-".into()
        } else {
            record.target.clone()
        },
        record.status.to_string(),
        record.request_id.clone(),
    ]);
}
