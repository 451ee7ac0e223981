//! Property tests (proptest, stable Rust) of every parser hostile input
//! reaches: manifests (berth's and Koupleless' shapes, YAML and JSON),
//! traffic rule sets, the ops API's request bodies and the Arklet-compatible
//! commands (over real HTTP to a real base), and artifact loading (random
//! bytes, truncated and bit-flipped components through the runtime's
//! validate path). Each input must give a result or a clear error: no
//! panic, no hang, no 5xx. Case counts are kept so the set runs in seconds
//! in a debug build; RELIABILITY.md records them.

use std::time::{Duration, Instant};

use berth_api::TrafficRules;
use berth_example_modules::HELLO;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::support::TestBase;

/// Bodies sent to each ops and Arklet endpoint.
const BODIES: usize = 96;

/// Longest any one input may take (a hang is a failure).
const PER_CASE: Duration = Duration::from_secs(10);

const BERTH_MANIFEST: &str = "apiVersion: berth.dev/v1
kind: ModuleDeployment
metadata: { name: orders }
spec:
  module: { name: orders, version: 1.4.0, artifact: file:/srv/orders.wasm, digest: sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 }
  replicas: 6
  baseSelector: { group: online }
  strategy: { batches: 3, pauseBetween: 5s, needConfirm: false, maxUnavailable: 0 }
  route: { pathPrefix: /orders }
";

const KOUPLELESS_MANIFEST: &str = "apiVersion: koupleless.io/v1alpha1
kind: ModuleDeployment
metadata:
  name: moduledeployment-sample
spec:
  baseDeploymentName: dynamic-stock-deployment
  template:
    spec:
      module:
        name: provider
        version: '1.0.2'
        url: http://example.invalid/provider-1.0.2.wasm
        md5: \"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"
  replicas: 2
  operationStrategy:
    upgradePolicy: install_then_uninstall
    needConfirm: true
    grayTimeBetweenBatchSeconds: 30
    batchCount: 2
  schedulingStrategy:
    schedulingPolicy: stacking
";

const RULES: &str = r#"{"rules":[{"name":"beta","match":[{"on":"header","name":"x-beta","exact":"yes"},{"on":"clientIp","cidr":"10.0.0.0/8"},{"on":"path","regex":"^/a.*"}],"version":"1.0.0"},{"split":[{"version":"1.0.0","weight":90},{"version":"2.0.0","weight":10}],"stickyBy":{"on":"cookie","name":"uid"}}],"trafficUnits":{"eu":"2.0.0"}}"#;

/// Field names the parsers know, so random documents reach deep code.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "spec",
    "module",
    "version",
    "artifact",
    "digest",
    "replicas",
    "baseSelector",
    "group",
    "strategy",
    "batches",
    "route",
    "pathPrefix",
    "host",
    "path",
    "url",
    "limits",
    "memoryMib",
    "timeoutMs",
    "rules",
    "match",
    "on",
    "exact",
    "regex",
    "cidr",
    "split",
    "weight",
    "stickyBy",
    "trafficUnits",
    "activate",
    "allowedHosts",
    "config",
    "signature",
    "bizName",
    "bizVersion",
    "bizUrl",
    "template",
    "md5",
    "operationStrategy",
    "batchCount",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(String::from),
        1 => "[a-zA-Z]{1,8}",
    ]
}

/// Any JSON document, with the parsers' field names as keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        "[a-z0-9./:@*^$()\\[\\]-]{0,16}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::from("header")),
        Just(Value::from("1.0.0")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Truncate(at) => bytes.truncate(at % len),
            Edit::Flip(at, bit) if !bytes.is_empty() => bytes[at % len] ^= 1 << bit,
            Edit::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Edit::Delete(at) if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            _ => {}
        }
    }
    bytes
}

/// A valid document, damaged by a few edits.
fn mutated(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        proptest::sample::select(valid),
        proptest::collection::vec(edit(), 1..6),
    )
        .prop_map(|(doc, edits)| {
            String::from_utf8_lossy(&apply_edits(doc.as_bytes().to_vec(), &edits)).into_owned()
        })
}

/// Runs `check` under a deadline: a hang is a failure naming the input.
fn timed<T: std::fmt::Debug>(input: &T, check: impl FnOnce()) {
    let started = Instant::now();
    check();
    assert!(
        started.elapsed() < PER_CASE,
        "took {:?} on {input:?}",
        started.elapsed()
    );
}

