//! Kubernetes-style manifests the controller takes (`berth apply -f`).
//!
//! ```yaml
//! apiVersion: berth.dev/v1
//! kind: ModuleDeployment
//! metadata: { name: orders }
//! spec:
//!   module: { name: orders, version: 1.4.0, artifact: "https://…/orders.wasm", digest: "sha256:…" }
//!   replicas: 6
//!   baseSelector: { group: online }
//!   strategy: { batches: 3, pauseBetween: 5s, needConfirm: false, maxUnavailable: 0 }
//!   route: { pathPrefix: /orders }
//! ```
//!
//! [`parse`] reads YAML or JSON and reports the first problem with the path
//! of the field (`spec.replicas: invalid type: string "six", expected u32`),
//! as `kubectl` does: unknown fields, wrong types and invalid values alike.
//!
//! Koupleless' `koupleless.io/v1alpha1` ModuleDeployment is taken too and
//! mapped onto berth's ([`koupleless`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Route, TrafficRules};

pub mod koupleless;
pub mod scale;

pub use scale::{Autoscale, Metric, Replicas, ScaleToZero, Target};

/// The `apiVersion` this build understands.
pub const API_VERSION: &str = "berth.dev/v1";

/// Any manifest `berth apply` takes, told apart by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Manifest {
    /// A module version × replicas over a base group.
    ModuleDeployment(ModuleDeployment),
}

/// `kind: ModuleDeployment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleDeployment {
    /// `berth.dev/v1`.
    pub api_version: String,
    /// `ModuleDeployment`.
    pub kind: String,
    /// Name and labels.
    pub metadata: Metadata,
    /// What should run where.
    pub spec: DeploymentSpec,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The resource name.
    pub name: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `spec` of a ModuleDeployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// The module version to run.
    pub module: ModuleRef,
    /// How many bases should run it (at most one replica per base), or
    /// `all`: one on every matching base. Absent with `autoscale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
    /// Go to no replica at all while the gateways report no load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<ScaleToZero>,
    /// Replicas follow the load the gateways report (instead of `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// Labels a base must carry, e.g. `{group: online}`.
    #[serde(default)]
    pub base_selector: BTreeMap<String, String>,
    /// How a version change rolls out.
    #[serde(default)]
    pub strategy: Strategy,
    /// How replicas are spread over the matching bases.
    #[serde(default)]
    pub placement: PlacementPolicy,
    /// Which deployment keeps its replicas when a group is full: a higher
    /// priority evicts a lower one, which comes back when room returns.
    #[serde(default, skip_serializing_if = "Priority::is_standard")]
    pub priority: Priority,
    /// Where the module's traffic comes from on each base.
    #[serde(default)]
    pub route: Option<Route>,
    /// Traffic rules to set on each base.
    #[serde(default)]
    pub rules: Option<TrafficRules>,
}

/// `spec.placement`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PlacementPolicy {
    /// Bases with the fewest modules first (the default): replicas spread out.
    #[default]
    Spread,
    /// Bases with the most modules (and room left) first: fills bases up,
    /// leaving others empty.
    BinPack,
}

/// `spec.priority`: `critical`, `standard` (the default) or `besteffort`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Evicted by nothing; evicts standard and best-effort replicas.
    BestEffort,
    /// The default: evicts best-effort replicas, evicted by critical ones.
    #[default]
    Standard,
    /// Evicts standard and best-effort replicas when its group is full.
    Critical,
}

