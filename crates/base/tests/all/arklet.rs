//! Koupleless' Arklet commands on the ops address, checked against the
//! literal request and response bodies of Koupleless' Arklet API guide in
//! `tests/fixtures/arklet/` (sources and matching rules in its README), on a
//! real base over real HTTP.

use std::time::Duration;

use berth_api::ModuleState;
use berth_example_modules::HELLO;
use serde_json::{Value, json};

use crate::support::TestBase;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/arklet");

/// The `file://` URL of the example `hello` module.
fn hello_url() -> String {
    format!("file://{}", std::fs::canonicalize(HELLO).unwrap().display())
}

/// A fixture as JSON: the guide's `//` annotation lines (not JSON, never
/// sent by a client) are dropped, nothing else.
fn fixture(file: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).unwrap();
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A literal request body, sent as the guide writes it except that a
/// `bizUrl` (a Java jar on the author's disk) names our `hello` module.
fn request(name: &str) -> String {
    let mut body = fixture(&format!("{name}.request.json"));
    if body.get("bizUrl").is_some() {
        body["bizUrl"] = json!(hello_url());
    }
    body.to_string()
}

/// A literal response body, with the guide's biz identity replaced where a
/// step uses another (`from` → `to` in string values).
fn expected(name: &str, from: &str, to: &str) -> Value {
    let mut value = fixture(&format!("{name}.response.json"));
    replace_strings(&mut value, from, to);
    value
}

fn replace_strings(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if !from.is_empty() => *s = s.replace(from, to),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_strings(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_strings(v, from, to)),
        _ => {}
    }
}

/// How a path of the literal response is matched (paths are dotted keys,
/// `[*]` for any array index). Everything not listed is `Exact`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Rule {
    /// Same keys (objects), same length (arrays), same value (scalars).
    Exact,
    /// A figure only a Java base or the moment can give (jvm numbers, a
    /// main class, a context path, a timed message): same JSON type.
    Figure,
    /// A section of Java figures: berth gives a subset of its keys (what has
    /// a meaning here), each a figure of the same type.
    Subset,
    /// A list of Java-only items (Ark plugins): berth's items, if any, have
    /// the literal item's keys.
    EachLike,
    /// The guide's list comes first, verbatim; later commands may follow.
    Leading,
}

/// Matching rules shared by every fixture (see the fixtures README).
const RULES: &[(&str, Rule)] = &[
    ("data.bizInfos[*].mainClass", Rule::Figure),
    ("data.bizInfos[*].webContextPath", Rule::Figure),
    ("data[*].mainClass", Rule::Figure),
    ("data[*].webContextPath", Rule::Figure),
    ("data[*].bizVersion", Rule::Figure),
    ("data.healthData.jvm", Rule::Subset),
    ("data.healthData.cpu", Rule::Subset),
    ("data.healthData.pluginListInfo", Rule::EachLike),
    ("data.healthData.masterBizInfo.bizName", Rule::Figure),
    ("data.healthData.masterBizInfo.bizVersion", Rule::Figure),
    (
        "data.healthData.bizListInfo[*].webContextPath",
        Rule::Figure,
    ),
    ("data.healthData.bizInfo.webContextPath", Rule::Figure),
];

/// `installBiz`'s success message carries a cost and a start time.
const TIMED: &[(&str, Rule)] = &[("data.message", Rule::Figure)];

/// Top-level keys of Arklet's envelope the guide's samples leave out.
const ENVELOPE_EXTRAS: &[&str] = &["message", "baseIdentity", "errorStackTrace"];

fn rule(path: &str, extra: &[(&str, Rule)]) -> Rule {
    let normalized = normalize(path);
    extra
        .iter()
        .chain(RULES)
        .find(|(p, _)| *p == normalized)
        .map_or(Rule::Exact, |(_, r)| *r)
}

