//! Traffic rules: which version of a module (and, through a gateway, which
//! traffic cell) serves a request.
//!
//! Order of decision: the request's traffic unit (header
//! `x-berth-traffic-unit`) when the module maps that unit to a version; then
//! the first rule whose conditions all hold; then the module's default.
//!
//! A rule may also name a traffic **cell** (`cell: {group: gold}`): a label
//! selector of bases. Only a gateway acts on it (it sends the request to a
//! replica on a base whose labels match); a base ignores it, as it has no
//! other base to choose.
//!
//! A rule set is checked whole when it is set ([`CompiledRules::compile`]):
//! every version must be installed, a split's weights must sum to 100, every
//! regex and CIDR must parse, each condition must have what its kind needs.
//! The first problem is reported naming the rule (`rule #2 "gray": ...`), and
//! the rules in force stay as they were.
//!
//! Sticky splits hash the key (FNV-1a, stable across restarts and machines)
//! into 10,000 buckets laid out by cumulative weight in the order the split
//! lists its versions. A key keeps its version across any rule change that
//! keeps its bucket on the same side of every boundary; e.g. going from
//! 90/10 to 80/20 only moves the keys in buckets 8000..9000. Without a
//! sticky key a request draws a random bucket.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use berth_api::header::TRAFFIC_UNIT;
use berth_api::{Match, On, RequestValue, Rule, TrafficRules};
use http::HeaderMap;
use ipnet::IpNet;
use regex::Regex;

/// Buckets a split is laid out on.
const BUCKETS: u32 = 10_000;

/// What a rule decision needs to know about a request.
pub struct RequestView<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Path, without the query.
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
}

/// A validated rule set, ready to evaluate per request. Versions are
/// referred to by their index in [`CompiledRules::versions`].
#[derive(Debug)]
pub struct CompiledRules {
    versions: Vec<String>,
    rules: Vec<CompiledRule>,
    units: HashMap<String, usize>,
}

#[derive(Debug)]
struct CompiledRule {
    conditions: Vec<Condition>,
    /// `None`: the rule names only a cell, the version stays the default.
    action: Option<Action>,
    cell: Option<BTreeMap<String, String>>,
}

/// What the rules decide for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The index of the version in [`CompiledRules::versions`], or `None` for the default.
    pub version: Option<usize>,
    /// The labels a base must carry to serve it (a traffic cell), if any.
    pub cell: Option<&'a BTreeMap<String, String>>,
}

#[derive(Debug)]
enum Condition {
    Value { on: On, name: String, test: Test },
    ClientIp(IpNet),
    Path(Test),
}

#[derive(Debug)]
enum Test {
    Present,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum Action {
    Version(usize),
    /// (exclusive upper bucket, version index), ascending.
    Split {
        bounds: Vec<(u32, usize)>,
        sticky: Option<(On, String)>,
    },
}

impl CompiledRules {
    /// Checks `rules` against the `installed` versions and compiles them.
    pub fn compile(rules: &TrafficRules, installed: &[&str]) -> Result<Self, String> {
        Self::compile_checked(rules, Some(installed))
    }

    /// Compiles `rules` without checking that their versions exist (a
    /// gateway: replicas of a version come and go; a request for a version
    /// no replica runs is answered as such).
    pub fn compile_any(rules: &TrafficRules) -> Result<Self, String> {
        Self::compile_checked(rules, None)
    }

    fn compile_checked(rules: &TrafficRules, installed: Option<&[&str]>) -> Result<Self, String> {
        let mut versions: Vec<String> = Vec::new();
        let mut index = |version: &str, context: &str| -> Result<usize, String> {
            if let Some(installed) = installed
                && !installed.contains(&version)
            {
                return Err(format!(
                    "{context}: version `{version}` is not installed (installed: {}); install it first \
                     (it can be installed without becoming the default: `berth deploy --no-activate`)",
                    installed.join(", ")
                ));
            }
            Ok(match versions.iter().position(|v| v == version) {
                Some(i) => i,
                None => {
                    versions.push(version.to_string());
                    versions.len() - 1
                }
            })
        };
        let mut compiled = Vec::new();
        for (i, rule) in rules.rules.iter().enumerate() {
            let context = match &rule.name {
                Some(name) => format!("rule #{} \"{name}\"", i + 1),
                None => format!("rule #{}", i + 1),
            };
            compiled.push(compile_rule(rule, &context, &mut index)?);
        }
        let mut units = HashMap::new();
        for (unit, version) in &rules.traffic_units {
            if unit.is_empty() {
                return Err("trafficUnits: a unit name must not be empty".into());
            }
            units.insert(
                unit.clone(),
                index(version, &format!("trafficUnits.{unit}"))?,
            );
        }
        Ok(Self {
            versions,
            rules: compiled,
            units,
        })
    }

