//! The ops API: install from every source, list, uninstall, versions, health.

use berth_api::{ArtifactSource, Health, InstallRequest, ModuleState, Route};
use berth_example_modules::{ECHO, HELLO};

use crate::support::{TestBase, digest_of, install_request, serve_files};

#[tokio::test]
async fn install_from_path_lists_and_serves() {
    let base = TestBase::start().await;
    let body = base.install_path("hello", "1.0.0", HELLO).await;
    assert_eq!(body["unchanged"], false);
    assert_eq!(body["module"]["compileCache"], "miss");
    base.assert_hello_serves().await;

    let list = base.list().await;
    assert_eq!(list.modules.len(), 1);
    let m = &list.modules[0];
    assert_eq!((m.name.as_str(), m.version.as_str()), ("hello", "1.0.0"));
    assert_eq!(m.digest, digest_of(HELLO));
    assert_eq!(m.route.path_prefix.as_deref(), Some("/hello"));
    assert_eq!(m.state, ModuleState::Active);
    assert_eq!(m.size_bytes, std::fs::metadata(HELLO).unwrap().len());
    assert!(m.install_duration_ms > 0.0);
    assert!(
        m.installed_at.starts_with("20") && m.installed_at.ends_with('Z'),
        "{}",
        m.installed_at
    );

    let health: Health = base.ops_get("/v1/health").await;
    assert_eq!(health.status, "ok");
    assert_eq!(health.modules, 1);

    // Installing the same bytes again is a no-op that says so.
    let (status, again) = base
        .install(&install_request("hello", "1.0.0", HELLO))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["unchanged"], true);
}

#[tokio::test]
async fn upload_with_digest_installs_echo_which_sees_the_request() {
    let base = TestBase::start().await;
    let digest = digest_of(ECHO);
    let (status, body) = base
        .upload(
            &format!("name=echo&version=0.1.0&pathPrefix=/api/echo&digest={digest}"),
            std::fs::read(ECHO).unwrap(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["module"]["route"]["pathPrefix"], "/api/echo");

    let response = base
        .client
        .put(base.url("/api/echo/items/7?color=red"))
        .header("x-custom", "yes")
        .body("the body")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-berth-module"], "echo@0.1.0");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["path"], "/api/echo/items/7?color=red");
    assert_eq!(echoed["body"], "the body");
    let headers = echoed["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "x-custom" && h[1] == "yes"),
        "{headers:?}"
    );
    // The module sees the same request id the client gets back.
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "x-request-id" && h[1] == request_id.as_str())
    );
}

#[tokio::test]
async fn install_from_url_downloads_the_artifact() {
    // The file server is on loopback, which a base fetches from only when told.
    let base = TestBase::start_with(|c| c.artifact_hosts = vec!["127.0.0.1".into()]).await;
    let server = serve_files(vec![(
        "/artifacts/hello.wasm",
        std::fs::read(HELLO).unwrap(),
    )])
    .await;
    let request = InstallRequest {
        artifact: Some(ArtifactSource::Url(format!(
            "http://{server}/artifacts/hello.wasm"
        ))),
        digest: Some(digest_of(HELLO)),
        ..InstallRequest::new("hello", "2.0.0")
    };
    let (status, body) = base.install(&request).await;
    assert_eq!(status, 201, "{body}");
    base.assert_hello_serves().await;
}

#[tokio::test]
async fn hosts_and_prefixes_route_to_the_right_module() {
    let base = TestBase::start().await;
    base.install_path("hello", "1.0.0", HELLO).await;
    let mut by_host = install_request("echo", "1.0.0", ECHO);
    by_host.route = Some(Route {
        host: Some("api.example".into()),
        path_prefix: Some("/hello".into()),
    });
    let (status, body) = base.install(&by_host).await;
    assert_eq!(status, 201, "{body}");

    // Same path, other host: hello. Same path with the echo host: echo.
    base.assert_hello_serves().await;
    let response = base
        .client
        .get(base.url("/hello/x"))
        .header("host", "API.example:9999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-berth-module"], "echo@1.0.0");
    // Prefixes match whole segments only.
    assert_eq!(base.get("/helloworld").await.0, 404);
    assert_eq!(base.get("/hello/deeper/path").await.0, 200);
}

#[tokio::test]
async fn a_new_version_takes_over_and_uninstalling_it_brings_back_the_old() {
    let base = TestBase::start().await;
    base.install_path("greeter", "1.0.0", HELLO).await;
    base.install_path("greeter", "2.0.0", ECHO).await;
    let list = base.list().await;
    let state = |v: &str| list.modules.iter().find(|m| m.version == v).unwrap().state;
    assert_eq!(state("1.0.0"), ModuleState::Inactive);
    assert_eq!(state("2.0.0"), ModuleState::Active);
    let (_, headers, _) = base.get("/greeter").await;
    assert_eq!(headers["x-berth-module"], "greeter@2.0.0");

    let response = base
        .client
        .delete(base.ops("/v1/modules/greeter/versions/2.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, headers, body) = base.get("/greeter").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-berth-module"], "greeter@1.0.0");
    assert_eq!(body, "Hello from berth!\n");

    // Uninstalling the module removes every version and its route.
    let (status, removed) = base.ops_delete("/v1/modules/greeter").await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["removed"].as_array().unwrap().len(), 1);
    assert_eq!(base.get("/greeter").await.0, 404);
    assert!(base.list().await.modules.is_empty());
}

#[tokio::test]
async fn reinstalling_uninstalled_bytes_hits_the_compile_cache() {
    let base = TestBase::start().await;
    let first = base.install_path("hello", "1.0.0", HELLO).await;
    assert_eq!(first["module"]["compileCache"], "miss");
    // Its code reaches the cache in the background, after the answer.
    base.wait_for_cached_code(first["module"]["digest"].as_str().unwrap())
        .await;
    let (status, body) = base.ops_delete("/v1/modules/hello").await;
    assert_eq!(status, 200, "{body}");
    let second = base.install_path("hello", "1.0.0", HELLO).await;
    assert_eq!(second["module"]["compileCache"], "hit");
    base.assert_hello_serves().await;
}