/// `data[3].x` → `data[*].x`.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[*]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// `actual` conforms to the literal `expected` under the rules.
fn conforms(actual: &Value, expected: &Value, path: &str, extra: &[(&str, Rule)]) {
    let at = if path.is_empty() { "<body>" } else { path };
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match rule(path, extra) {
        Rule::Figure => assert!(same_type(actual, expected), "{at}: {actual} vs {expected}"),
        Rule::Subset => {
            let (a, e) = (actual.as_object().unwrap(), expected.as_object().unwrap());
            assert!(!a.is_empty(), "{at}: empty");
            for (key, value) in a {
                let want = e
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key}: not a key of the guide's {expected}"));
                assert!(same_type(value, want), "{at}.{key}: {value} vs {want}");
            }
        }
        Rule::EachLike => {
            let want = &expected.as_array().unwrap()[0];
            for (i, item) in actual.as_array().unwrap().iter().enumerate() {
                let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
                assert_eq!(keys(item), keys(want), "{at}[{i}]");
            }
        }
        Rule::Leading => {
            let (a, e) = (actual.as_array().unwrap(), expected.as_array().unwrap());
            assert!(a.len() >= e.len(), "{at}: {actual}");
            assert_eq!(&a[..e.len()], &e[..], "{at}");
        }
        Rule::Exact => match (actual, expected) {
            (Value::Object(a), Value::Object(e)) => {
                for key in a.keys() {
                    let allowed = path.is_empty() && ENVELOPE_EXTRAS.contains(&key.as_str());
                    assert!(
                        e.contains_key(key) || allowed,
                        "{at}.{key}: not in the guide's body {expected}"
                    );
                }
                for (key, want) in e {
                    let got = a
                        .get(key)
                        .unwrap_or_else(|| panic!("{at}.{key} missing in {actual}"));
                    conforms(got, want, &join(key), extra);
                }
            }
            (Value::Array(a), Value::Array(e)) => {
                assert_eq!(a.len(), e.len(), "{at}: {actual} vs {expected}");
                for (i, (got, want)) in a.iter().zip(e).enumerate() {
                    conforms(got, want, &format!("{path}[{i}]"), extra);
                }
            }
            _ => assert_eq!(actual, expected, "{at}"),
        },
    }
}