    /// The versions the rules refer to, by index.
    pub fn versions(&self) -> &[String] {
        &self.versions
    }

    /// The index of the version for `request`, or `None` for the default.
    pub fn choose(&self, request: &RequestView<'_>) -> Option<usize> {
        self.decide(request).version
    }

    /// The version and the traffic cell for `request`.
    pub fn decide(&self, request: &RequestView<'_>) -> Decision<'_> {
        if !self.units.is_empty()
            && let Some(unit) = request
                .headers
                .get(TRAFFIC_UNIT)
                .and_then(|v| v.to_str().ok())
            && let Some(&version) = self.units.get(unit)
        {
            return Decision {
                version: Some(version),
                cell: None,
            };
        }
        let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.conditions.iter().all(|c| c.holds(request)))
        else {
            return Decision::default();
        };
        Decision {
            version: rule.action.as_ref().map(|action| action.pick(request)),
            cell: rule.cell.as_ref(),
        }
    }
}

impl Action {
    /// The version index this action gives `request`.
    fn pick(&self, request: &RequestView<'_>) -> usize {
        match self {
            Action::Version(v) => *v,
            Action::Split { bounds, sticky } => {
                let bucket = match sticky
                    .as_ref()
                    .and_then(|(on, name)| value(request, *on, name))
                {
                    Some(key) => (fnv1a(key.as_bytes()) % u64::from(BUCKETS)) as u32,
                    None => fastrand::u32(..BUCKETS),
                };
                bounds
                    .iter()
                    .find(|(upper, _)| bucket < *upper)
                    .map_or(bounds[bounds.len() - 1].1, |b| b.1)
            }
        }
    }
}

fn compile_rule(
    rule: &Rule,
    context: &str,
    index: &mut impl FnMut(&str, &str) -> Result<usize, String>,
) -> Result<CompiledRule, String> {
    let conditions = rule
        .matches
        .iter()
        .enumerate()
        .map(|(j, m)| compile_match(m).map_err(|e| format!("{context}, match #{}: {e}", j + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let action = match (&rule.version, &rule.split) {
        (Some(version), None) => {
            if rule.sticky_by.is_some() {
                return Err(format!("{context}: stickyBy only applies to a split"));
            }
            Some(Action::Version(index(version, context)?))
        }
        (None, Some(split)) => {
            if split.is_empty() {
                return Err(format!("{context}: split lists no versions"));
            }
            let total: u32 = split.iter().map(|w| w.weight).sum();
            if total != 100 {
                let listed: Vec<String> = split
                    .iter()
                    .map(|w| format!("{} {}", w.version, w.weight))
                    .collect();
                return Err(format!(
                    "{context}: split weights sum to {total}, not 100 ({})",
                    listed.join(", ")
                ));
            }
            let mut upper = 0;
            let mut bounds = Vec::new();
            for w in split {
                let version = index(&w.version, context)?;
                upper += w.weight * (BUCKETS / 100);
                if w.weight > 0 {
                    bounds.push((upper, version));
                }
            }
            let sticky = match &rule.sticky_by {
                None => None,
                Some(RequestValue {
                    on: On::ClientIp | On::Path,
                    ..
                }) => {
                    return Err(format!(
                        "{context}: stickyBy reads a header, query parameter or cookie"
                    ));
                }
                Some(RequestValue { on, name }) => Some((*on, normalise_name(*on, name))),
            };
            Some(Action::Split { bounds, sticky })
        }
        (Some(_), Some(_)) => {
            return Err(format!(
                "{context}: give either `version` or `split`, not both"
            ));
        }
        (None, None) if rule.cell.is_some() => {
            if rule.sticky_by.is_some() {
                return Err(format!("{context}: stickyBy only applies to a split"));
            }
            None
        }
        (None, None) => {
            return Err(format!(
                "{context}: give `version`, `split` or `cell` to say where matches go"
            ));
        }
    };
    if let Some(cell) = &rule.cell
        && (cell.is_empty() || cell.iter().any(|(k, v)| k.is_empty() || v.is_empty()))
    {
        return Err(format!(
            "{context}: cell names base labels, e.g. `cell: {{group: gold}}`; keys and values must not be empty"
        ));
    }
    Ok(CompiledRule {
        conditions,
        action,
        cell: rule.cell.clone(),
    })
}

fn compile_match(m: &Match) -> Result<Condition, String> {
    let tests = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if tests > 1 {
        return Err("give at most one of exact, prefix, regex".into());
    }
    let test = || -> Result<Test, String> {
        Ok(if let Some(exact) = &m.exact {
            Test::Exact(exact.clone())
        } else if let Some(prefix) = &m.prefix {
            Test::Prefix(prefix.clone())
        } else if let Some(pattern) = &m.regex {
            Test::Regex(
                Regex::new(pattern).map_err(|e| format!("regex `{pattern}` is invalid: {e}"))?,
            )
        } else {
            Test::Present
        })
    };
    match m.on {
        On::Header | On::Query | On::Cookie => {
            let Some(name) = m.name.as_deref().filter(|n| !n.is_empty()) else {
                return Err(format!("`on: {}` needs `name`", on_name(m.on)));
            };
            if m.cidr.is_some() {
                return Err("`cidr` only applies to `on: clientIp`".into());
            }
            Ok(Condition::Value {
                on: m.on,
                name: normalise_name(m.on, name),
                test: test()?,
            })
        }
        On::ClientIp => {
            if tests > 0 || m.name.is_some() {
                return Err("`on: clientIp` takes only `cidr`".into());
            }
            let Some(cidr) = &m.cidr else {
                return Err("`on: clientIp` needs `cidr`, e.g. 10.0.0.0/8".into());
            };
            let net = cidr
                .parse::<IpNet>()
                .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                .map_err(|e| format!("cidr `{cidr}` is invalid: {e}"))?;
            Ok(Condition::ClientIp(net))
        }
        On::Path => {
            if tests == 0 || m.name.is_some() || m.cidr.is_some() {
                return Err("`on: path` takes one of exact, prefix, regex".into());
            }
            Ok(Condition::Path(test()?))
        }
    }
}

fn on_name(on: On) -> &'static str {
    match on {
        On::Header => "header",
        On::Query => "query",
        On::Cookie => "cookie",
        On::ClientIp => "clientIp",
        On::Path => "path",
    }
}

/// Header names compare case-insensitively: store them lowercased.
fn normalise_name(on: On, name: &str) -> String {
    if on == On::Header {
        name.to_ascii_lowercase()
    } else {
        name.to_string()
    }
}

impl Condition {
    fn holds(&self, request: &RequestView<'_>) -> bool {
        match self {
            Condition::Value { on, name, test } => {
                value(request, *on, name).is_some_and(|v| test.holds(&v))
            }
            Condition::ClientIp(net) => request
                .client_ip
                .is_some_and(|ip| net.contains(&canonical(ip))),
            Condition::Path(test) => test.holds(request.path),
        }
    }
}

/// `::ffff:a.b.c.d` is the IPv4 client a.b.c.d.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Test {
    fn holds(&self, value: &str) -> bool {
        match self {
            Test::Present => true,
            Test::Exact(want) => value == want,
            Test::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Test::Regex(re) => re.is_match(value),
        }
    }
}

/// The request's header, query parameter or cookie `name`.
fn value(request: &RequestView<'_>, on: On, name: &str) -> Option<String> {
    match on {
        On::Header => request.headers.get(name)?.to_str().ok().map(str::to_owned),
        On::Query => form_urlencoded::parse(request.query?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned()),
        On::Cookie => request
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string()),
        On::ClientIp | On::Path => None,
    }
}

/// 64-bit FNV-1a: a small, stable hash (the same key hashes the same on
/// every machine and release, unlike std's `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::WeightedVersion;

