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
    let beat = serde_json::json!({"name": "a", "capacityModules": 10, "ingress": "127.0.0.1:1", "ops": "127.0.0.1:2"});
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
    let dir = tempfile::tempdir().unwrap();
    let (url, _server) = serve(&dir.path().join("controller.redb")).await;
    let client = reqwest::Client::new();
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
    let dir = tempfile::tempdir().unwrap();
    let (url, _server) = serve(&dir.path().join("controller.redb")).await;
    let m = component(dir.path(), "orders.wasm", b"");
    let client = reqwest::Client::new();
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
    let dir = tempfile::tempdir().unwrap();
    let (url, _server) = serve(&dir.path().join("controller.redb")).await;
    let client = reqwest::Client::new();
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
