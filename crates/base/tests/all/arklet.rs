//! Koupleless' Arklet commands on the ops address, checked against the
//! request and response bodies in `tests/fixtures/arklet/` (Arklet's
//! published shapes), on a real base over real HTTP.

use std::time::Duration;

use berth_api::ModuleState;
use berth_example_modules::HELLO;
use serde_json::{Value, json};

use crate::support::TestBase;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/arklet");

/// A request fixture with `${HELLO_URL}` filled in.
fn request(name: &str) -> String {
    let hello = std::fs::canonicalize(HELLO).unwrap();
    std::fs::read_to_string(format!("{FIXTURES}/{name}.request.json"))
        .unwrap()
        .replace("${HELLO_URL}", &format!("file://{}", hello.display()))
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}.response.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every key of `expected` is in `actual` with the same value (`"<any>"`
/// matches anything); arrays match element by element.
fn assert_matches(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (_, Value::String(s)) if s == "<any>" => {
            assert!(!actual.is_null(), "{at}: missing in {actual}");
        }
        (Value::Object(a), Value::Object(e)) => {
            for (key, value) in e {
                let got = a
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key} missing in {actual}"));
                assert_matches(got, value, &format!("{at}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{at}: {actual} vs {expected}");
            for (i, (got, want)) in a.iter().zip(e).enumerate() {
                assert_matches(got, want, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{at}"),
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

#[tokio::test]
async fn arklet_commands_answer_as_koupleless_documents() {
    let base = TestBase::start().await;

    let reply = base.arklet("help", request("help")).await;
    assert_matches(&reply, &expected("help"), "help");

    let reply = base.arklet("installBiz", request("installBiz")).await;
    assert_matches(&reply, &expected("installBiz"), "installBiz");
    base.assert_hello_serves().await;

    let reply = base.arklet("installBiz", request("installBiz")).await;
    assert_matches(&reply, &expected("installBiz.repeat"), "repeat");

    let reply = base.arklet("queryAllBiz", request("queryAllBiz")).await;
    assert_matches(&reply, &expected("queryAllBiz"), "queryAllBiz");
    // An empty body is `{}`, as Arklet clients send it with curl.
    let reply = base.arklet("queryAllBiz", "").await;
    assert_matches(&reply, &expected("queryAllBiz"), "queryAllBiz empty");

    let reply = base.arklet("health", request("health")).await;
    assert_matches(&reply, &expected("health"), "health");
    let health = &reply["data"]["healthData"];
    assert!(health["jvm"]["run time(s)"].as_f64().unwrap() > 0.0);
    assert!(health["cpu"]["count"].as_u64().unwrap() >= 1);

    let reply = base.arklet("health", request("health.system")).await;
    let health = reply["data"]["healthData"].as_object().unwrap();
    let mut keys: Vec<_> = health.keys().collect();
    keys.sort();
    assert_eq!(keys, ["cpu", "jvm"], "{reply}");

    let reply = base.arklet("health", request("health.biz")).await;
    assert_matches(&reply, &expected("health.biz"), "health biz");

    // A second version comes in deactivated, as in SOFAArk; switchBiz
    // activates it and the first is deactivated.
    let v2 = request("installBiz").replace("1.0.0", "2.0.0");
    let reply = base.arklet("installBiz", v2).await;
    assert_eq!(reply["code"], "SUCCESS", "{reply}");
    assert_eq!(reply["data"]["bizInfos"][0]["bizState"], "DEACTIVATED");

    let reply = base.arklet("switchBiz", request("switchBiz")).await;
    assert_matches(&reply, &expected("switchBiz"), "switchBiz");
    let states: Vec<(String, ModuleState)> = base
        .list()
        .await
        .modules
        .into_iter()
        .map(|m| (m.version, m.state))
        .collect();
    assert_eq!(
        states,
        [
            ("1.0.0".to_string(), ModuleState::Inactive),
            ("2.0.0".to_string(), ModuleState::Active)
        ]
    );
    let reply = base.arklet("queryAllBiz", "{}").await;
    let arklet_states: Vec<_> = reply["data"].as_array().unwrap()[1..]
        .iter()
        .map(|b| b["bizState"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(arklet_states, ["DEACTIVATED", "ACTIVATED"]);

    let reply = base.arklet("uninstallBiz", request("uninstallBiz")).await;
    assert_matches(&reply, &expected("uninstallBiz"), "uninstallBiz");
    let reply = base.arklet("uninstallBiz", request("uninstallBiz")).await;
    assert_matches(&reply, &expected("uninstallBiz.notfound"), "not found");
    let versions: Vec<_> = base
        .list()
        .await
        .modules
        .into_iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, ["2.0.0"]);
}

#[tokio::test]
async fn arklet_unknown_command_is_cmd_not_found() {
    let base = TestBase::start().await;
    let reply = base.arklet("deployBiz", "{}").await;
    assert_matches(&reply, &expected("unknown"), "unknown");
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
    let reply = base.arklet("installBiz", request("installBiz")).await;
    assert_eq!(reply["code"], "SUCCESS", "{reply}");
    let before = base.list().await.modules;

    let hello_url = format!("file://{}", std::fs::canonicalize(HELLO).unwrap().display());
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
    let mut body: Value = serde_json::from_str(&request("installBiz")).unwrap();
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
    assert_matches(&op["result"], &expected("installBiz"), "async result");
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
    assert_matches(
        &op["result"],
        &expected("installBiz.repeat"),
        "async repeat",
    );

    let reply = base
        .arklet("queryBizOps", json!({"requestId": "nope"}).to_string())
        .await;
    assert_eq!(reply["code"], "FAILED", "{reply}");
}

#[tokio::test]
async fn arklet_concurrent_installs_of_one_version_succeed_once() {
    let base = TestBase::start().await;
    let body = request("installBiz");
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