    fn split(a: u32, b: u32) -> Rule {
        Rule {
            name: Some("gray".into()),
            split: Some(vec![
                WeightedVersion {
                    version: "1".into(),
                    weight: a,
                },
                WeightedVersion {
                    version: "2".into(),
                    weight: b,
                },
            ]),
            sticky_by: Some(RequestValue {
                on: On::Header,
                name: "X-User".into(),
            }),
            ..Rule::default()
        }
    }

    fn choose(rules: &CompiledRules, headers: &HeaderMap) -> Option<usize> {
        rules.choose(&RequestView {
            headers,
            path: "/",
            query: None,
            client_ip: None,
        })
    }

    #[test]
    fn invalid_rule_sets_name_the_offending_rule() {
        let installed = ["1", "2"];
        let check = |rules: Vec<Rule>| {
            CompiledRules::compile(
                &TrafficRules {
                    rules,
                    ..Default::default()
                },
                &installed,
            )
        };
        let err = check(vec![
            Rule {
                version: Some("1".into()),
                ..Default::default()
            },
            split(90, 20),
        ])
        .unwrap_err();
        assert!(
            err.starts_with("rule #2 \"gray\": split weights sum to 110"),
            "{err}"
        );
        let err = check(vec![Rule {
            version: Some("3".into()),
            ..Default::default()
        }])
        .unwrap_err();
        assert!(
            err.contains("rule #1: version `3` is not installed"),
            "{err}"
        );
        let bad_regex = Rule {
            matches: vec![Match {
                on: On::Path,
                name: None,
                exact: None,
                prefix: None,
                regex: Some("(".into()),
                cidr: None,
            }],
            version: Some("1".into()),
            ..Default::default()
        };
        assert!(
            check(vec![bad_regex])
                .unwrap_err()
                .contains("match #1: regex `(` is invalid")
        );
        assert!(
            check(vec![Rule::default()])
                .unwrap_err()
                .contains("give `version`, `split` or `cell`")
        );
    }

