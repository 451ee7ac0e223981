//! The controller API over real HTTP: apply (create, unchanged, update),
//! path-precise manifest errors that change nothing, list, show, delete,
//! and state that survives a restart.

use std::sync::Arc;

use berth_controller::api;
use berth_controller::reconciler::Reconciler;
use berth_controller::resources::Resources;
use berth_controller::store::RedbStore;
use serde_json::Value;

/// A controller on a free port; dropping or sending on the returned
/// sender shuts it down (await the handle to know its store is closed).
async fn serve(
    path: &std::path::Path,
) -> (
    String,
    (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
) {
    serve_trusting(path, berth_runtime::TrustKeys::none()).await
}

/// [`serve`], accepting only artifacts signed by `trust_keys`.
async fn serve_trusting(
    path: &std::path::Path,
    trust_keys: berth_runtime::TrustKeys,
) -> (
    String,
    (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
) {
    let resources = Arc::new(Resources::new(
        Arc::new(RedbStore::open(path).unwrap()) as berth_controller::store::SharedStore
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let reconciler = Reconciler::new(resources, std::time::Duration::from_secs(10));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shared = api::Shared {
            reconciler,
            code: None,
            trust_keys,
        };
        api::serve(listener, shared, async {
            let _ = stopped.await;
        })
        .await
        .unwrap()
    });
    (url, (stop, task))
}

/// What most tests start from: a controller of their own on a store in a
/// temporary directory, and a client.
struct Setup {
    /// The temporary directory (the store, artifacts written beside it).
    dir: tempfile::TempDir,
    /// `http://HOST:PORT` of the controller API.
    url: String,
    client: reqwest::Client,
    /// The server: stops when dropped.
    _server: (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
}

/// A [`Setup`]: a controller on `DIR/controller.redb`.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (url, _server) = serve(&dir.path().join("controller.redb")).await;
    Setup {
        dir,
        url,
        client: reqwest::Client::new(),
        _server,
    }
}

/// A module artifact: the 8-byte preamble of a WebAssembly component is
/// all the controller checks besides the digest; written to DIR/NAME.
fn component(dir: &std::path::Path, name: &str, extra: &[u8]) -> Module {
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.extend_from_slice(extra);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    Module {
        version: "1.4.0".into(),
        artifact: format!("file:{}", path.display()),
        digest: berth_runtime::Digest::of(&bytes).to_string(),
    }
}

/// What a manifest says about its module.
#[derive(Clone)]
struct Module {
    version: String,
    artifact: String,
    digest: String,
}

fn manifest(replicas: &str, m: &Module) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: orders }}\nspec:\n  module: {{ name: orders, version: {}, artifact: \"{}\", digest: \"{}\" }}\n  replicas: {replicas}\n  strategy: {{ batches: 2, needConfirm: true }}\n",
        m.version, m.artifact, m.digest
    )
}

/// Sends base `a`'s heartbeat to `/v1/bases/{to}`.
async fn heartbeat(client: &reqwest::Client, url: &str, to: &str) -> reqwest::Response {
    beat(client, url, to, "a", serde_json::json!({})).await
}

/// Sends the heartbeat of base `name`, labelled `labels`, to
/// `/v1/bases/{to}`.
async fn beat(
    client: &reqwest::Client,
    url: &str,
    to: &str,
    name: &str,
    labels: Value,
) -> reqwest::Response {
    let beat = serde_json::json!({"name": name, "labels": labels, "capacityModules": 10, "ingress": "127.0.0.1:1", "ops": "127.0.0.1:2"});
    client
        .put(format!("{url}/v1/bases/{to}"))
        .json(&beat)
        .send()
        .await
        .unwrap()
}

