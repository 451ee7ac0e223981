//! `berth switch`, `berth rollback`, `berth rules get|set`: versions and
//! traffic rules of a module on a base.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use berth_api::TrafficRules;

use crate::client::OpsClient;
use crate::commands::{Output, print_json};

/// `berth switch NAME VERSION`.
pub async fn switch(client: &OpsClient, name: &str, version: &str) -> Result<()> {
    let switched = client.switch(name, version).await?;
    if switched.previous == switched.current {
        println!("{name}@{} already is the default", switched.current);
    } else {
        println!(
            "{name}: default {} → {} (rollback: berth rollback {name})",
            switched.previous, switched.current
        );
    }
    Ok(())
}

/// `berth rollback NAME`.
pub async fn rollback(client: &OpsClient, name: &str) -> Result<()> {
    let switched = client.rollback(name).await?;
    println!(
        "{name}: rolled back, default {} → {}",
        switched.previous, switched.current
    );
    Ok(())
}

/// `berth rules get NAME`: YAML for people, JSON with `-o json`.
pub async fn get(client: &OpsClient, name: &str, output: Output) -> Result<()> {
    let rules = client.rules(name).await?;
    match output {
        Output::Json => print_json(&rules),
        Output::Text => print!("{}", serde_yaml_ng::to_string(&rules)?),
    }
    Ok(())
}

/// `berth rules set NAME -f FILE` (YAML or JSON; `-` reads stdin).
pub async fn set(client: &OpsClient, name: &str, file: &Path) -> Result<()> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the rules from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    // YAML is a superset of JSON: one parser takes both.
    let rules: TrafficRules = serde_yaml_ng::from_str(&text)
        .map_err(|e| anyhow!("{} is not a valid rules document: {e}", file.display()))?;
    let set = client.set_rules(name, &rules).await?;
    println!(
        "{name}: {} rule(s), {} traffic unit(s) in force",
        set.rules.len(),
        set.traffic_units.len()
    );
    Ok(())
}