    #[test]
    fn a_cell_rule_names_base_labels_and_keeps_the_default_version() {
        let gold = Rule {
            name: Some("gold".into()),
            matches: vec![Match {
                on: On::Header,
                name: Some("X-Tier".into()),
                exact: Some("gold".into()),
                prefix: None,
                regex: None,
                cidr: None,
            }],
            cell: Some([("group".to_string(), "gold".to_string())].into()),
            ..Rule::default()
        };
        let rules = CompiledRules::compile_any(&TrafficRules {
            rules: vec![gold.clone()],
            ..Default::default()
        })
        .unwrap();
        let mut headers = HeaderMap::new();
        fn view(headers: &HeaderMap) -> RequestView<'_> {
            RequestView {
                headers,
                path: "/",
                query: None,
                client_ip: None,
            }
        }
        assert_eq!(rules.decide(&view(&headers)), Decision::default());
        headers.insert("x-tier", "gold".parse().unwrap());
        let decision = rules.decide(&view(&headers));
        assert_eq!(decision.version, None);
        assert_eq!(decision.cell.unwrap()["group"], "gold");
        let empty = Rule {
            cell: Some([("group".to_string(), String::new())].into()),
            ..gold
        };
        let err = CompiledRules::compile_any(&TrafficRules {
            rules: vec![empty],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.starts_with("rule #1 \"gold\": cell names base labels"),
            "{err}"
        );
        // compile_any takes versions no base runs yet; compile does not.
        let v3 = TrafficRules {
            rules: vec![Rule {
                version: Some("3".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(CompiledRules::compile_any(&v3).is_ok());
        assert!(CompiledRules::compile(&v3, &["1"]).is_err());
    }

    #[test]
    fn the_sticky_hash_is_fnv1a_64_and_pinned() {
        // Published FNV-1a 64-bit test vectors: a change of hash (or of its
        // constants) would move every sticky user to another bucket.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        // One fixed key, end to end: `user-42` hashes to bucket 7419 of
        // 10,000, so it is on version 2 in a 74/26 split and on version 1
        // in a 75/25 split, on every machine and every release.
        assert_eq!(fnv1a(b"user-42") % u64::from(BUCKETS), 7419);
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "user-42".parse().unwrap());
        assert_eq!(choose(&compile_split(74, 26), &headers), Some(1));
        assert_eq!(choose(&compile_split(75, 25), &headers), Some(0));
    }

    /// Rules holding only the sticky split `split(a, b)` of versions 1 and 2.
    fn compile_split(a: u32, b: u32) -> CompiledRules {
        CompiledRules::compile(
            &TrafficRules {
                rules: vec![split(a, b)],
                ..Default::default()
            },
            &["1", "2"],
        )
        .unwrap()
    }

    #[test]
    fn sticky_keys_keep_their_version_when_their_bucket_keeps_its_side() {
        let (before, after) = (compile_split(90, 10), compile_split(80, 20));
        let mut moved = 0;
        for user in 0..2000 {
            let mut headers = HeaderMap::new();
            headers.insert("x-user", user.to_string().parse().unwrap());
            let (b, a) = (choose(&before, &headers), choose(&after, &headers));
            assert_eq!(b, choose(&before, &headers), "not deterministic");
            // Only moves from version 1 to version 2 are possible when 2 grows.
            if a != b {
                assert_eq!((b, a), (Some(0), Some(1)));
                moved += 1;
            }
        }
        // About 10% of the keys move.
        assert!((100..300).contains(&moved), "{moved} keys moved");
    }
}