/// The JSON body of `GET url`.
async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> (u16, Value) {
    let response = client
        .post(format!("{url}/v1/apply"))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_heartbeat_must_name_the_base_it_is_sent_for() {
    let Setup {
        dir: _dir,
        url,
        client,
        _server,
    } = setup().await;
    assert_eq!(heartbeat(&client, &url, "b").await.status(), 400);
    let response = heartbeat(&client, &url, "a").await;
    assert_eq!(response.status(), 200);
    let assigned: Value = response.json().await.unwrap();
    assert_eq!(
        assigned["modules"],
        serde_json::json!([]),
        "nothing is deployed yet"
    );
    let bases: Value = get_json(&client, &format!("{url}/v1/bases")).await;
    assert_eq!(
        (
            bases[0]["heartbeat"]["name"].as_str(),
            bases[0]["state"].as_str()
        ),
        (Some("a"), Some("Ready"))
    );
    let response = client
        .put(format!("{url}/v1/bases/a"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn apply_list_show_delete_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.redb");
    let client = reqwest::Client::new();
    let (url, server) = serve(&path).await;
    let m = component(dir.path(), "orders.wasm", b"");

    let (status, body) = post(&client, &url, manifest("6", &m)).await;
    assert_eq!(
        (status, body["result"].as_str(), body["generation"].as_u64()),
        (201, Some("created"), Some(1))
    );
    let (status, body) = post(&client, &url, manifest("6", &m)).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("unchanged")));

    // A bad manifest: the path of the field, and nothing changes.
    let (status, body) = post(&client, &url, manifest("six", &m)).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid_manifest");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.replicas: invalid type: string \"six\", expected u32"),
        "{message}"
    );
    let (status, body) = post(
        &client,
        &url,
        manifest("6", &m).replace("needConfirm", "needsConfirm"),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.strategy: unknown field `needsConfirm`"),
        "{body}"
    );

    let (status, body) = post(&client, &url, manifest("8", &m)).await;
    assert_eq!(
        (status, body["result"].as_str(), body["generation"].as_u64()),
        (200, Some("updated"), Some(2))
    );
    let list: Value = get_json(&client, &format!("{url}/v1/deployments")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["manifest"]["spec"]["replicas"], 8);

    // Restart: same state.
    let (stop, task) = server;
    drop(stop);
    task.await.unwrap();
    let (url, _server) = serve(&path).await;
    let shown: Value = get_json(&client, &format!("{url}/v1/deployments/orders")).await;
    assert_eq!(
        (
            shown["generation"].as_u64(),
            shown["manifest"]["spec"]["replicas"].as_u64()
        ),
        (Some(2), Some(8))
    );

    let response = client
        .delete(format!("{url}/v1/deployments/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .delete(format!("{url}/v1/deployments/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no ModuleDeployment named `orders`")
    );
}

#[tokio::test]
async fn an_assignment_watch_is_held_until_the_assignments_change() {
    let Setup {
        dir,
        url,
        client,
        _server,
    } = setup().await;
    let m = component(dir.path(), "orders.wasm", b"");
    let watch = |known: &str, wait_ms: u64| {
        client
            .get(format!("{url}/v1/bases/a/assignments"))
            .query(&[("known", known), ("waitMs", &wait_ms.to_string())])
            .send()
    };

    // A base the controller has not heard from gets no (empty) answer.
    let response = watch("", 100).await.unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "base_not_ready");

    assert_eq!(heartbeat(&client, &url, "a").await.status(), 200);
    let first: Value = watch("", 100).await.unwrap().json().await.unwrap();
    assert_eq!(first["modules"], serde_json::json!([]));
    let known = first["revision"].as_str().unwrap().to_string();

    // Held while nothing changes…
    let held = tokio::time::Instant::now();
    let same: Value = watch(&known, 300).await.unwrap().json().await.unwrap();
    assert!(held.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(same["revision"], first["revision"]);

    // …and answered as soon as an apply changes them.
    let pending = tokio::spawn(watch(&known, 10_000));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "the watch answered with no change");
    let applied = tokio::time::Instant::now();
    let (status, body) = post(&client, &url, manifest("2", &m)).await;
    assert_eq!(status, 201, "{body}");
    let changed: Value = pending.await.unwrap().unwrap().json().await.unwrap();
    assert!(applied.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(changed["modules"][0]["name"], "orders");
    assert_ne!(changed["revision"], first["revision"]);
}