impl Priority {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Standard => "standard",
            Priority::BestEffort => "besteffort",
        }
    }

    /// Whether this is the default (left out of a manifest written back).
    pub fn is_standard(&self) -> bool {
        *self == Priority::Standard
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Refused inside the visitor, so the error carries the field's path.
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Priority;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("critical, standard or besteffort")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Priority, E> {
                match text {
                    "critical" => Ok(Priority::Critical),
                    "standard" => Ok(Priority::Standard),
                    "besteffort" => Ok(Priority::BestEffort),
                    other => Err(E::custom(format!(
                        "`{other}` is not a priority; use critical, standard or besteffort"
                    ))),
                }
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// `spec.module`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleRef {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// Where bases download the artifact (`http(s)://…` or `file:/…`).
    pub artifact: String,
    /// `sha256:<64 hex>` of the artifact.
    pub digest: String,
}

/// `spec.strategy`: batched rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// Batches the replicas are upgraded in.
    #[serde(default = "one")]
    pub batches: u32,
    /// Wait between batches, e.g. `5s`, `1m`.
    #[serde(default)]
    pub pause_between: Option<String>,
    /// Wait for `berth rollout confirm` before each batch after the first.
    #[serde(default)]
    pub need_confirm: bool,
    /// Replicas that may be unavailable during the rollout. A berth base
    /// upgrades a replica by installing the new version beside the old one
    /// and switching atomically, so no replica is ever unavailable: the
    /// field is accepted (manifests written for Koupleless keep working) and
    /// changes nothing.
    #[serde(default)]
    pub max_unavailable: u32,
}

fn one() -> u32 {
    1
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            batches: 1,
            pause_between: None,
            need_confirm: false,
            max_unavailable: 0,
        }
    }
}

/// A manifest problem, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// `spec.replicas`, or empty for the document itself.
    pub path: String,
    /// What is wrong and, where it helps, what is expected.
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ManifestError {}

fn at(path: &str, message: impl Into<String>) -> ManifestError {
    ManifestError {
        path: path.into(),
        message: message.into(),
    }
}

/// Parses one manifest (YAML or JSON) and checks its values.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    // `kind` first, then the whole document as that kind: deserializing
    // through a tagged enum would lose the field paths.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Kind {
        kind: Option<String>,
        api_version: Option<String>,
    }
    let kind: Kind = serde_yaml_ng::from_str(text).map_err(|e| at("", e.to_string()))?;
    match kind.kind.as_deref() {
        Some("ModuleDeployment")
            if kind
                .api_version
                .as_deref()
                .is_some_and(|v| koupleless::API_VERSIONS.contains(&v)) =>
        {
            let deployment = koupleless::parse(text)?;
            validate_deployment(&deployment).map_err(koupleless::path_of)?;
            Ok(Manifest::ModuleDeployment(deployment))
        }
        Some("ModuleDeployment") => {
            let deployment: ModuleDeployment = with_paths(text)?;
            validate_deployment(&deployment)?;
            Ok(Manifest::ModuleDeployment(deployment))
        }
        Some(other) => Err(at(
            "kind",
            format!("unknown kind `{other}`; this controller takes ModuleDeployment"),
        )),
        None => Err(at(
            "kind",
            "missing; this controller takes kind: ModuleDeployment",
        )),
    }
}

/// Deserializes `text` as `T`, naming the path of the first bad field.
fn with_paths<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ManifestError> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde_yaml_ng often names the path itself (`spec.strategy: unknown
        // field …`, the map holding an unknown field); then its path is the
        // precise one. It ends with the line and column, which helps.
        match message.split_once(": ") {
            Some((own, rest)) if !own.contains(' ') && path.starts_with(own) => at(own, rest),
            _ => at(&path, message),
        }
    })
}