impl TestBase {
    /// `POST /<command>` with a raw body; asserts HTTP 200 and a base identity.
    async fn arklet(&self, command: &str, body: impl Into<reqwest::Body>) -> Value {
        let response = self
            .client
            .post(self.ops(&format!("/{command}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{command}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["baseIdentity"].as_str().is_some_and(|s| !s.is_empty()),
            "{body}"
        );
        body
    }
}

/// The literal install request with another biz name (the guide's response,
/// uninstall and switch samples name `dynamic-provider`, its request `test`).
fn install_as(name: &str, version: &str) -> String {
    let mut body: Value = serde_json::from_str(&request("installBiz")).unwrap();
    body["bizName"] = json!(name);
    body["bizVersion"] = json!(version);
    body.to_string()
}

/// A module of this base by name and version, with its state.
async fn state_of(base: &TestBase, name: &str, version: &str) -> Option<ModuleState> {
    base.list()
        .await
        .modules
        .into_iter()
        .find(|m| m.name == name && m.version == version)
        .map(|m| m.state)
}

#[tokio::test]
async fn arklet_commands_answer_the_guides_literal_bodies() {
    let base = TestBase::start().await;
    let none: &[(&str, Rule)] = &[];

    let reply = base.arklet("help", request("help")).await;
    conforms(
        &reply,
        &expected("help", "", ""),
        "",
        &[("data", Rule::Leading)],
    );
    // The commands the guide's sample predates, as Arklet's BuiltinCommand
    // (koupleless/runtime 029ce76) describes them.
    assert_eq!(
        reply["data"].as_array().unwrap()[5..],
        [
            json!({"id": "batchInstallBiz", "desc": "install one ark biz"}),
            json!({"id": "queryBizOps", "desc": "query ark biz ops"}),
            json!({"id": "health", "desc": "get all health info"}),
        ]
    );

    // The literal request as-is (biz `test`); the guide's response names
    // `dynamic-provider`, so its identity is read as ours.
    let reply = base.arklet("installBiz", request("installBiz")).await;
    conforms(
        &reply,
        &expected("installBiz", "dynamic-provider", "test"),
        "",
        TIMED,
    );
    assert_eq!(
        state_of(&base, "test", "1.0.0").await,
        Some(ModuleState::Active)
    );
    let reply = base.arklet("installBiz", request("installBiz")).await;
    conforms(
        &reply,
        &expected("installBiz.repeat", "dynamic-provider", "test"),
        "",
        none,
    );

    // The literal uninstall names `dynamic-provider`, not installed yet.
    let reply = base.arklet("uninstallBiz", request("uninstallBiz")).await;
    let not_found = expected(
        "uninstallBiz.notfound",
        "test:1.0.0",
        "dynamic-provider:1.0.0",
    );
    conforms(&reply, &not_found, "", none);

    let reply = base
        .arklet("installBiz", install_as("dynamic-provider", "1.0.0"))
        .await;
    conforms(&reply, &expected("installBiz", "", ""), "", TIMED);
    let gone = json!({"bizName": "test", "bizVersion": "1.0.0"}).to_string();
    assert_eq!(base.arklet("uninstallBiz", gone).await["code"], "SUCCESS");

    // The guide lists the master biz (`stock-mng`) after the module.
    let reply = base.arklet("queryAllBiz", request("queryAllBiz")).await;
    conforms(
        &reply,
        &expected("queryAllBiz", "stock-mng", "base"),
        "",
        none,
    );
    // Web context paths as the guide writes them: the route prefix without
    // its leading slash (`provider`), and `/` for the master biz.
    let paths: Vec<(&str, &str)> = reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["bizName"].as_str().unwrap(),
                b["webContextPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [("dynamic-provider", "dynamic-provider"), ("base", "/")]
    );
    // An empty body is `{}`, as Arklet clients send it with curl.
    let reply = base.arklet("queryAllBiz", "").await;
    conforms(
        &reply,
        &expected("queryAllBiz", "stock-mng", "base"),
        "",
        none,
    );

    let reply = base.arklet("switchBiz", request("switchBiz")).await;
    conforms(&reply, &expected("switchBiz", "", ""), "", none);

    // The guide's health sample names its module `bookstore-manager`.
    let reply = base.arklet("health", request("health")).await;
    conforms(
        &reply,
        &expected("health", "bookstore-manager", "dynamic-provider"),
        "",
        none,
    );
    let health = &reply["data"]["healthData"];
    assert!(health["jvm"]["run time(s)"].as_f64().unwrap() > 0.0);
    assert!(health["cpu"]["count"].as_u64().unwrap() >= 1);

    let reply = base.arklet("health", request("health.system")).await;
    let health = reply["data"]["healthData"].as_object().unwrap();
    let mut keys: Vec<_> = health.keys().collect();
    keys.sort();
    assert_eq!(keys, ["cpu", "jvm"], "{reply}");

    let biz = request("health.biz").replace("bookstore-manager", "dynamic-provider");
    let reply = base.arklet("health", biz).await;
    let want = expected("health.biz", "bookstore-manager", "dynamic-provider");
    conforms(&reply, &want, "", none);

    let reply = base.arklet("health", request("health.plugin")).await;
    conforms(&reply, &expected("health.plugin", "", ""), "", none);

    let reply = base.arklet("uninstallBiz", request("uninstallBiz")).await;
    conforms(&reply, &expected("uninstallBiz", "", ""), "", none);
    let reply = base.arklet("uninstallBiz", request("uninstallBiz")).await;
    conforms(&reply, &not_found, "", none);
    assert!(base.list().await.modules.is_empty());
}

#[tokio::test]
async fn arklet_switch_activates_a_second_version() {
    let base = TestBase::start().await;
    assert_eq!(
        base.arklet("installBiz", install_as("hello", "1.0.0"))
            .await["code"],
        "SUCCESS"
    );
    // A second version comes in deactivated, as in SOFAArk; switchBiz
    // activates it and the first is deactivated.
    let reply = base
        .arklet("installBiz", install_as("hello", "2.0.0"))
        .await;
    assert_eq!(reply["code"], "SUCCESS", "{reply}");
    assert_eq!(reply["data"]["bizInfos"][0]["bizState"], "DEACTIVATED");

    let switch = json!({"bizName": "hello", "bizVersion": "2.0.0"}).to_string();
    let reply = base.arklet("switchBiz", switch).await;
    conforms(&reply, &expected("switchBiz", "", ""), "", &[]);
    assert_eq!(
        state_of(&base, "hello", "1.0.0").await,
        Some(ModuleState::Inactive)
    );
    assert_eq!(
        state_of(&base, "hello", "2.0.0").await,
        Some(ModuleState::Active)
    );
    let reply = base.arklet("queryAllBiz", "{}").await;
    let arklet_states: Vec<_> = reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bizState"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(arklet_states, ["DEACTIVATED", "ACTIVATED", "ACTIVATED"]);
    base.assert_hello_serves().await;
}

#[tokio::test]
async fn arklet_unknown_command_is_cmd_not_found() {
    let base = TestBase::start().await;
    // The guide shows no CMD_NOT_FOUND body; the code is the issue's.
    let reply = base.arklet("deployBiz", "{}").await;
    assert_eq!(reply["code"], "CMD_NOT_FOUND", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("installBiz"),
        "{reply}"
    );
    // The native API is still there beside the commands.
    let health: berth_api::Health = base.ops_get("/v1/health").await;
    assert_eq!(health.status, "ok");
}

#[tokio::test]
async fn arklet_malformed_body_fails_and_leaves_the_base_unchanged() {
    let base = TestBase::start().await;
    let reply = base
        .arklet("installBiz", install_as("hello", "1.0.0"))
        .await;
    assert_eq!(reply["code"], "SUCCESS", "{reply}");
    let before = base.list().await.modules;

    let hello_url = hello_url();
    for (body, says) in [
        ("{\"bizName\": \"hello\", ".to_string(), "EOF"),
        (
            json!({"bizName": "hello", "bizVersion": "3.0.0"}).to_string(),
            "bizUrl",
        ),
        (
            json!({"bizName": "hello", "bizVersion": "3.0.0", "bizUrl": hello_url, "colour": 1})
                .to_string(),
            "colour",
        ),
        (
            json!({"bizName": "hello", "bizVersion": "3.0.0", "bizUrl": hello_url,
                   "installStrategy": "sometimes"})
            .to_string(),
            "sometimes",
        ),
    ] {
        let reply = base.arklet("installBiz", body.clone()).await;
        assert_eq!(reply["code"], "FAILED", "{body}: {reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        assert!(message.contains("installBiz"), "{message}");
    }
    let reply = base.arklet("uninstallBiz", "[1, 2]").await;
    assert_eq!(reply["code"], "FAILED", "{reply}");

    let after = base.list().await.modules;
    assert_eq!(
        after
            .iter()
            .map(|m| (&m.version, m.state))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|m| (&m.version, m.state))
            .collect::<Vec<_>>()
    );
    base.assert_hello_serves().await;
}

#[tokio::test]
async fn arklet_jar_is_refused_pointing_to_the_guide() {
    let base = TestBase::start().await;
    let body = json!({
        "bizName": "dynamic-provider",
        "bizVersion": "1.0.0",
        "bizUrl": "file:///tmp/dynamic-provider-1.0.0-ark-biz.jar"
    });
    let reply = base.arklet("installBiz", body.to_string()).await;
    assert_eq!(reply["code"], "FAILED", "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("WebAssembly"), "{message}");
    assert!(message.contains("docs/koupleless.md"), "{message}");
    assert!(base.list().await.modules.is_empty());
}

#[tokio::test]
async fn arklet_biz_url_may_name_a_directory_holding_the_wasm() {
    let base = TestBase::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(HELLO, dir.path().join("hello.wasm")).unwrap();
    let body = json!({
        "bizName": "hello",
        "bizVersion": "1.0.0",
        "bizUrl": format!("file://{}", dir.path().display()),
        "envs": {"greeting": "hi"}
    });
    let reply = base.arklet("installBiz", body.to_string()).await;
    assert_eq!(reply["code"], "SUCCESS", "{reply}");
    base.assert_hello_serves().await;
    assert_eq!(base.list().await.modules[0].config_keys, ["greeting"]);

    let empty = tempfile::tempdir().unwrap();
    let body = json!({
        "bizName": "other",
        "bizVersion": "1.0.0",
        "bizUrl": format!("file://{}", empty.path().display()),
    });
    let reply = base.arklet("installBiz", body.to_string()).await;
    assert_eq!(reply["code"], "FAILED", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("no .wasm"));
}

#[tokio::test]
async fn arklet_async_install_then_query_biz_ops() {
    let base = TestBase::start().await;
    let mut body: Value = serde_json::from_str(&install_as("hello", "1.0.0")).unwrap();
    body["async"] = json!(true);
    body["requestId"] = json!("req-1");
    let reply = base.arklet("installBiz", body.to_string()).await;
    assert_eq!(reply["code"], "SUCCESS", "{reply}");
    assert_eq!(reply["data"]["requestId"], "req-1");

    let query = json!({"requestId": "req-1"}).to_string();
    let mut op = Value::Null;
    for _ in 0..600 {
        let reply = base.arklet("queryBizOps", query.clone()).await;
        assert_eq!(reply["code"], "SUCCESS", "{reply}");
        op = reply["data"].clone();
        if op["status"] != "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(op["status"], "SUCCESS", "{op}");
    conforms(
        &op["result"],
        &expected("installBiz", "dynamic-provider", "hello"),
        "",
        TIMED,
    );
    base.assert_hello_serves().await;

    // The same id again is refused; a repeat install under a new id fails
    // with REPEAT_BIZ in its result.
    let reply = base.arklet("installBiz", body.to_string()).await;
    assert_eq!(reply["code"], "FAILED", "{reply}");
    body["requestId"] = json!("req-2");
    base.arklet("installBiz", body.to_string()).await;
    let query = json!({"requestId": "req-2"}).to_string();
    for _ in 0..600 {
        op = base.arklet("queryBizOps", query.clone()).await["data"].clone();
        if op["status"] != "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(op["status"], "FAILED", "{op}");
    let repeat = expected("installBiz.repeat", "dynamic-provider", "hello");
    conforms(&op["result"], &repeat, "", &[]);

    let reply = base
        .arklet("queryBizOps", json!({"requestId": "nope"}).to_string())
        .await;
    assert_eq!(reply["code"], "FAILED", "{reply}");
}

#[tokio::test]
async fn arklet_concurrent_installs_of_one_version_succeed_once() {
    let base = TestBase::start().await;
    let body = install_as("hello", "1.0.0");
    let replies =
        futures::future::join_all((0..4).map(|_| base.arklet("installBiz", body.clone()))).await;
    let codes: Vec<_> = replies
        .iter()
        .map(|r| r["data"]["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| *c == "SUCCESS").count(),
        1,
        "{replies:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "REPEAT_BIZ").count(),
        3,
        "{replies:?}"
    );
    assert_eq!(base.list().await.modules.len(), 1);
}