#[tokio::test]
async fn an_artifact_the_bases_could_not_run_is_refused_and_changes_nothing() {
    let Setup {
        dir,
        url,
        client,
        _server,
    } = setup().await;
    let good = component(dir.path(), "orders.wasm", b"");
    let (status, body) = post(&client, &url, manifest("2", &good)).await;
    assert_eq!(status, 201, "{body}");
    let shown = || async {
        let mut d = get_json(&client, &format!("{url}/v1/deployments/orders")).await;
        d.as_object_mut().unwrap().remove("events");
        d
    };
    let before = shown().await;

    let v2 = Module {
        version: "2.0.0".into(),
        ..good.clone()
    };
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let other = component(dir.path(), "other.wasm", b"other bytes");
    let cases = [
        (
            Module {
                artifact: "file:/nonexistent/orders.wasm".into(),
                ..v2.clone()
            },
            "spec.module.artifact: cannot read /nonexistent/orders.wasm",
        ),
        (
            Module {
                artifact: "file:./orders.wasm".into(),
                ..v2.clone()
            },
            "spec.module.artifact: `file:./orders.wasm` is a relative path",
        ),
        (
            Module {
                artifact: "http://127.0.0.1:1/orders.wasm".into(),
                ..v2.clone()
            },
            "spec.module.artifact: cannot download http://127.0.0.1:1/orders.wasm",
        ),
        (
            Module {
                digest: other.digest.clone(),
                ..v2.clone()
            },
            "spec.module.digest: `file:",
        ),
        (
            Module {
                artifact: format!("file:{}", core.display()),
                digest: berth_runtime::Digest::of(&std::fs::read(&core).unwrap()).to_string(),
                ..v2.clone()
            },
            "is a core WebAssembly module, not a component",
        ),
        // Other bytes under the version in force.
        (
            other.clone(),
            "spec.module.digest: orders@1.4.0 is deployed with digest",
        ),
    ];
    for (module, want) in cases {
        let (status, body) = post(&client, &url, manifest("2", &module)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "invalid_manifest");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(want), "{message} lacks {want}");
        assert_eq!(
            shown().await,
            before,
            "a refused apply changed the deployment"
        );
    }
    // The same bytes moved elsewhere are the same code: accepted, no rollout.
    let moved = dir.path().join("moved.wasm");
    std::fs::copy(dir.path().join("orders.wasm"), &moved).unwrap();
    let moved = Module {
        artifact: format!("file://{}", moved.display()),
        ..good.clone()
    };
    let (status, body) = post(&client, &url, manifest("2", &moved)).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("updated")));
    assert!(shown().await.get("rollout").is_none());
    // A good new version is accepted.
    let (status, body) = post(
        &client,
        &url,
        manifest(
            "2",
            &Module {
                version: "2.0.0".into(),
                ..other
            },
        ),
    )
    .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("updated")),
        "{body}"
    );
}