proptest! {
    #![proptest_config(Config { cases: 1000, failure_persistence: None, ..Config::default() })]

    #[test]
    fn manifests_parse_or_name_the_field_at_fault(
        text in prop_oneof![
            mutated(&[BERTH_MANIFEST, KOUPLELESS_MANIFEST]),
            json_value().prop_map(|v| v.to_string()),
            any::<String>(),
        ]
    ) {
        timed(&text, || {
            if let Err(e) = berth_api::manifest::parse(&text) {
                assert!(!e.to_string().trim().is_empty(), "an empty error for {text:?}");
            }
        });
    }

    #[test]
    fn rule_sets_compile_or_say_why(
        text in prop_oneof![
            mutated(&[RULES]),
            json_value().prop_map(|v| v.to_string()),
            json_value().prop_map(|v| serde_json::json!({"rules": [v]}).to_string()),
        ]
    ) {
        timed(&text, || {
            let Ok(rules) = serde_json::from_str::<TrafficRules>(&text) else { return };
            if let Err(e) = berth_base::rules::CompiledRules::compile(&rules, &["1.0.0", "2.0.0"]) {
                assert!(!e.trim().is_empty(), "an empty error for {text:?}");
            }
        });
    }
}

proptest! {
    // Each case that passes validation is compiled by Cranelift: fewer cases.
    #![proptest_config(Config { cases: 128, failure_persistence: None, ..Config::default() })]

    #[test]
    fn damaged_components_are_refused_with_a_clear_error(
        edits in proptest::collection::vec(edit(), 1..4)
    ) {
        let hello = std::fs::read(HELLO).unwrap();
        let damaged = apply_edits(hello, &edits);
        timed(&edits, || {
            if let Err(e) = berth_runtime::validate(&damaged) {
                assert!(!e.to_string().is_empty());
                assert!(!e.code().is_empty());
            }
        });
    }

    #[test]
    fn random_bytes_are_refused_with_a_clear_error(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            // Behind a valid component preamble, so the parser runs.
            proptest::collection::vec(any::<u8>(), 0..2048)
                .prop_map(|b| [b"\0asm\x0d\0\x01\0".to_vec(), b].concat()),
        ]
    ) {
        timed(&bytes.len(), || {
            let e = berth_runtime::validate(&bytes).expect_err("random bytes are no module");
            assert!(!e.to_string().is_empty());
        });
    }
}

/// `count` inputs from `strategy`, deterministic (a failure names its input,
/// and the same inputs come again on the next run).
fn sample<S: Strategy>(strategy: S, count: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Sends every body to every endpoint of a real base over HTTP: each gets
/// an answer below 500 with a JSON body, in time, and the base serves on.
#[tokio::test]
async fn ops_and_arklet_bodies_get_a_clear_answer_and_the_base_serves_on() {
    // The bodies' URLs name fuzz.invalid, which is not on the base's list:
    // refused before any lookup, no input makes the base reach the network.
    let base = TestBase::start_with(|c| c.artifact_hosts = vec!["allowed.invalid".into()]).await;
    base.install_path("hello", "1.0.0", HELLO).await;
    let install = serde_json::json!({
        "name": "other", "version": "1.0.0", "artifact": {"url": "http://fuzz.invalid/m.wasm"},
        "route": {"pathPrefix": "/other"}, "limits": {"memoryMib": 16}, "config": {"a": "b"}
    })
    .to_string();
    let install_biz =
        r#"{"bizName":"other","bizVersion":"1.0.0","bizUrl":"http://fuzz.invalid/m.wasm"}"#;
    let bodies = sample(
        prop_oneof![
            json_value().prop_map(|v| v.to_string()),
            (
                proptest::sample::select(vec![
                    install.clone(),
                    install_biz.to_string(),
                    RULES.to_string(),
                    r#"{"version":"1.0.0"}"#.to_string(),
                    r#"{"bizName":"hello","bizVersion":"1.0.0"}"#.to_string(),
                ]),
                proptest::collection::vec(edit(), 1..6)
            )
                .prop_map(|(doc, edits)| String::from_utf8_lossy(&apply_edits(
                    doc.into_bytes(),
                    &edits
                ))
                .into_owned()),
        ],
        BODIES,
    );
    let endpoints: &[(&str, &str)] = &[
        ("POST", "/v1/modules"),
        ("PUT", "/v1/modules/hello/rules"),
        ("POST", "/v1/modules/hello/switch"),
        ("POST", "/installBiz"),
        ("POST", "/switchBiz"),
        ("POST", "/queryAllBiz"),
    ];
    let mut sent = 0;
    for body in &bodies {
        for (method, path) in endpoints {
            let started = Instant::now();
            let response = base
                .client
                .request(method.parse().unwrap(), base.ops(path))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert!(
                started.elapsed() < PER_CASE,
                "{method} {path} took {:?} on {body:?}",
                started.elapsed()
            );
            assert!(
                status < 500,
                "{method} {path} answered {status} {text} to {body:?}"
            );
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
            if status >= 400 {
                assert!(
                    json["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{method} {path}: no error message in {text}"
                );
            }
            sent += 1;
        }
    }
    assert_eq!(sent, BODIES * endpoints.len());
    // The base still serves: hello answers (rules can only pick its versions).
    let (status, _, body) = base.get("/hello").await;
    assert_eq!(status, 200, "{body}");
}
