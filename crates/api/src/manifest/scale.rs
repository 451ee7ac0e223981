//! How many replicas a ModuleDeployment runs: a number, `all` (a peer
//! deployment: one replica on every matching base), scale-to-zero when
//! idle, or an autoscaler's range.
//!
//! ```yaml
//! spec:
//!   replicas: all                 # or 3
//!   scaleToZero: { idleAfter: 5m }
//! ---
//! spec:
//!   autoscale: { minReplicas: 0, maxReplicas: 8, target: { rps: 300 }, scaleUpWindow: 2s, scaleDownWindow: 30s }
//! ```
//!
//! [`validate`] checks them together (`replicas` and `autoscale` exclude
//! each other) and names the field at fault.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DeploymentSpec, ManifestError, at};

/// `spec.replicas`: a number, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    /// This many bases run it (at most one replica per base).
    Count(u32),
    /// A peer deployment: exactly one replica on every Ready base that
    /// matches the selector (and offers what the module imports),
    /// following bases as they join and leave.
    All,
}

impl std::fmt::Display for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replicas::Count(n) => write!(f, "{n}"),
            Replicas::All => f.write_str("all"),
        }
    }
}

impl Serialize for Replicas {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Replicas::Count(n) => s.serialize_u32(*n),
            Replicas::All => s.serialize_str("all"),
        }
    }
}

impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Replicas;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("u32, or `all` for one replica on every matching base")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Replicas, E> {
                u32::try_from(v)
                    .map(Replicas::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Replicas, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_type(serde::de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Replicas, E> {
                if v == "all" {
                    Ok(Replicas::All)
                } else {
                    Err(E::invalid_type(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `spec.scaleToZero`: no replica at all while no request comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleToZero {
    /// How long the gateways must report no request in flight, none per
    /// second and none held before the replicas go (`5m`, `30s`; default 5m).
    #[serde(default = "five_minutes")]
    pub idle_after: String,
}

fn five_minutes() -> String {
    "5m".into()
}

impl ScaleToZero {
    /// `idleAfter` as a duration (validated at parse).
    pub fn idle_after(&self) -> Duration {
        humantime::parse_duration(&self.idle_after).unwrap_or(Duration::from_secs(300))
    }
}

/// `spec.autoscale`: replicas follow the load the gateways report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest replicas; 0 lets it scale to zero (the gateway activates it).
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Load one replica should carry.
    pub target: Target,
    /// The short window load is averaged over to scale up (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_window: Option<String>,
    /// How long load must stay below target before replicas go (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_window: Option<String>,
    /// A base of its group with this many requests in flight (across its
    /// modules) is too loaded to take a new replica of it: the replica goes
    /// to the buffer group instead. Unset: only room counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_base_in_flight: Option<u32>,
}

fn one() -> u32 {
    1
}

/// Default `scaleUpWindow`.
pub const SCALE_UP_WINDOW: Duration = Duration::from_secs(2);
/// Default `scaleDownWindow`.
pub const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(30);

impl Autoscale {
    /// `scaleUpWindow` as a duration.
    pub fn scale_up_window(&self) -> Duration {
        self.scale_up_window
            .as_deref()
            .and_then(|w| humantime::parse_duration(w).ok())
            .unwrap_or(SCALE_UP_WINDOW)
    }

    /// `scaleDownWindow` as a duration.
    pub fn scale_down_window(&self) -> Duration {
        self.scale_down_window
            .as_deref()
            .and_then(|w| humantime::parse_duration(w).ok())
            .unwrap_or(SCALE_DOWN_WINDOW)
    }
}

/// `spec.autoscale.target`: one of concurrency or rps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Requests in flight (and held) per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<f64>,
    /// Requests per second per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
}

/// What a [`Target`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// In-flight plus held requests.
    Concurrency,
    /// Requests per second.
    Rps,
}

impl Metric {
    /// `concurrency` or `rps`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Concurrency => "concurrency",
            Metric::Rps => "rps",
        }
    }
}

impl Target {
    /// The metric and its per-replica value (validated at parse).
    pub fn get(&self) -> (Metric, f64) {
        match (self.concurrency, self.rps) {
            (Some(c), _) => (Metric::Concurrency, c),
            (None, Some(r)) => (Metric::Rps, r),
            (None, None) => (Metric::Concurrency, 1.0),
        }
    }
}

impl DeploymentSpec {
    /// Whether the deployment may run no replica at all while idle
    /// (`scaleToZero`, or `autoscale` with `minReplicas: 0`).
    pub fn scales_to_zero(&self) -> bool {
        self.scale_to_zero.is_some() || self.autoscale.as_ref().is_some_and(|a| a.min_replicas == 0)
    }

    /// The replica count in words: `3`, `all`, `autoscale 1-5`.
    pub fn replicas_text(&self) -> String {
        match (&self.replicas, &self.autoscale) {
            (Some(r), _) => r.to_string(),
            (None, Some(a)) => format!("autoscale {}-{}", a.min_replicas, a.max_replicas),
            (None, None) => "?".into(),
        }
    }
}

fn duration(path: &str, value: &str) -> Result<Duration, ManifestError> {
    match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(at(path, format!("`{value}` must be longer than 0"))),
        Err(_) => Err(at(
            path,
            format!("`{value}` is not a duration like 30s or 5m"),
        )),
    }
}

/// Checks `replicas`, `scaleToZero` and `autoscale` together.
pub(super) fn validate(spec: &DeploymentSpec) -> Result<(), ManifestError> {
    match (&spec.replicas, &spec.autoscale) {
        (Some(_), Some(_)) => {
            return Err(at(
                "spec.autoscale",
                "cannot be combined with spec.replicas: the autoscaler sets the replicas; drop one of them",
            ));
        }
        (None, None) => {
            return Err(at(
                "spec.replicas",
                "missing; give a number, `all` (one replica on every matching base), or spec.autoscale",
            ));
        }
        _ => {}
    }
    if let Some(z) = &spec.scale_to_zero {
        if spec.autoscale.is_some() {
            return Err(at(
                "spec.scaleToZero",
                "cannot be combined with spec.autoscale; set spec.autoscale.minReplicas: 0 to let the autoscaler scale to zero",
            ));
        }
        duration("spec.scaleToZero.idleAfter", &z.idle_after)?;
    }
    if let Some(a) = &spec.autoscale {
        if a.max_replicas == 0 {
            return Err(at("spec.autoscale.maxReplicas", "must be at least 1"));
        }
        if a.min_replicas > a.max_replicas {
            return Err(at(
                "spec.autoscale.minReplicas",
                format!(
                    "{} is above maxReplicas {}; minReplicas must be at most maxReplicas",
                    a.min_replicas, a.max_replicas
                ),
            ));
        }
        match (a.target.concurrency, a.target.rps) {
            (Some(_), Some(_)) => {
                return Err(at(
                    "spec.autoscale.target",
                    "give one of concurrency or rps, not both",
                ));
            }
            (None, None) => {
                return Err(at(
                    "spec.autoscale.target",
                    "missing a value; give concurrency (requests in flight per replica) or rps (requests per second per replica)",
                ));
            }
            (Some(v), None) | (None, Some(v)) => {
                let field = if a.target.concurrency.is_some() {
                    "spec.autoscale.target.concurrency"
                } else {
                    "spec.autoscale.target.rps"
                };
                if !(v.is_finite() && v > 0.0) {
                    return Err(at(field, format!("{v} must be above 0")));
                }
            }
        }
        if a.busy_base_in_flight == Some(0) {
            return Err(at(
                "spec.autoscale.busyBaseInFlight",
                "0 must be above 0 (a base is busy at this many requests in flight); leave it out to count only room",
            ));
        }
        if let Some(w) = &a.scale_up_window {
            duration("spec.autoscale.scaleUpWindow", w)?;
        }
        if let Some(w) = &a.scale_down_window {
            duration("spec.autoscale.scaleDownWindow", w)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::manifest::{Manifest, parse};

    use super::*;

    fn spec(lines: &str) -> Result<DeploymentSpec, String> {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: orders }}\nspec:\n  module: {{ name: orders, version: 1.0.0, artifact: \"file:/o.wasm\", digest: \"sha256:{}\" }}\n{lines}",
            "ab".repeat(32)
        );
        parse(&text)
            .map(|Manifest::ModuleDeployment(d)| d.spec)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn replicas_take_a_number_or_all_and_round_trip() {
        assert_eq!(
            spec("  replicas: 3\n").unwrap().replicas,
            Some(Replicas::Count(3))
        );
        let all = spec("  replicas: all\n").unwrap();
        assert_eq!(all.replicas, Some(Replicas::All));
        assert_eq!(all.replicas_text(), "all");
        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(json["replicas"], "all");
        let back: DeploymentSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, all);
        for (bad, says) in [
            (
                "some",
                "invalid type: string \"some\", expected u32, or `all`",
            ),
            ("-2", "invalid type: integer `-2`, expected u32, or `all`"),
            ("4294967296", "invalid value"),
        ] {
            let e = spec(&format!("  replicas: {bad}\n")).unwrap_err();
            assert!(e.starts_with("spec.replicas: ") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn scale_to_zero_and_autoscale_are_validated_by_field() {
        let z = spec("  replicas: 2\n  scaleToZero: { idleAfter: 1s }\n").unwrap();
        assert_eq!(
            z.scale_to_zero.as_ref().unwrap().idle_after(),
            Duration::from_secs(1)
        );
        assert!(z.scales_to_zero());
        let default = spec("  replicas: 2\n  scaleToZero: {}\n").unwrap();
        assert_eq!(
            default.scale_to_zero.unwrap().idle_after(),
            Duration::from_secs(300)
        );
        let a = spec(
            "  autoscale: { minReplicas: 0, maxReplicas: 5, target: { rps: 300 }, scaleDownWindow: 10s }\n",
        )
        .unwrap();
        let auto = a.autoscale.as_ref().unwrap();
        assert_eq!(auto.target.get(), (Metric::Rps, 300.0));
        assert_eq!(
            (auto.scale_up_window(), auto.scale_down_window()),
            (SCALE_UP_WINDOW, Duration::from_secs(10))
        );
        assert!(a.scales_to_zero());
        assert_eq!(a.replicas_text(), "autoscale 0-5");
        let cases = [
            (
                "  scaleToZero: { idleAfter: soon }\n  replicas: 1\n",
                "spec.scaleToZero.idleAfter: `soon` is not a duration",
            ),
            (
                "  scaleToZero: { idleAfter: 0s }\n  replicas: 1\n",
                "spec.scaleToZero.idleAfter: `0s` must be longer than 0",
            ),
            (
                "  scaleToZero: { idle: 1s }\n  replicas: 1\n",
                "spec.scaleToZero: unknown field `idle`",
            ),
            (
                "  replicas: 2\n  autoscale: { maxReplicas: 3, target: { rps: 1 } }\n",
                "spec.autoscale: cannot be combined with spec.replicas",
            ),
            ("  strategy: { batches: 1 }\n", "spec.replicas: missing"),
            (
                "  autoscale: { minReplicas: 4, maxReplicas: 3, target: { rps: 1 } }\n",
                "spec.autoscale.minReplicas: 4 is above maxReplicas 3",
            ),
            (
                "  autoscale: { maxReplicas: 0, minReplicas: 0, target: { rps: 1 } }\n",
                "spec.autoscale.maxReplicas: must be at least 1",
            ),
            (
                "  autoscale: { maxReplicas: 3, target: { rps: 0 } }\n",
                "spec.autoscale.target.rps: 0 must be above 0",
            ),
            (
                "  autoscale: { maxReplicas: 3, target: { concurrency: 0 } }\n",
                "spec.autoscale.target.concurrency: 0 must be above 0",
            ),
            (
                "  autoscale: { maxReplicas: 3, target: {} }\n",
                "spec.autoscale.target: missing a value",
            ),
            (
                "  autoscale: { maxReplicas: 3, target: { rps: 1, concurrency: 1 } }\n",
                "spec.autoscale.target: give one of concurrency or rps",
            ),
            (
                "  autoscale: { maxReplicas: 3, target: { rps: 1 }, scaleUpWindow: fast }\n",
                "spec.autoscale.scaleUpWindow: `fast` is not a duration",
            ),
            (
                "  autoscale: { maxReplicas: 3, target: { rps: 1 }, scaleDownWindow: 0s }\n",
                "spec.autoscale.scaleDownWindow: `0s` must be longer than 0",
            ),
            (
                "  autoscale: { maxReplicas: 3, target: { rps: 1 } }\n  scaleToZero: {}\n",
                "spec.scaleToZero: cannot be combined with spec.autoscale",
            ),
        ];
        for (lines, says) in cases {
            let e = spec(lines).unwrap_err();
            assert!(e.starts_with(says), "{e}\nexpected: {says}");
        }
    }
}