#[tokio::test]
async fn a_controller_trusting_a_key_refuses_unsigned_and_wrongly_signed_artifacts() {
    use berth_runtime::signature::{generate_key, sign};
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key().unwrap();
    let (other_secret, _) = generate_key().unwrap();
    let trust = berth_runtime::TrustKeys::parse(&[public.trim().to_string()]).unwrap();
    let (url, _server) = serve_trusting(&dir.path().join("controller.redb"), trust).await;
    let client = reqwest::Client::new();
    let module = component(dir.path(), "orders.wasm", b"");
    let sig = dir.path().join("orders.wasm.sig");
    let digest: berth_runtime::Digest = module.digest.parse().unwrap();

    // Unsigned: refused, nothing created.
    let (status, body) = post(&client, &url, manifest("2", &module)).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("is not signed") && message.contains("berth sign"),
        "{message}"
    );
    // Signed with a key the controller does not trust: refused.
    std::fs::write(&sig, sign(&digest, &other_secret).unwrap()).unwrap();
    let (status, body) = post(&client, &url, manifest("2", &module)).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("does not verify"), "{message}");
    let listed = get_json(&client, &format!("{url}/v1/deployments")).await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "a refused manifest created something: {listed}"
    );

    // Signed with the trusted key: created, and served to bases with its signature.
    std::fs::write(&sig, sign(&digest, &secret).unwrap()).unwrap();
    let (status, body) = post(&client, &url, manifest("2", &module)).await;
    assert_eq!(status, 201, "{body}");
    let hex = digest.hex();
    let served = client
        .get(format!("{url}/v1/artifacts/{hex}"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(
        berth_runtime::Digest::of(&served.bytes().await.unwrap()),
        digest
    );
    let served_sig = client
        .get(format!("{url}/v1/artifacts/{hex}.sig"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served_sig, std::fs::read_to_string(&sig).unwrap());
    // An artifact no deployment names is not served.
    let unknown = client
        .get(format!("{url}/v1/artifacts/{}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// `METHOD url` with a JSON body; the status and the JSON answer.
async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: String,
) -> (u16, Value) {
    let response = client.request(method, url).body(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls `GET url` (up to 10 s) until `check` holds for its JSON; returns it.
async fn until(client: &reqwest::Client, url: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let value = get_json(client, url).await;
        if check(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 10 s: {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn load_reports_are_validated_summed_per_deployment_and_shown() {
    let Setup {
        dir,
        url,
        client,
        _server,
    } = setup().await;
    let m = component(dir.path(), "orders.wasm", b"");
    assert_eq!(post(&client, &url, manifest("2", &m)).await.0, 201);
    let put = |gateway: &str, body: &str| {
        send(
            &client,
            reqwest::Method::PUT,
            format!("{url}/v1/gateways/{gateway}/load"),
            body.to_string(),
        )
    };
    let (status, body) = put(
        "gw-1",
        r#"{"deployments": {"orders": {"in_flight": 3, "rps": 12.5, "held": 1}}}"#,
    )
    .await;
    assert_eq!((status, body["deployments"].as_u64()), (200, Some(1)));
    let (status, _) = put(
        "gw-2",
        r#"{"deployments": {"orders": {"in_flight": 2, "rps": 7.5, "held": 0}}}"#,
    )
    .await;
    assert_eq!(status, 200);
    let shown = get_json(&client, &format!("{url}/v1/deployments/orders")).await;
    let want = serde_json::json!({"inFlight": 5, "rps": 20.0, "held": 1, "gateways": 2});
    assert_eq!(shown["status"]["load"], want);

    // A bad report: 422 naming the field, and the board keeps what it had.
    let cases = [
        (
            "{\"deployments\": 5}",
            "deployments: invalid type: integer `5`",
        ),
        (
            r#"{"deployments": {"orders": {"in_flight": 1, "rps": -1, "held": 0}}}"#,
            "deployments.orders.rps: -1 must be a number of requests per second",
        ),
        (
            r#"{"deployments": {"orders": {"in_flight": "many", "rps": 1, "held": 0}}}"#,
            "deployments.orders.in_flight: invalid type: string \"many\"",
        ),
        (
            r#"{"deployments": {"orders": {"inFlight": 1, "rps": 1, "held": 0}}}"#,
            "deployments.orders.inFlight: unknown field `inFlight`",
        ),
        ("{\"deployments\": {", "the load report is not JSON"),
    ];
    for (bad, says) in cases {
        let (status, body) = put("gw-1", bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_load_report");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("the load report of gateway `gw-1` is not valid: ")
                && message.contains(says),
            "{message}\nexpected: {says}"
        );
    }
    let shown = get_json(&client, &format!("{url}/v1/deployments/orders")).await;
    assert_eq!(shown["status"]["load"], want);
    // The controller's metrics carry the sums.
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "berth_controller_load_in_flight{deployment=\"orders\"} 5",
        "berth_controller_load_rps{deployment=\"orders\"} 20.0",
        "berth_controller_load_held{deployment=\"orders\"} 1",
        "berth_controller_load_gateways 2",
        "berth_controller_load_reports_total 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
}

/// A burst of load reports (10 gateways, 100 reports back to back) wakes
/// the autoscaler at most once per 100 ms (`scaler::REPORT_GAP`), not once
/// per report; and a report does wake it.
#[tokio::test]
async fn a_burst_of_load_reports_shares_the_autoscalers_ticks() {
    let Setup {
        dir,
        url,
        client,
        _server,
    } = setup().await;
    let m = component(dir.path(), "orders.wasm", b"");
    assert_eq!(post(&client, &url, manifest("2", &m)).await.0, 201);
    let ticks = || async {
        let metrics = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("berth_controller_scaler_ticks_total "))
            .expect("the scaler's tick counter")
            .parse::<f64>()
            .unwrap()
    };
    let (before, since) = (ticks().await, std::time::Instant::now());
    for i in 0..100 {
        let (status, _) = send(
            &client,
            reqwest::Method::PUT,
            format!("{url}/v1/gateways/gw-{}/load", i % 10),
            r#"{"deployments": {"orders": {"in_flight": 1, "rps": 2.0, "held": 0}}}"#.into(),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Every tick the burst may have caused: one per 100 ms of it, one
    // per 500 ms of the timer, and one in progress at each end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut after = ticks().await;
    while after <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no tick after 100 reports"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        after = ticks().await;
    }
    let ms = since.elapsed().as_millis() as f64;
    let bound = (ms / 100.0).floor() + (ms / 500.0).floor() + 2.0;
    assert!(
        after - before <= bound,
        "{} ticks for 100 reports in {ms} ms (at most {bound})",
        after - before
    );
}

#[tokio::test]
async fn activation_refuses_with_the_reason_and_places_one_replica() {
    let Setup {
        dir,
        url,
        client,
        _server,
    } = setup().await;
    let m = component(dir.path(), "orders.wasm", b"");
    let activate = |name: &str| {
        send(
            &client,
            reqwest::Method::POST,
            format!("{url}/v1/deployments/{name}/activate"),
            String::new(),
        )
    };
    let (status, body) = activate("orders").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Not scale-to-zero: refused, saying so.
    assert_eq!(post(&client, &url, manifest("2", &m)).await.0, 201);
    let (status, body) = activate("orders").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_scale_to_zero");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`orders` does not scale to zero"),
        "{body}"
    );

    // Scale-to-zero, for bases labelled gold: with no gateway reporting
    // load it is idle, and after 1 s it has no replica.
    let zero = manifest("1", &m).replace(
        "  strategy: { batches: 2, needConfirm: true }\n",
        "  scaleToZero: { idleAfter: 1s }\n  baseSelector: { group: gold }\n",
    );
    assert_eq!(post(&client, &url, zero).await.0, 200);
    let shown = until(&client, &format!("{url}/v1/deployments/orders"), |d| {
        d["status"]["scaledToZero"] == true
    })
    .await;
    assert_eq!(shown["status"]["desired"], 0);
    assert_eq!(shown["scale"]["reason"], "idle");
    // No base matches: refused, with the scheduler's reason.
    let (status, body) = activate("orders").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "unschedulable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no base can run a replica of ModuleDeployment `orders`")
            && message.contains("no Ready base matches group=gold"),
        "{message}"
    );
    let shown = get_json(&client, &format!("{url}/v1/deployments/orders")).await;
    assert_eq!(
        shown["status"]["desired"], 0,
        "a refused activation changed it"
    );

    // A gold base: activation places one replica there, at once.
    let response = beat(
        &client,
        &url,
        "a",
        "a",
        serde_json::json!({"group": "gold"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (status, body) = activate("orders").await;
    assert_eq!((status, body), (202, serde_json::json!({"replicas": 1})));
    let assigned = get_json(&client, &format!("{url}/v1/bases/a/assignments?waitMs=0")).await;
    assert_eq!(assigned["modules"][0]["name"], "orders");
    let (status, body) = activate("orders").await;
    assert_eq!((status, body), (200, serde_json::json!({"replicas": 1})));
}

#[tokio::test]
async fn a_peer_deployment_wants_one_replica_per_matching_base() {
    let Setup {
        dir,
        url,
        client,
        _server,
    } = setup().await;
    let m = component(dir.path(), "orders.wasm", b"");
    let peer = manifest("all", &m).replace(
        "  strategy: { batches: 2, needConfirm: true }\n",
        "  baseSelector: { group: gold }\n",
    );
    let (status, body) = post(&client, &url, peer).await;
    assert_eq!(status, 201, "{body}");
    for (name, group) in [("a", "gold"), ("b", "gold"), ("c", "silver")] {
        let response = beat(
            &client,
            &url,
            name,
            name,
            serde_json::json!({"group": group}),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    let shown = get_json(&client, &format!("{url}/v1/deployments/orders")).await;
    assert_eq!(shown["manifest"]["spec"]["replicas"], "all");
    assert_eq!(
        (
            shown["status"]["desired"].as_u64(),
            shown["status"]["unschedulable"].as_u64()
        ),
        (Some(2), Some(0))
    );
    let bases: Vec<&str> = shown["status"]["bases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["base"].as_str().unwrap())
        .collect();
    assert_eq!(bases, ["a", "b"]);
    let events = shown["events"].to_string();
    assert!(
        events.contains("orders@1.4.0 with all replica(s)"),
        "{events}"
    );
}

#[tokio::test]
async fn bad_scaling_specs_are_refused_by_field_and_change_nothing() {
    let Setup {
        dir,
        url,
        client,
        _server,
    } = setup().await;
    let m = component(dir.path(), "orders.wasm", b"");
    assert_eq!(post(&client, &url, manifest("2", &m)).await.0, 201);
    let shown = || async {
        let mut d = get_json(&client, &format!("{url}/v1/deployments/orders")).await;
        d.as_object_mut().unwrap().remove("events");
        d
    };
    let before = shown().await;
    let autoscale = |spec: &str| {
        manifest("2", &m).replace("  replicas: 2\n", &format!("  autoscale: {spec}\n"))
    };
    let cases = [
        (
            manifest("2", &m).replace(
                "  replicas: 2\n",
                "  replicas: 2\n  autoscale: { maxReplicas: 3, target: { rps: 10 } }\n",
            ),
            "spec.autoscale: cannot be combined with spec.replicas",
        ),
        (
            autoscale("{ minReplicas: 4, maxReplicas: 2, target: { rps: 10 } }"),
            "spec.autoscale.minReplicas: 4 is above maxReplicas 2",
        ),
        (
            autoscale("{ maxReplicas: 2, target: { concurrency: 0 } }"),
            "spec.autoscale.target.concurrency: 0 must be above 0",
        ),
        (
            autoscale("{ maxReplicas: 2, target: { rps: 5 }, busyBaseInFlight: 0 }"),
            "spec.autoscale.busyBaseInFlight: 0 must be above 0",
        ),
        (
            manifest("2", &m).replace(
                "  replicas: 2\n",
                "  replicas: 2\n  scaleToZero: { idleAfter: later }\n",
            ),
            "spec.scaleToZero.idleAfter: `later` is not a duration",
        ),
        (
            manifest("2", &m).replace("  replicas: 2\n", "  replicas: 2\n  priority: urgent\n"),
            "spec.priority: `urgent` is not a priority; use critical, standard or besteffort",
        ),
        (
            manifest("2", &m).replace("  replicas: 2\n", "  replicas: most\n"),
            "spec.replicas: invalid type: string \"most\", expected u32, or `all`",
        ),
    ];
    for (text, want) in cases {
        let (status, body) = post(&client, &url, text).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "invalid_manifest");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(want), "{message}\nexpected: {want}");
        assert_eq!(
            shown().await,
            before,
            "a refused apply changed the deployment"
        );
    }
    // A good autoscale spec replaces the replicas.
    let (status, body) = post(
        &client,
        &url,
        autoscale("{ minReplicas: 1, maxReplicas: 3, target: { rps: 10 } }"),
    )
    .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("updated")),
        "{body}"
    );
    let d = shown().await;
    assert_eq!(d["status"]["desired"], 1);
    assert_eq!(d["manifest"]["spec"]["autoscale"]["maxReplicas"], 3);
}
