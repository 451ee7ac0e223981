//! `berth switch`, `berth rollback`, `berth rules get|set`: versions and
//! traffic rules of a module on a base.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use berth_api::{SwitchResponse, TrafficRules};
use serde::Serialize;

use crate::client::OpsClient;
use crate::commands::{Output, print_json};

/// A switch or rollback, with what the rules make of it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Switched {
    #[serde(flatten)]
    switched: SwitchResponse,
    /// Why the new default may serve less than the command suggests.
    warnings: Vec<String>,
}

/// `berth switch NAME VERSION`.
pub async fn switch(client: &OpsClient, name: &str, version: &str, output: Output) -> Result<()> {
    let switched = client.switch(name, version).await?;
    let warnings = unreachable_default(name, &switched.current, &client.rules(name).await?);
    if output.data(&Switched {
        switched: switched.clone(),
        warnings: warnings.clone(),
    }) {
        return Ok(());
    }
    if switched.previous == switched.current {
        println!("{name}@{} already is the default", switched.current);
    } else {
        println!(
            "{name}: default {} → {} (rollback: berth rollback {name})",
            switched.previous, switched.current
        );
    }
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// `berth rollback NAME`.
pub async fn rollback(client: &OpsClient, name: &str, output: Output) -> Result<()> {
    let switched = client.rollback(name).await?;
    let warnings = unreachable_default(name, &switched.current, &client.rules(name).await?);
    if output.data(&Switched {
        switched: switched.clone(),
        warnings: warnings.clone(),
    }) {
        return Ok(());
    }
    println!(
        "{name}: rolled back, default {} → {}",
        switched.previous, switched.current
    );
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// Warnings when `rules` send every request before it reaches the default
/// version `default`: a rule with no conditions catches all traffic the
/// rules before it leave, so the default serves nothing.
fn unreachable_default(name: &str, default: &str, rules: &TrafficRules) -> Vec<String> {
    let Some((index, rule)) = rules
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.matches.is_empty())
    else {
        return Vec::new();
    };
    let label = rule
        .name
        .as_ref()
        .map_or_else(|| format!("#{}", index + 1), |n| format!("`{n}`"));
    let targets: Vec<(&str, u32)> = match (&rule.version, &rule.split) {
        (Some(v), _) => vec![(v.as_str(), 100)],
        (None, Some(split)) => split
            .iter()
            .filter(|w| w.weight > 0)
            .map(|w| (w.version.as_str(), w.weight))
            .collect(),
        (None, None) => return Vec::new(),
    };
    if targets.iter().all(|(v, _)| *v == default) {
        return Vec::new(); // the catch-all sends everything to the default anyway
    }
    let goes_to = match &rule.split {
        None => targets[0].0.to_string(),
        Some(_) => targets
            .iter()
            .map(|(v, w)| format!("{v} {w}%"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let outcome = if targets.iter().any(|(v, _)| *v == default) {
        format!("so the default {name}@{default} serves only that rule's share")
    } else {
        format!("so the default {name}@{default} serves no request")
    };
    vec![format!(
        "rule {label} matches every request and sends it to {goes_to}, {outcome}\n\
         hint: see the rules with `berth rules get {name}`, and change them with `berth rules set {name} -f rules.yaml`"
    )]
}

/// `berth rules get NAME`: YAML for people, JSON with `-o json`.
pub async fn get(client: &OpsClient, name: &str, output: Output) -> Result<()> {
    let rules = client.rules(name).await?;
    match output {
        Output::Json => print_json(&rules),
        _ => print!("{}", serde_yaml_ng::to_string(&rules)?),
    }
    Ok(())
}

/// What `-f FILE` is called in messages: `standard input` for `-`.
pub fn source_name(file: &Path) -> String {
    if file == Path::new("-") {
        "standard input".into()
    } else {
        file.display().to_string()
    }
}

/// `berth rules set NAME -f FILE` (YAML or JSON; `-` reads stdin).
pub async fn set(client: &OpsClient, name: &str, file: &Path, output: Output) -> Result<()> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the rules from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    // YAML is a superset of JSON: one parser takes both.
    let rules: TrafficRules = serde_yaml_ng::from_str(&text)
        .map_err(|e| anyhow!("{} is not a valid rules document: {e}", source_name(file)))?;
    let set = client.set_rules(name, &rules).await?;
    if output.data(&set) {
        return Ok(());
    }
    println!(
        "{name}: {} rule(s), {} traffic unit(s) in force",
        set.rules.len(),
        set.traffic_units.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::{Rule, WeightedVersion};

    fn split(name: &str) -> Rule {
        Rule {
            name: Some(name.into()),
            split: Some(vec![WeightedVersion {
                version: "1.0.0".into(),
                weight: 100,
            }]),
            ..Rule::default()
        }
    }

    #[test]
    fn a_catch_all_rule_hides_the_default() {
        let rules = TrafficRules {
            rules: vec![split("all")],
            ..TrafficRules::default()
        };
        let w = unreachable_default("greeter", "2.0.0", &rules);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("rule `all` matches every request and sends it to 1.0.0 100%"));
        assert!(w[0].contains("greeter@2.0.0 serves no request"));
    }

    #[test]
    fn conditional_rules_leave_the_default_reachable() {
        let mut rule = split("beta");
        rule.matches =
            vec![serde_yaml_ng::from_str("{on: header, name: x-beta, exact: \"yes\"}").unwrap()];
        let rules = TrafficRules {
            rules: vec![rule],
            ..TrafficRules::default()
        };
        assert!(unreachable_default("greeter", "2.0.0", &rules).is_empty());
        assert!(unreachable_default("greeter", "2.0.0", &TrafficRules::default()).is_empty());
        // A catch-all to the default itself hides nothing.
        let rules = TrafficRules {
            rules: vec![split("all")],
            ..TrafficRules::default()
        };
        assert!(unreachable_default("greeter", "1.0.0", &rules).is_empty());
    }
}
