//! Versions side by side and traffic rules, over real HTTP with `hello` in
//! two versions built from the same package (v1: "Hello from berth!", v2:
//! "Hello from berth, version 2!").

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_api::InstallRequest;
use berth_example_modules::{ECHO, HELLO, HELLO_V2};
use serde_json::{Value, json};

use crate::support::{TestBase, expect_error, install_request};

/// A base with hello@1 (default) and hello@2 installed beside it.
async fn two_versions() -> TestBase {
    let base = TestBase::start().await;
    base.install_path("hello", "1", HELLO).await;
    let (status, body) = base
        .install(&InstallRequest {
            activate: Some(false),
            ..install_request("hello", "2", HELLO_V2)
        })
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["module"]["state"], "inactive");
    base
}

impl TestBase {
    async fn put_rules(&self, rules: Value) -> (u16, Value) {
        let response = self
            .client
            .put(self.ops("/v1/modules/hello/rules"))
            .json(&rules)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.ops(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The version of hello that served a request built by `build`.
    async fn version_for(
        &self,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> String {
        let response = build(self.client.get(self.url("/hello")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let label = response.headers()["x-berth-module"]
            .to_str()
            .unwrap()
            .to_string();
        let body = response.text().await.unwrap();
        // The header and the body agree on who answered.
        assert_eq!(
            body.contains("version 2"),
            label == "hello@2",
            "{label}: {body}"
        );
        label.trim_start_matches("hello@").to_string()
    }
}

fn rule(name: &str, on: Value, version: &str) -> Value {
    json!({"name": name, "match": [on], "version": version})
}

#[tokio::test]
async fn each_match_kind_chooses_the_version() {
    let base = two_versions().await;
    assert_eq!(base.version_for(|r| r).await, "1");
    let (status, body) = base
        .put_rules(json!({"rules": [
            rule("beta header", json!({"on": "header", "name": "X-Beta", "exact": "yes"}), "2"),
            rule("query", json!({"on": "query", "name": "v", "prefix": "2"}), "2"),
            rule("cookie", json!({"on": "cookie", "name": "group", "regex": "^b[0-9]+$"}), "2"),
            rule("office", json!({"on": "clientIp", "cidr": "10.0.0.0/8"}), "2"),
            rule("v2 path", json!({"on": "path", "prefix": "/hello/next"}), "2"),
        ]}))
        .await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(base.version_for(|r| r.header("x-beta", "yes")).await, "2");
    assert_eq!(base.version_for(|r| r.header("x-beta", "no")).await, "1");
    assert_eq!(base.version_for(|r| r.query(&[("v", "2.1")])).await, "2");
    assert_eq!(base.version_for(|r| r.query(&[("v", "1.9")])).await, "1");
    assert_eq!(
        base.version_for(|r| r.header("cookie", "a=1; group=b42"))
            .await,
        "2"
    );
    assert_eq!(
        base.version_for(|r| r.header("cookie", "group=b42x")).await,
        "1"
    );
    // Requests here come from 127.0.0.1, outside 10.0.0.0/8.
    assert_eq!(base.version_for(|r| r).await, "1");
    let response = base
        .client
        .get(base.url("/hello/next/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-berth-module"], "hello@2");

    // Loopback is in 127.0.0.0/8: now every request matches.
    let (status, _) =
        base.put_rules(json!({"rules": [rule("local", json!({"on": "clientIp", "cidr": "127.0.0.0/8"}), "2")]})).await;
    assert_eq!(status, 200);
    assert_eq!(base.version_for(|r| r).await, "2");
}

#[tokio::test]
async fn an_invalid_rule_set_is_refused_whole_and_the_old_rules_stay() {
    let base = two_versions().await;
    let good = json!({"rules": [rule("beta", json!({"on": "header", "name": "x-beta"}), "2")]});
    assert_eq!(base.put_rules(good.clone()).await.0, 200);

    let cases = [
        (
            json!({"rules": [rule("ok", json!({"on": "header", "name": "a"}), "1"), rule("ghost", json!({"on": "header", "name": "b"}), "9")]}),
            "rule #2 \"ghost\": version `9` is not installed (installed: 1, 2); install it first \
             (it can be installed without becoming the default: `berth deploy --no-activate`)",
        ),
        (
            json!({"rules": [{"name": "gray", "split": [{"version": "1", "weight": 90}, {"version": "2", "weight": 20}]}]}),
            "rule #1 \"gray\": split weights sum to 110",
        ),
        (
            json!({"rules": [rule("bad re", json!({"on": "path", "regex": "(["}), "2")]}),
            "rule #1 \"bad re\", match #1: regex `([` is invalid",
        ),
        (
            json!({"rules": [rule("bad ip", json!({"on": "clientIp", "cidr": "300.1.1.1/8"}), "2")]}),
            "cidr `300.1.1.1/8` is invalid",
        ),
        (
            json!({"trafficUnits": {"blue": "7"}}),
            "trafficUnits.blue: version `7` is not installed",
        ),
    ];
    for (rules, expected) in cases {
        let message = expect_error(base.put_rules(rules).await, 422, "invalid_rules");
        assert!(
            message.contains(expected),
            "{message}\nexpected: {expected}"
        );
        assert!(message.contains("the old ones stay"), "{message}");
    }
    // A malformed document (unknown field) is a bad request.
    expect_error(
        base.put_rules(json!({"rulez": []})).await,
        400,
        "invalid_request",
    );

    let current: Value = base.ops_get("/v1/modules/hello/rules").await;
    assert_eq!(current, good);
    assert_eq!(base.version_for(|r| r.header("x-beta", "1")).await, "2");
    assert_eq!(base.version_for(|r| r).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_lands_within_3_points_over_2000_requests() {
    let base = two_versions().await;
    let split = json!({"rules": [{"name": "gray", "split": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}]}]});
    assert_eq!(base.put_rules(split).await.0, 200);
    let base = Arc::new(base);
    let v2 = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (base, v2) = (base.clone(), v2.clone());
            tokio::spawn(async move {
                for _ in 0..250 {
                    if base.version_for(|r| r).await == "2" {
                        v2.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let share = v2.load(Ordering::Relaxed) as f64 / 2000.0 * 100.0;
    assert!(
        (7.0..=13.0).contains(&share),
        "version 2 got {share:.1}% of 2000 requests, not 10±3"
    );
}

#[tokio::test]
async fn sticky_keys_keep_their_version_across_a_rule_update() {
    let base = two_versions().await;
    let split = json!({"name": "ab", "split": [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}],
                       "stickyBy": {"on": "header", "name": "x-user"}});
    assert_eq!(
        base.put_rules(json!({"rules": [split.clone()]})).await.0,
        200
    );
    let mut first = HashMap::new();
    for user in 0..500 {
        let version = base
            .version_for(|r| r.header("x-user", format!("user-{user}")))
            .await;
        // Asking again gives the same answer.
        assert_eq!(
            base.version_for(|r| r.header("x-user", format!("user-{user}")))
                .await,
            version
        );
        first.insert(user, version);
    }
    let twos = first.values().filter(|v| *v == "2").count();
    assert!(
        (175..=325).contains(&twos),
        "a 50/50 split put {twos} of 500 keys on version 2"
    );

    // An update that adds a rule in front but keeps the split's buckets.
    let updated =
        json!({"rules": [rule("beta", json!({"on": "header", "name": "x-beta"}), "2"), split]});
    assert_eq!(base.put_rules(updated).await.0, 200);
    for user in 0..500 {
        let version = base
            .version_for(|r| r.header("x-user", format!("user-{user}")))
            .await;
        assert_eq!(
            version, first[&user],
            "user-{user} flipped versions after the rule update"
        );
    }
}

#[tokio::test]
async fn a_traffic_unit_pins_the_version() {
    let base = two_versions().await;
    let rules = json!({"rules": [{"split": [{"version": "1", "weight": 100}, {"version": "2", "weight": 0}]}],
                       "trafficUnits": {"blue": "2", "green": "1"}});
    assert_eq!(base.put_rules(rules).await.0, 200);
    for _ in 0..20 {
        assert_eq!(
            base.version_for(|r| r.header("x-berth-traffic-unit", "blue"))
                .await,
            "2"
        );
        assert_eq!(
            base.version_for(|r| r.header("x-berth-traffic-unit", "green"))
                .await,
            "1"
        );
        assert_eq!(
            base.version_for(|r| r.header("x-berth-traffic-unit", "red"))
                .await,
            "1"
        );
    }
}

#[tokio::test]
async fn rules_and_traffic_units_survive_a_restart() {
    let mut base = two_versions().await;
    let rules = json!({"rules": [rule("beta", json!({"on": "header", "name": "x-beta", "exact": "yes"}), "2")],
                       "trafficUnits": {"blue": "2"}});
    assert_eq!(base.put_rules(rules).await.0, 200);
    assert_rules_apply(&base).await;
    base.restart().await;
    assert_rules_apply(&base).await;
}

/// The rule and the traffic unit of `rules_and_traffic_units_survive_a_restart` choose.
async fn assert_rules_apply(base: &TestBase) {
    assert_eq!(base.version_for(|r| r.header("x-beta", "yes")).await, "2");
    assert_eq!(base.version_for(|r| r.header("x-beta", "no")).await, "1");
    assert_eq!(
        base.version_for(|r| r.header("x-berth-traffic-unit", "blue"))
            .await,
        "2"
    );
    assert_eq!(base.version_for(|r| r).await, "1");
}

#[tokio::test]
async fn a_version_the_rules_use_cannot_be_removed_until_they_stop() {
    let base = two_versions().await;
    assert_eq!(
        base.put_rules(
            json!({"rules": [rule("beta", json!({"on": "header", "name": "x-beta"}), "2")]})
        )
        .await
        .0,
        200
    );
    let response = base
        .client
        .delete(base.ops("/v1/modules/hello/versions/2"))
        .send()
        .await
        .unwrap();
    let message = expect_error(
        (response.status().as_u16(), response.json().await.unwrap()),
        409,
        "version_in_use",
    );
    assert!(message.contains("rule #1 \"beta\""), "{message}");
    assert!(message.contains("`berth rules set hello`"), "{message}");
    assert!(!message.contains("/v1/"), "{message}");
    assert_eq!(base.version_for(|r| r.header("x-beta", "1")).await, "2");

    assert_eq!(base.put_rules(json!({})).await.0, 200);
    let response = base
        .client
        .delete(base.ops("/v1/modules/hello/versions/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(base.version_for(|r| r.header("x-beta", "1")).await, "1");
}

/// What the base lists of `echo`: (version, in flight) of each version.
async fn echo_versions(base: &TestBase) -> Vec<(String, u32)> {
    base.list()
        .await
        .modules
        .into_iter()
        .filter(|m| m.name == "echo")
        .map(|m| (m.version, m.in_flight))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_its_version_after_a_switch_and_uninstall() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let base = TestBase::start().await;
    base.install_path("echo", "1", ECHO).await;
    let (status, body) = base
        .install(&InstallRequest {
            activate: Some(false),
            ..install_request("echo", "2", ECHO)
        })
        .await;
    assert_eq!(status, 201, "{body}");

    // A chunked request body that arrives slowly: the first chunk now, the
    // rest after the switch and the uninstall.
    let addr = base.url("").trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\
              connection: close\r\n\r\n5\r\nfirst\r\n",
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while echo_versions(&base).await != [("1".to_string(), 1), ("2".to_string(), 0)] {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never reached echo@1: {:?}",
            echo_versions(&base).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Mid-request: echo@2 becomes the default and echo@1 is uninstalled.
    let (status, body) = base
        .post("/v1/modules/echo/switch", json!({"version": "2"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = base.ops_delete("/v1/modules/echo/versions/1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo_versions(&base).await, [("2".to_string(), 0)]);

    // The request still ends 200, served by echo@1 with its whole body.
    stream
        .write_all(b"7\r\n, last!\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the response came")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("x-berth-module: echo@1"),
        "{response}"
    );
    assert!(response.contains(r#""body":"first, last!""#), "{response}");

    // Afterwards only echo@2 is left, and it serves.
    assert_eq!(echo_versions(&base).await, [("2".to_string(), 0)]);
    let response = base.client.get(base.url("/echo")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-berth-module"], "echo@2");
}

#[tokio::test]
async fn switch_and_rollback_change_the_default_and_survive_a_restart() {
    let mut base = two_versions().await;
    expect_error(
        base.post("/v1/modules/hello/rollback", json!({})).await,
        409,
        "nothing_to_roll_back",
    );
    let (status, body) = base
        .post("/v1/modules/hello/switch", json!({"version": "2"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["previous"].as_str(), body["current"].as_str()),
        (Some("1"), Some("2"))
    );
    assert_eq!(base.version_for(|r| r).await, "2");
    expect_error(
        base.post("/v1/modules/hello/switch", json!({"version": "3"}))
            .await,
        404,
        "module_not_found",
    );

    base.restart().await;
    assert_eq!(base.version_for(|r| r).await, "2");
    let (status, body) = base.post("/v1/modules/hello/rollback", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current"], "1");
    assert_eq!(base.version_for(|r| r).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_and_rollbacks_under_load_fail_no_request() {
    let base = Arc::new(two_versions().await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (base, stop, ok, failed, seen) = (
                base.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                seen.clone(),
            );
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.get(base.url("/hello")).send().await {
                        Ok(response) if response.status() == 200 => {
                            let label = response.headers()["x-berth-module"]
                                .to_str()
                                .unwrap()
                                .to_string();
                            let mut seen = seen.lock().unwrap();
                            if seen.last() != Some(&label) {
                                seen.push(label);
                            }
                            drop(seen);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (status, body) = base
            .post("/v1/modules/hello/switch", json!({"version": "2"}))
            .await;
        assert_eq!(status, 200, "round {round}: {body}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (status, body) = base.post("/v1/modules/hello/rollback", json!({})).await;
        assert_eq!(status, 200, "round {round}: {body}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during switches",
        ok + failed
    );
    assert!(ok > 500, "only {ok} requests in 4 s");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|l| l == "hello@2") && seen.iter().any(|l| l == "hello@1"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_version_header_can_be_turned_off() {
    let base = TestBase::start_with(|c| c.version_header = false).await;
    base.install_path("hello", "1", HELLO).await;
    let (status, headers, body) = base.get("/hello").await;
    assert_eq!((status, body.as_str()), (200, "Hello from berth!\n"));
    assert!(headers.get("x-berth-module").is_none());
}