fn validate_deployment(d: &ModuleDeployment) -> Result<(), ManifestError> {
    if d.api_version != API_VERSION {
        return Err(at(
            "apiVersion",
            format!(
                "`{}` is not supported; use `{API_VERSION}` (or `{}` for a Koupleless manifest)",
                d.api_version,
                koupleless::API_VERSIONS[0]
            ),
        ));
    }
    if let Err(e) = crate::ModuleName::parse(&d.metadata.name) {
        return Err(at(
            "metadata.name",
            format!("`{}` is not a name: {}", e.given, e.expected),
        ));
    }
    let m = &d.spec.module;
    if let Err(e) = crate::ModuleName::parse(&m.name) {
        return Err(at("spec.module.name", e.to_string()));
    }
    if let Err(e) = crate::Version::parse(&m.version) {
        return Err(at("spec.module.version", e.to_string()));
    }
    if !(m.artifact.starts_with("http://")
        || m.artifact.starts_with("https://")
        || m.artifact.starts_with("file:"))
    {
        return Err(at(
            "spec.module.artifact",
            format!("`{}` must be an http(s):// URL or a file: path", m.artifact),
        ));
    }
    let hex = m.digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(at(
            "spec.module.digest",
            "expected `sha256:` followed by 64 hex characters",
        ));
    }
    let s = &d.spec.strategy;
    if s.batches == 0 {
        return Err(at("spec.strategy.batches", "must be at least 1"));
    }
    scale::validate(&d.spec)?;
    if let Some(Replicas::Count(replicas)) = d.spec.replicas
        && replicas > 0
        && s.batches > replicas
    {
        return Err(at(
            "spec.strategy.batches",
            format!(
                "{} batches for {replicas} replicas: batches cannot outnumber replicas",
                s.batches
            ),
        ));
    }
    if let Some(pause) = &s.pause_between
        && humantime::parse_duration(pause).is_err()
    {
        return Err(at(
            "spec.strategy.pauseBetween",
            format!("`{pause}` is not a duration like 5s or 1m"),
        ));
    }
    if let Some(route) = &d.spec.route
        && let Some(prefix) = &route.path_prefix
        && !prefix.starts_with('/')
    {
        return Err(at(
            "spec.route.pathPrefix",
            format!("`{prefix}` must start with `/`"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: berth.dev/v1
kind: ModuleDeployment
metadata: { name: orders }
spec:
  module: { name: orders, version: 1.4.0, artifact: \"https://example.invalid/orders.wasm\", digest: \"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\" }
  replicas: 6
  baseSelector: { group: online }
  strategy: { batches: 3, pauseBetween: 5s, needConfirm: false, maxUnavailable: 0 }
  route: { pathPrefix: /orders }
";

    #[test]
    fn a_good_manifest_parses_from_yaml_and_json() {
        let Manifest::ModuleDeployment(d) = parse(GOOD).unwrap();
        assert_eq!(
            (d.spec.replicas, d.spec.strategy.batches),
            (Some(Replicas::Count(6)), 3)
        );
        assert_eq!(d.spec.base_selector["group"], "online");
        let json = serde_json::to_string(&Manifest::ModuleDeployment(d.clone())).unwrap();
        assert_eq!(parse(&json).unwrap(), Manifest::ModuleDeployment(d));
    }

    fn error(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        parse(&GOOD.replace(from, to)).unwrap_err().to_string()
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        let cases = [
            (
                "replicas: 6",
                "replicas: six",
                "spec.replicas: invalid type: string \"six\", expected u32",
            ),
            (
                "replicas: 6",
                "replicas: -1",
                "spec.replicas: invalid type: integer `-1`, expected u32",
            ),
            (
                "replicas: 6",
                "replicas: 6\n  colour: red",
                "spec: unknown field `colour`",
            ),
            (
                "batches: 3,",
                "batches: 3, bogus: 1,",
                "spec.strategy: unknown field `bogus`",
            ),
            (
                "needConfirm: false",
                "needConfirm: maybe",
                "spec.strategy.needConfirm: invalid type",
            ),
            (
                "kind: ModuleDeployment",
                "kind: Deployment",
                "kind: unknown kind `Deployment`",
            ),
            (
                "apiVersion: berth.dev/v1",
                "apiVersion: v0",
                "apiVersion: `v0` is not supported",
            ),
            (
                "name: orders }\nspec",
                "name: Orders }\nspec",
                "metadata.name: `Orders` is not a name",
            ),
            (
                "digest: \"sha256:2cf",
                "digest: \"md5:2cf",
                "spec.module.digest: expected `sha256:`",
            ),
            (
                "pauseBetween: 5s",
                "pauseBetween: soon",
                "spec.strategy.pauseBetween: `soon` is not a duration",
            ),
            (
                "batches: 3,",
                "batches: 9,",
                "spec.strategy.batches: 9 batches for 6 replicas",
            ),
            (
                "pathPrefix: /orders",
                "pathPrefix: orders",
                "spec.route.pathPrefix: `orders` must start with `/`",
            ),
            (
                "artifact: \"https://",
                "artifact: \"ftp://",
                "spec.module.artifact:",
            ),
        ];
        for (from, to, expected) in cases {
            let message = error(from, to);
            assert!(
                message.contains(expected),
                "{message}\nexpected: {expected}"
            );
        }
        assert!(
            parse("replicas: [")
                .unwrap_err()
                .to_string()
                .contains("line")
        );
    }
}
