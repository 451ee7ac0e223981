//! The example SQL base end to end: built with the builder, it installs
//! `sql-notes` and serves its queries, each module in its own database; and
//! under a controller it registers with `berth:sql/query` among its
//! capabilities and is the only base the SQL module is placed on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_base::{Base, BaseConfig, ControllerLink, RunningBase};
use berth_example_modules::SQL_NOTES;
use berth_sql_base::{SQL_INTERFACE, SqlCapability};
use serde_json::Value;

fn config(dir: &std::path::Path) -> BaseConfig {
    let mut config = BaseConfig::new(dir).on_ephemeral_ports();
    // Installs read the example module from its build directory.
    config.artifact_dirs = vec![
        std::path::Path::new(SQL_NOTES)
            .parent()
            .expect("modules dir")
            .to_path_buf(),
    ];
    config.runtime.max_instances = 32;
    config
}

async fn sql_base(dir: &std::path::Path, link: Option<ControllerLink>) -> RunningBase {
    let mut config = config(dir);
    config.controller = link;
    Base::builder()
        .config(config)
        .capability(SqlCapability::new(dir.join("sql"), 2))
        .start()
        .await
        .expect("the SQL base starts")
}

fn install(name: &str) -> berth_api::InstallRequest {
    berth_api::InstallRequest {
        artifact: Some(berth_api::ArtifactSource::Path(SQL_NOTES.into())),
        ..berth_api::InstallRequest::new(name, "1")
    }
}

async fn send(base: &RunningBase, path: &str, body: Option<&str>) -> (u16, Value) {
    let url = format!("http://{}{path}", base.ingress_addr);
    let client = reqwest::Client::new();
    let request = match body {
        Some(body) => client.post(url).body(body.to_owned()),
        None => client.get(url),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_sql_base_serves_each_modules_queries_in_its_own_database() {
    let dir = tempfile::tempdir().unwrap();
    let running = sql_base(dir.path(), None).await;
    assert!(
        running
            .base
            .health()
            .capabilities
            .contains(&SQL_INTERFACE.to_string()),
        "{:?}",
        running.base.health().capabilities
    );
    for name in ["notes", "diary"] {
        running.base.install(install(name), None).await.unwrap();
    }

    let (status, body) = send(&running, "/notes", Some("first")).await;
    assert_eq!((status, &body["id"]), (200, &Value::from(1)), "{body}");
    send(&running, "/notes", Some("second")).await;
    let (status, body) = send(&running, "/notes", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["notes"],
        serde_json::json!([{"id": 1, "body": "first"}, {"id": 2, "body": "second"}])
    );

    // diary has a `notes` table of its own, empty until it writes.
    let (_, body) = send(&running, "/diary", None).await;
    assert_eq!(body["notes"], serde_json::json!([]), "{body}");
    let (_, body) = send(&running, "/diary", Some("dear diary")).await;
    assert_eq!(body["id"], 1, "{body}");
    let (_, body) = send(&running, "/diary/tables", None).await;
    assert_eq!(body["tables"], serde_json::json!(["notes"]));
    let (_, body) = send(&running, "/notes", None).await;
    assert_eq!(body["notes"].as_array().unwrap().len(), 2, "{body}");
    // One database file per module.
    for name in ["notes", "diary"] {
        assert!(dir.path().join(format!("sql/{name}.sqlite")).exists());
    }
    running.shutdown().await;
}

/// A controller with a code shop on a free port.
async fn controller(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    use berth_controller::{api, code::CodeShop, reconciler::Reconciler, resources::Resources};
    std::fs::create_dir_all(dir).unwrap();
    let store = berth_controller::store::RedbStore::open(&dir.join("controller.redb")).unwrap();
    let resources = Arc::new(Resources::new(
        Arc::new(store) as berth_controller::store::SharedStore
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shared = api::Shared {
        reconciler: Reconciler::new(resources, Duration::from_secs(5)),
        code: Some(Arc::new(CodeShop::open(dir.join("compiled")).unwrap())),
        trust_keys: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, shared, async {
        let _ = stopped.await;
    }));
    (url, stop)
}

fn link(url: &str, name: &str, group: &str) -> ControllerLink {
    let mut link = ControllerLink::new(url, name, &[format!("group={group}")]).unwrap();
    link.capacity_modules = 10;
    link.interval = Duration::from_millis(100);
    link
}

/// `GET url` decoded as JSON; `None` while the controller does not answer.
async fn get_json(client: &reqwest::Client, url: String) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn under_a_controller_the_sql_module_lands_only_on_the_sql_base() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = controller(&dir.path().join("controller")).await;
    let plain_dir = dir.path().join("plain");
    let mut plain_config = config(&plain_dir);
    plain_config.controller = Some(link(&url, "plain", "plain"));
    let plain = Base::start(plain_config).await.unwrap();
    let sql = sql_base(&dir.path().join("sql"), Some(link(&url, "sql", "sql"))).await;
    let client = reqwest::Client::new();

    // Both register; only the SQL base offers the interface.
    let bases: Value = eventually("both bases", async || {
        let bases: Value = get_json(&client, format!("{url}/v1/bases")).await?;
        (bases.as_array()?.len() == 2).then_some(bases)
    })
    .await;
    for b in bases.as_array().unwrap() {
        let offers = b["heartbeat"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&Value::from(SQL_INTERFACE));
        assert_eq!(offers, b["heartbeat"]["name"] == "sql", "{b}");
    }

    let digest = format!(
        "sha256:{}",
        berth_runtime::Digest::of(&std::fs::read(SQL_NOTES).unwrap()).hex()
    );
    let apply = async |name: &str, spec: &str| {
        let manifest = format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: {name} }}\nspec:\n  module: {{ name: {name}, version: \"1\", artifact: \"file:{SQL_NOTES}\", digest: \"{digest}\" }}\n  {spec}\n"
        );
        let response = client
            .post(format!("{url}/v1/apply"))
            .body(manifest)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    };
    // Two replicas wanted, one base can take it.
    apply("notes", "replicas: 2").await;
    eventually("notes served by the SQL base", async || {
        let (status, _) = send(&sql, "/notes", Some("placed")).await;
        (status == 200).then_some(())
    })
    .await;
    let (_, body) = send(&sql, "/notes", None).await;
    assert_eq!(body["notes"][0]["body"], "placed", "{body}");
    // Selected onto the plain base only: unschedulable, naming the interface.
    apply("ledger", "replicas: 1\n  baseSelector: { group: plain }").await;
    let message = eventually("ledger's reason", async || {
        let shown: Value = get_json(&client, format!("{url}/v1/deployments/ledger")).await?;
        let text = shown["status"]["conditions"].to_string();
        text.contains("no base offers").then_some(text)
    })
    .await;
    assert!(
        message.contains(&format!("unschedulable: no base offers {SQL_INTERFACE}")),
        "{message}"
    );
    // The plain base never got either module (it would have refused them).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = plain.base.list(None).unwrap();
    assert!(list.modules.is_empty(), "{:?}", list.modules);
    assert!(
        plain
            .base
            .health()
            .capabilities
            .iter()
            .all(|c| c != SQL_INTERFACE)
    );
    let status: Value = get_json(&client, format!("{url}/v1/deployments/notes"))
        .await
        .expect("the controller answers");
    assert_eq!(status["status"]["unschedulable"], 1, "{status}");
    sql.shutdown().await;
    plain.shutdown().await;
}
